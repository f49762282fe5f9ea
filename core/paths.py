"""Where rbench keeps what it generates between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """rbench's cache folder: `$RBENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/rbench` or `~/.cache/rbench`."""
    if os.environ.get("RBENCH_CACHE_DIR"):
        return Path(os.environ["RBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rbench"
