"""The store: one JSON record per finished cell, written atomically the moment it finishes,
with the predictions file of each validation cell and the listing of each source.

A record is a `record.CellRecord`: the cell (its identity, and its key: a hash of that
identity), its status and provenance, and its `entries` (full-precision benchmark and metadata
rows, each tagged with its table) or, for a validation cell, the name and SHA-256 of its
predictions file. The store reads and writes nothing else as a record. Reports are rebuilt from
the store at any time (`rbench report --store DIR`).

A store may be shared: nothing read from it can run code (records and listings are JSON,
predictions Parquet), and every path a record names is taken inside its folder of the store
or refused.

    records/<key>.json          one per finished cell
    predictions/<key>.parquet   one per validation cell (see `predictions`)
    sources/<name>-<id>-<sha>.json  a source's samples and views, as the plan listed them (`listings`)
    grids/<hash>.json           the cells of each grid run on the store (`rbench status`)
    scores/<name>.json          scores computed from a predictions file, kept for later reports
                                (`get_scores`, `put_scores`; JSON with its own checksum)
    quarantine/                 records and listings that could not be read, set aside (never deleted)
    lock                        held by the `rbench run` that is using the store
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import DataError, one_line
from .files import write_bytes, write_json
from .listings import ListingError, from_data, plugin_package, to_data
from .record import CellRecord, PredictionsFile, RecordError, cell_key

# What to do about a listing that cannot be read: the data folder is listed again by a run.
_RELIST = ("run `rbench run` with the same models and data on this store to list the data again "
           "(it runs only the cells the store lacks)")
FOLDERS = ("records", "predictions", "sources", "grids", "quarantine", "scores")  # the store's folders
SCORE_ENTRY_FORMAT = "rbench-scores-1"
SCORE_ENTRY_MAX_BYTES = 256 << 20  # far above any entry rbench writes; a larger file is not read
_SCORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,240}")  # a file name, never a path


def predictions_file(key: str, frame) -> tuple[PredictionsFile, bytes]:
    """A validation cell's predictions frame as the bytes of its file in a store, with what the
    cell's record says of that file (`Store.put_predictions_file` writes them)."""
    from .predictions import encode

    data = encode(frame)
    return PredictionsFile(file=f"predictions/{key}.parquet", sha256=hashlib.sha256(data).hexdigest(),
                           rows=frame.height), data


def source_of_listing(data: Any, registry, where: str, fix: str):
    """The `Source` of a listing's JSON data (`listings.from_data`); a one-line `ListingError`
    naming `where` the listing came from and saying `fix` when it cannot be used."""
    try:
        return from_data(data, registry)
    except (ValueError, KeyError, TypeError, IndexError, ImportError) as exc:
        raise ListingError(f"{where} cannot be used ({one_line(exc)}); {fix}") from None


class Store:
    """A folder of cell records, predictions and source listings.

    Records that cannot be used are moved to `quarantine/` and described in `problems` (one
    line each): their cells count as not run.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.problems: list[str] = []
        self._legacy: dict[tuple[str, str], str] = {}  # (old listing name, views) -> its JSON listing
        self._scores_usable: bool | None = None  # whether `scores/` may be read and written (not a link)
        self._scores_folder = ""

    # --- records --------------------------------------------------------------------------

    def put(self, record: CellRecord) -> CellRecord:
        """Write the record of a finished cell atomically (temp file, then rename) and return it."""
        write_json(self.records_dir / f"{record.key}.json", record.to_json())
        return record

    def _read(self, path: Path) -> CellRecord | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problem = f"not valid JSON ({type(exc).__name__})"
        else:
            try:
                return CellRecord.from_json(data, path.stem)
            except RecordError as exc:
                problem = str(exc)
        self.quarantine(path, problem)
        return None

    def quarantine(self, path: Path, problem: str, outcome: str = "its cell counts as not run") -> None:
        """Set `path` aside in `quarantine/` (never deleted) and remember why, and what follows."""
        target = self.root / "quarantine" / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            where = f"moved to {target}"
        except OSError as exc:
            where = f"could not be moved aside: {exc.strerror}"
        self.problems.append(f"{path}: {problem}; {where}; {outcome}")

    def get(self, key: str) -> CellRecord | None:
        """The record of `key`, or None when there is none (or it could not be used)."""
        return self._read(self.records_dir / f"{key}.json")

    def load(self, keys: Iterable[str]) -> dict[str, CellRecord]:
        """`{key: record}` for the keys that have a usable record."""
        found = {}
        for key in keys:
            record = self.get(key)
            if record is not None:
                found[key] = record
        return found

    def record_stamps(self, keys: Iterable[str]) -> dict[str, tuple[int, int]]:
        """`{key: (inode, mtime in ns)}` of the record files that exist. A record written again
        is a new file renamed into place, so it has another stamp."""
        stamps = {}
        for key in keys:
            try:
                stat = (self.records_dir / f"{key}.json").stat()
            except OSError:
                continue
            stamps[key] = (stat.st_ino, stat.st_mtime_ns)
        return stamps

    def records(self) -> Iterator[CellRecord]:
        """Every usable record, in key order."""
        self.check()
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            record = self._read(path)
            if record is not None:
                yield record

    # --- predictions and source listings ---------------------------------------------------

    def put_predictions(self, key: str, frame) -> PredictionsFile:
        """Write a validation cell's predictions; returns what its record says of the file."""
        info, data = predictions_file(key, frame)
        self.put_predictions_file(key, info, data)
        return info

    def put_predictions_file(self, key: str, info: PredictionsFile, data: bytes) -> None:
        """Write the predictions file that the record of cell `key` names as `info`, from its
        bytes `data` (made by `predictions_file` elsewhere: on a cluster node that shares no disk
        with this process). `DamagedPredictions` when `data` is not the file `info` names (its
        checksum), or `info` names another file than the cell's own: nothing is written then."""
        from .predictions import DamagedPredictions

        path = self.inside(info.file, "predictions")
        if path is None or info.file != f"predictions/{key}.parquet":
            raise DamagedPredictions(f"the outcome of cell {key} names the predictions file {info.file!r}, not "
                                     f"predictions/{key}.parquet; it is not written")
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise DamagedPredictions(f"the predictions of cell {key} that came back are not the file its record "
                                     "names (checksum); they are not written")
        write_bytes(path, data)

    def inside(self, relative: Any, folder: str) -> Path | None:
        """The file that a record names as `relative` (`<folder>/<file name>`), or None when that
        name is not a file of `folder` in this store (an absolute path, `..`, another folder)."""
        if not isinstance(relative, str) or "\\" in relative:
            return None
        parts = PurePosixPath(relative).parts
        if len(parts) != 2 or parts[0] != folder or parts[1] in (".", ".."):
            return None
        return self.root / folder / parts[1]

    def _predictions_path(self, record: CellRecord) -> Path:
        from .predictions import DamagedPredictions

        path = self.inside(record.predictions.file, "predictions")
        if path is None:
            raise DamagedPredictions(f"the record {record.key} in {self.records_dir} names the predictions file "
                                     f"{record.predictions.file!r}, outside {self.root / 'predictions'}; it is not read")
        return path

    def predictions_stamp(self, record: CellRecord) -> tuple[int, int]:
        """`(size, modification time in ns)` of a validation record's predictions file;
        `DamagedPredictions` when it is missing or named outside `predictions/`."""
        from .predictions import DamagedPredictions

        path = self._predictions_path(record)
        try:
            info = path.stat()
        except OSError as exc:
            raise DamagedPredictions(f"predictions file {path} cannot be read ({exc.strerror})") from None
        return info.st_size, info.st_mtime_ns

    def check_predictions(self, record: CellRecord) -> None:
        """Read a validation record's predictions file whole and check its SHA-256, without
        decoding it; `DamagedPredictions` when it is not the file that was written."""
        from .predictions import verified_bytes

        verified_bytes(self._predictions_path(record), record.predictions.sha256)

    def get_predictions(self, record: CellRecord, label_sets: bool = True):
        """A validation record's predictions frame; `DamagedPredictions` when its file is not whole
        or is named outside `predictions/`. Without `label_sets`, its `V/labels` columns are left
        unread (see `predictions.read`)."""
        from .predictions import read

        info = record.predictions
        return read(self._predictions_path(record), info.sha256, info.rows, label_sets=label_sets)

    def put_source(self, source, identity: str, registry=None) -> str:
        """Keep a listed source (samples, views, transform) as JSON, once; returns its name in the
        store. The name ends with a hash of the content, so a file there that is not that content
        (damaged, or written by someone else) is set aside in `quarantine/` and written anew.
        `registry`: the plugins whose data set made the source (None: a source without callables);
        a `PluginError` for a callable that cannot be kept as data (`listings`)."""
        data = json.dumps(to_data(source, plugin_package(registry, source.name)), sort_keys=True,
                          separators=(",", ":")).encode()
        relative = f"sources/{source.name}-{identity}-{hashlib.sha256(data).hexdigest()[:16]}.json"
        path = self.root / relative
        try:
            held = path.read_bytes()
        except FileNotFoundError:
            held = None
        if held != data:
            if held is not None:
                self.quarantine(path, "not the source listing that its name says", "listed again from the data folder")
            write_bytes(path, data)
        return relative

    def listing_name(self, relative: Any, views: Any = None) -> str:
        """The listing that a record's `source_listing` names. A name of an older rbench
        (`sources/<name>-<id>.pickle`) is never opened: it stands for a JSON listing of the same
        source and identity with the same `views`, once a run has listed that data again.
        A `ListingError` when there is none, or the name is outside `sources/`."""
        path = self.inside(relative, "sources")
        if path is None:
            raise ListingError(f"a record in {self.records_dir} names the source listing {relative!r}, outside "
                               f"{self.root / 'sources'}; it is not read; `rbench run` with the same models "
                               "and data on this store runs its cell again")
        if path.suffix != ".pickle":
            return relative
        memo = (relative, json.dumps(views))
        if memo in self._legacy:
            return self._legacy[memo]
        for candidate in sorted(path.parent.glob(f"{path.stem}-*.json")):
            try:
                listed = json.loads(candidate.read_bytes())
                if views is None or [v["name"] for v in listed["views"]] == list(views):
                    self._legacy[memo] = f"sources/{candidate.name}"
                    return self._legacy[memo]
            except (OSError, ValueError, KeyError, TypeError):
                continue
        raise ListingError(f"the source listing {path} was written by an older rbench as a pickle, which rbench no "
                           f"longer loads (loading one could run code); {_RELIST}")

    def get_listing(self, relative: str) -> Any:
        """The JSON data of a source listing kept by `put_source`, checked against its name; a
        `ListingError` for one that is missing, damaged or named outside `sources/`."""
        relative = self.listing_name(relative)
        path = self.root / relative
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ListingError(f"the source listing {path} is missing; {_RELIST}") from None
        except OSError as exc:
            raise ListingError(f"the source listing {path} cannot be read ({exc.strerror}); {_RELIST}") from None
        if not path.stem.endswith(f"-{hashlib.sha256(data).hexdigest()[:16]}"):
            raise ListingError(f"the source listing {path} is damaged (not the content its name says); {_RELIST}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ListingError(f"the source listing {path} cannot be used ({one_line(exc)}); {_RELIST}") from None

    # --- score entries --------------------------------------------------------------------

    def _score_path(self, name: str) -> str | None:
        """`scores/<name>.json`, or None when `name` is not a plain file name or `scores/` is a link
        (then rbench neither reads nor writes there, and says so once in `problems`)."""
        if not _SCORE_NAME.fullmatch(name):
            return None
        if self._scores_usable is None:
            folder = self.root / "scores"
            self._scores_usable = not os.path.islink(folder)
            self._scores_folder = f"{folder}{os.sep}"  # joined as text: a report reads thousands
            if not self._scores_usable:
                self.problems.append(f"{folder} is a link; rbench neither reads nor writes score entries through it "
                                     "(every report scores the predictions files again)")
        return f"{self._scores_folder}{name}.json" if self._scores_usable else None

    def get_scores(self, name: str) -> dict[str, Any] | None:
        """The content of the score entry `name` (`scores/<name>.json`), checked against the
        checksum it carries; None when there is none. An entry that is not whole as rbench wrote
        it (damaged, changed, a link, not a plain file) is set aside in `quarantine/` and None
        is returned: the caller computes the scores again. Reading one runs no code (JSON)."""
        import stat

        path = self._score_path(name)
        if path is None:
            return None
        flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError:  # a link (ELOOP), or a file this process may not read
            if os.path.islink(path):
                self.quarantine(Path(path), "a link, not a score entry", "its scores are computed again")
            return None
        with open(fd, "rb", closefd=True) as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > SCORE_ENTRY_MAX_BYTES:
                problem = "not a plain file" if not stat.S_ISREG(info.st_mode) else "larger than any score entry"
                content = None
            else:
                content, problem = _score_content(f.read())
        if content is None:
            self.quarantine(Path(path), f"not a score entry as rbench wrote it ({problem})",
                            "its scores are computed again")
        return content

    def put_scores(self, name: str, content: dict[str, Any]) -> bool:
        """Keep `content` (JSON values) as the score entry `name`, atomically, with its checksum;
        False when it cannot be written there (a store this process may only read)."""
        path = self._score_path(name)
        if path is None:
            return False
        text = _canonical(content)
        try:
            write_bytes(Path(path), b'{"checksum":"%s","content":%s,"format":"%s"}'
                        % (hashlib.sha256(text).hexdigest().encode(), text, SCORE_ENTRY_FORMAT.encode()))
        except OSError:
            return False
        return True

    def get_source(self, relative: str, registry=None):
        """A source listing kept by `put_source` (its callables rebuilt from the data set plugins
        of `registry`; None: a listing without callables); a `ListingError` for one that is
        missing, damaged, named outside `sources/`, or that cannot be rebuilt."""
        return source_of_listing(self.get_listing(relative), registry,
                                 f"the source listing {self.root / self.listing_name(relative)}", _RELIST)

    # --- one run at a time ------------------------------------------------------------------

    def check(self) -> None:
        """Raise a one-line `DataError` when a folder of the store is something else (a file), or
        its lock is not a plain file of its own (see `_open_lock`)."""
        import stat

        for name in FOLDERS:
            path = self.root / name
            if os.path.lexists(path) and not path.is_dir():
                raise DataError(f"the store {self.root} has {path}, which is not a folder; it holds the store's "
                                f"{name}: move it away (or pass another --store) and run again")
        try:
            info = os.lstat(self.root / "lock")
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise self._foreign_lock()

    def _foreign_lock(self) -> DataError:
        return DataError(f"the store's lock {self.root / 'lock'} is not a plain file of its own (a link, a folder, a "
                         "pipe, or a second name of another file); rbench leaves it alone: remove it (or pass another "
                         "--store) and run again")

    def _open_lock(self) -> int:
        """The lock file's descriptor: opened without following a link and without truncating,
        and only when it is a regular file with no other name, so that a link planted in a
        shared store cannot make the lock write into (or empty) a file elsewhere."""
        import errno
        import stat

        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.root / "lock", flags, 0o666)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK, errno.EOPNOTSUPP):
                raise self._foreign_lock() from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise self._foreign_lock()
        os.set_blocking(fd, True)
        return fd

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[str], None] = lambda message: None):
        """Hold the store's lock for one run; while another live run holds it, say so through
        `on_wait` and wait (its cells are then found done, never run twice). The lock is the
        kernel's (flock): it is released when its holder exits, however it exits. A lock that is
        not a plain file of the store's own (a link, a folder), or a store folder that is a file,
        is a one-line `DataError` (see `check`)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        self.check()
        with open(self._open_lock(), "r+", closefd=True) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                on_wait(f"the store {self.root} is in use by another rbench run ({holder}); waiting for it to "
                        "finish, then running what it left")
                fcntl.flock(f, fcntl.LOCK_EX)
            # The lock's own text (who holds it): the file is the store's, checked above.
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:200]}\n")
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- grids -----------------------------------------------------------------------------

    def put_grid(self, cells: list[Any], command: str) -> None:
        """Remember a grid's cells (`grids/<hash>.json`), so `rbench status` can tell what is pending."""
        keys = [c.key for c in cells]
        grid = {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cells": [{"key": c.key, "label": c.label} for c in cells]}
        write_json(self.root / "grids" / f"{cell_key({'keys': keys})}.json", grid)

    def grids(self) -> list[dict[str, Any]]:
        """The grids run on this store, oldest first; an unreadable grid file is named in `problems`."""
        found = []
        for path in sorted((self.root / "grids").glob("*.json")):
            try:
                grid = json.loads(path.read_text())
                if not isinstance(grid, dict) or not isinstance(grid.get("cells"), list):
                    raise ValueError("not a grid")
            except (OSError, ValueError) as exc:
                self.problems.append(f"{path}: not a readable grid file ({type(exc).__name__}); its grid is not shown")
                continue
            found.append(grid)
        return sorted(found, key=lambda g: g.get("created", ""))


def _canonical(content: Any) -> bytes:
    """`content` as canonical JSON (sorted keys, no spaces)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _score_content(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """`(content, "")` of a score entry's bytes, or `(None, what is wrong)`. An entry is
    `{"checksum":"<SHA-256 of the content's text>","content":<text>,"format":"..."}`, as
    `put_scores` writes it: the checksum is checked on the text itself, before it is parsed."""
    head, tail = b'{"checksum":"', b',"format":"%s"}' % SCORE_ENTRY_FORMAT.encode()
    start = len(head) + 64 + len(b'","content":')
    if not (data.startswith(head) and data.endswith(tail) and data[len(head) + 64:start] == b'","content":'):
        return None, "not a score entry"
    text = data[start:len(data) - len(tail)]
    if hashlib.sha256(text).hexdigest().encode() != data[len(head):len(head) + 64]:
        return None, "its checksum does not match its content"
    try:
        content = json.loads(text)
    except ValueError:
        return None, "not JSON"
    if not isinstance(content, dict):
        return None, "not a score entry"
    return content, ""
