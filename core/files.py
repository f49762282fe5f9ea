"""The one way rbench writes a file: a temporary file beside it, then a rename.

A reader sees the old file or the new one, never half of one; two writers of one path leave
one whole file; a write that fails (a full disk) leaves the old file and no temporary one, and
its error names the file (a failed write names none by itself).
Files get the mode that the umask gives a new file, as `open` would. And the one way it reads a
text file that a user gives (`read_utf8`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write or flush that found the disk full names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
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


# Errors of the machine, not of rbench: a full disk, a read-only or forbidden folder.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def check_writable_folder(path: Path, what: str, min_free: int = 1 << 20) -> None:
    """Raise a one-line `RbenchError` unless `path` is (or can be made) a folder that this
    process can write to, with at least `min_free` bytes free; `what` names it (`--out`)."""
    from .errors import RbenchError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RbenchError(f"{what} {path} is a file, not a folder; pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = write_bytes(path / f".rbench-write-test-{os.getpid()}", b"rbench")
        probe.unlink()
    except OSError as exc:
        raise RbenchError(f"{what} {path}: cannot write there ({exc.strerror}); pass a folder you can write to") from None
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise RbenchError(f"{what} {path}: the disk is full ({free:,} bytes free); free some space or pass "
                          "another folder")


def read_utf8(path: Path) -> str:
    """The text of a file a user gives (a model list, an imported CSV): UTF-8, with or without a
    byte-order mark. A `ValueError` says which line holds the first byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8") from None
