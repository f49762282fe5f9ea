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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


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
        self.records_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.records_dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, default=str)
            os.replace(tmp, self.records_dir / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return record

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
