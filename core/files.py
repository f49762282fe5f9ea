"""The one way rbench writes a file: a temporary file beside it, then a rename.

A reader sees the old file or the new one, never half of one; two writers of one path leave
one whole file; a write that fails (a full disk) leaves the old file and no temporary one.
Files get the mode that the umask gives a new file, as `open` would.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write `path` through `write(binary file)`, atomically; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _umask_mode())  # mkstemp makes 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path` atomically (values JSON cannot hold as `str`)."""
    return write_bytes(path, json.dumps(data, indent=1, default=str).encode())
