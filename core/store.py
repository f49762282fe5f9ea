"""The store: one JSON record per finished cell, written atomically the moment it finishes,
with the predictions file of each validation cell and the listing of each source.

A record holds the cell's identity (`cell`), its key (a hash of that identity), its status,
and its `entries` (full-precision benchmark and metadata rows, each tagged with its table) or,
for a validation cell, the name and SHA-256 of its predictions file. Reports are rebuilt from
the store at any time (`rbench report --store DIR`).

    records/<key>.json          one per finished cell
    predictions/<key>.parquet   one per validation cell (see `predictions`)
    sources/<id>.pickle         a source's samples and views, as the plan listed them
    grids/<hash>.json           the cells of each grid run on the store (`rbench status`)
    quarantine/                 records that could not be read, set aside (never deleted)
    lock                        held by the `rbench run` that is using the store
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from numbers import Number
from pathlib import Path
from typing import Any

from .errors import DataError, PluginError
from .files import write_bytes, write_json

RECORD_VERSION = 2
TABLES = ("validation", "benchmark", "metadata")


def cell_key(cell: Mapping[str, Any]) -> str:
    """A short stable hash of everything that identifies a cell."""
    canonical = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def record_problem(record: Any, key: str) -> str | None:
    """Why `record` (read from `records/<key>.json`) is not a record this version can use, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("version") != RECORD_VERSION:
        return f"record version {record.get('version')!r}, not {RECORD_VERSION} (written by another rbench)"
    if record.get("key") != key or not isinstance(record.get("cell"), dict):
        return "its key or cell does not match its file name"
    if not isinstance(record.get("status", "ok"), str) or not isinstance(record.get("entries"), list):
        return "'status' or 'entries' has the wrong type"
    for entry in record["entries"]:
        if not isinstance(entry, dict) or entry.get("table") not in TABLES or not isinstance(entry.get("row"), dict):
            return "an entry is not a {table, row} object"
        for column, value in entry["row"].items():
            numeric = column.endswith(("_samples_per_sec", "_step_time", "_batch_size", "param_count", "top1", "top5"))
            if numeric and value is not None and not isinstance(value, Number):
                return f"{column!r} is {value!r}, not a number"
    predictions = record.get("predictions")
    if predictions is not None and not (isinstance(predictions, dict) and isinstance(predictions.get("file"), str)):
        return "'predictions' is not a {file, sha256, rows} object"
    return None


class Store:
    """A folder of cell records, predictions and source listings.

    Records that cannot be used are moved to `quarantine/` and described in `problems` (one
    line each): their cells count as not run.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.problems: list[str] = []

    # --- records --------------------------------------------------------------------------

    def put(self, cell: Mapping[str, Any], entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Write the record of a finished cell atomically (temp file, then rename) and return it."""
        key = cell_key(cell)
        record = {"version": RECORD_VERSION, "key": key, "cell": dict(cell), "entries": entries, **extra}
        write_json(self.records_dir / f"{key}.json", record)
        return record

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problem = f"not valid JSON ({type(exc).__name__})"
        else:
            problem = record_problem(record, path.stem)
            if problem is None:
                return record
        self.quarantine(path, problem)
        return None

    def quarantine(self, path: Path, problem: str) -> None:
        """Set `path` aside in `quarantine/` (never deleted) and remember why."""
        target = self.root / "quarantine" / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            where = f"moved to {target}"
        except OSError as exc:
            where = f"could not be moved aside: {exc.strerror}"
        self.problems.append(f"{path}: {problem}; {where}; its cell counts as not run")

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of `key`, or None when there is none (or it could not be used)."""
        return self._read(self.records_dir / f"{key}.json")

    def load(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
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

    def records(self) -> Iterator[dict[str, Any]]:
        """Every usable record, in key order."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            record = self._read(path)
            if record is not None:
                yield record

    # --- predictions and source listings ---------------------------------------------------

    def put_predictions(self, key: str, frame) -> dict[str, Any]:
        """Write a validation cell's predictions; returns what its record says of the file."""
        from .predictions import write

        relative = f"predictions/{key}.parquet"
        sha256 = write(frame, self.root / relative)
        return {"file": relative, "sha256": sha256, "rows": frame.height}

    def get_predictions(self, record: Mapping[str, Any], label_sets: bool = True):
        """A validation record's predictions frame; `DamagedPredictions` when its file is not whole.
        Without `label_sets`, its `V/labels` columns are left unread (see `predictions.read`)."""
        from .predictions import read

        info = record["predictions"]
        return read(self.root / info["file"], info.get("sha256"), info.get("rows"), label_sets=label_sets)

    def put_source(self, source, identity: str) -> str:
        """Keep a listed source (samples, views, transform) once; returns its name in the store."""
        relative = f"sources/{source.name}-{identity}.pickle"
        if not (self.root / relative).is_file():
            try:
                data = pickle.dumps(source, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise PluginError(f"data set {source.name}: its Source cannot be kept in the store ({exc}); its "
                                  "views' score and its sample_transform must be module-level functions or "
                                  "instances of module-level classes") from None
            write_bytes(self.root / relative, data)
        return relative

    def get_source(self, relative: str):
        """A source listing kept by `put_source`."""
        path = self.root / relative
        try:
            return pickle.loads(path.read_bytes())
        except FileNotFoundError:
            raise DataError(f"the source listing {path} is missing; run the same `rbench run` again to list it anew") from None
        except Exception as exc:  # noqa: BLE001 - a damaged or outdated pickle
            raise DataError(f"the source listing {path} cannot be read ({type(exc).__name__}: {exc}); "
                            "remove it and run the same `rbench run` again") from None

    # --- one run at a time ------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[str], None] = lambda message: None):
        """Hold the store's lock for one run; while another live run holds it, say so through
        `on_wait` and wait (its cells are then found done, never run twice). The lock is the
        kernel's (flock): it is released when its holder exits, however it exits."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                on_wait(f"the store {self.root} is in use by another rbench run ({holder}); waiting for it to "
                        "finish, then running what it left")
                fcntl.flock(f, fcntl.LOCK_EX)
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
