"""The store: one JSON record per finished cell, written atomically the moment it finishes.

A record holds the cell's identity (`cell`), its key (a hash of that identity), and its
`entries`: full-precision rows, each tagged with the table it belongs to. Reports are
rebuilt from the records at any time (`rbench report --store DIR`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Temp file and rename: a reader sees the old file or the new one, never half of one, and
    two writers of one key leave one whole record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cell_key(cell: Mapping[str, Any]) -> str:
    """A short stable hash of everything that identifies a cell."""
    canonical = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


class Store:
    """A folder of cell records (`records/<key>.json`)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"

    def put(self, cell: Mapping[str, Any], entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Write the record of a finished cell atomically (temp file, then rename) and return it."""
        key = cell_key(cell)
        record = {"version": RECORD_VERSION, "key": key, "cell": dict(cell), "entries": entries, **extra}
        _write_json(self.records_dir / f"{key}.json", record)
        return record

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of `key`, or None when there is none (or it is not a valid record)."""
        try:
            record = json.loads((self.records_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("version") == RECORD_VERSION else None

    def load(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """`{key: record}` for the keys that have a record."""
        found = {}
        for key in keys:
            record = self.get(key)
            if record is not None:
                found[key] = record
        return found

    def put_grid(self, cells: list[Any], command: str) -> None:
        """Remember a grid's cells (`grids/<hash>.json`), so `rbench status` can tell what is pending."""
        keys = [c.key for c in cells]
        grid = {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cells": [{"key": c.key, "label": c.label} for c in cells]}
        _write_json(self.root / "grids" / f"{cell_key({'keys': keys})}.json", grid)

    def grids(self) -> list[dict[str, Any]]:
        """The grids run on this store, oldest first."""
        found = []
        for path in sorted((self.root / "grids").glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda g: g.get("created", ""))

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in key order; a file that is not a valid record is skipped."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("version") == RECORD_VERSION:
                yield record
