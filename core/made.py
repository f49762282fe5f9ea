"""Folders that rbench made, and the proof of it: a marker file inside each.

A cache folder may be shared, or be a folder that holds other things (`--cache-dir ~`), so
rbench lists and removes only what it can prove it made. Each folder it makes for later runs
(a decoded-input cache entry, a data set's build such as ImageNet-C's JPEGs) gets a marker,
`.rbench-made.json`: what made it and the name patterns of the files it writes there. Removing
such a folder deletes only the regular files that match those patterns (never through a link),
then the folders left empty; anything else stays where it is.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

MARKER = ".rbench-made.json"


def mark(folder: Path, kind: str, files: Sequence[str], **about: Any) -> None:
    """Mark `folder` as made by rbench: `kind` says what it is, `files` are the name patterns
    (fnmatch, on file names) of every file rbench writes in it or its subfolders."""
    from .files import write_json

    marker = {"made_by": "rbench", "kind": kind, "files": list(files), **about}
    if read_mark(folder) != marker:  # a build shared read-only is marked already
        write_json(Path(folder) / MARKER, marker)


def read_mark(folder: Path) -> dict[str, Any] | None:
    """The marker of `folder`, or None when `folder` is not a folder (a link counts as none) or
    holds no readable marker of rbench's."""
    folder = Path(folder)
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode) or not stat.S_ISREG(os.lstat(folder / MARKER).st_mode):
            return None
        found = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(found, dict) and found.get("made_by") == "rbench" and isinstance(found.get("kind"), str)
            and isinstance(found.get("files"), list) and all(isinstance(p, str) for p in found["files"])):
        return None
    return found


def is_real_folder(path: Path) -> bool:
    """Whether `path` is a folder itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_file(path: Path) -> bool:
    """Whether `path` is a regular file itself, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def walk(folder: Path) -> Iterator[Path]:
    """Every file and link in `folder` and its subfolders (links are not followed)."""
    for top, dirs, names in os.walk(folder):
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(top, d)))]:
            yield Path(top, name)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a file name matches one of rbench's patterns (the marker always does)."""
    return name == MARKER or any(fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class Contents:
    """What a made folder holds: bytes and files that match its patterns, and the paths of
    everything else (other files, links), which are not rbench's."""

    bytes: int
    files: int
    foreign: tuple[Path, ...]


def contents(folder: Path, patterns: Iterable[str]) -> Contents:
    """What `folder` holds, told apart by `patterns`."""
    patterns = list(patterns)
    size = count = 0
    foreign = []
    for path in walk(folder):
        try:
            info = os.lstat(path)
        except OSError:  # removed meanwhile
            continue
        if stat.S_ISREG(info.st_mode) and matches(path.name, patterns):
            size += info.st_size
            count += 1
        else:
            foreign.append(path)
    return Contents(bytes=size, files=count, foreign=tuple(foreign))


def remove_made(folder: Path, patterns: Iterable[str]) -> list[Path]:
    """Delete the regular files of `folder` that match `patterns` (its marker last), then every
    folder left empty; returns what was left (not rbench's). Links are never followed, nor
    removed."""
    folder, patterns = Path(folder), list(patterns)
    left = []
    for path in walk(folder):
        if not (is_real_file(path) and matches(path.name, patterns)):  # checked file by file, as it is now
            left.append(path)
        elif path != folder / MARKER:  # the marker last: a half-removed folder is still rbench's
            path.unlink(missing_ok=True)
    for top, _, _ in os.walk(folder, topdown=False):
        if Path(top) != folder:
            try:
                os.rmdir(top)
            except OSError:  # holds something that is not rbench's
                pass
    if not left:
        (folder / MARKER).unlink(missing_ok=True)
        try:
            os.rmdir(folder)
        except OSError:  # something appeared meanwhile
            left.append(folder)
    return left


# --- data sets' builds: folders a data set plugin makes once for every later run -------------

BUILD = "data-build"


def mark_build(folder: Path, dataset: str, files: Sequence[str], **about: Any) -> None:
    """Mark `folder` as a build that the data set `dataset` made (ImageNet-C's JPEGs, say), so that
    `rbench cache ls` lists it and `rbench cache clear` may remove it: only its files whose names
    match `files` (fnmatch patterns), in it and its subfolders. Call it before writing them."""
    mark(folder, BUILD, files, dataset=dataset, **about)


@dataclass(frozen=True)
class Build:
    """A data set's build found in rbench's cache folder."""

    path: Path
    dataset: str
    patterns: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name


def builds(root: Path, depth: int = 2) -> list[Build]:
    """The marked data set builds in `root` and its subfolders down to `depth` levels, by path
    (a marked folder is not searched further; links are not followed)."""
    found = []
    level = [Path(root)]
    for _ in range(depth):
        below = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if is_real_folder(p))
            except OSError:
                continue
            for child in children:
                marker = read_mark(child)
                if marker is None:
                    below.append(child)
                elif marker["kind"] == BUILD and isinstance(marker.get("dataset"), str):
                    found.append(Build(path=child, dataset=marker["dataset"], patterns=tuple(marker["files"])))
        level = below
    return sorted(found, key=lambda b: b.path)
