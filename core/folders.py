"""Reading an image folder laid out as one subfolder per class, and the files of a source."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders digit runs numerically ("9" before "10"), as timm's folders do."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def list_class_folders(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class folder names (natural sort) and `(path, class index)` samples under `root`.

    Files in each class folder are sorted by name, so the order is the same on every machine.
    Raises `DataError` when `root` is missing or holds no class folder with images.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"data folder {root} is a file, not a folder; pass a folder of class subfolders with "
                        "--data-dir, --data-root or --data NAME=PATH")
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass the right folder with --data-root or --data NAME=PATH")
    classes = sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        files = sorted(
            f.name for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
        )
        samples.extend((str(root / name / f), index) for f in files)
    if not samples:
        raise DataError(
            f"{root} has no class subfolders with images ({', '.join(IMAGE_EXTENSIONS)}); "
            "an image folder needs one subfolder per class"
        )
    return classes, samples


def file_stats(paths: Iterable[str]) -> dict[str, os.stat_result | None]:
    """Each distinct path's `os.stat` (None when it cannot be read), stat'ed once however often
    it is listed (ImageNet-C lists each file once per corruption and severity)."""
    stats: dict[str, os.stat_result | None] = {}
    for path in paths:
        if path not in stats:
            try:
                stats[path] = os.stat(path)
            except OSError:
                stats[path] = None
    return stats
