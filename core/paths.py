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


def timm_info_file(name: str) -> Path:
    """A file of timm's installed `timm/data/_info` folder (ImageNet's class lists and label
    files), found without importing timm (and torch with it)."""
    import importlib.util

    from .errors import DataError

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("timm is not installed; the ImageNet label files come from its wheel: pip install timm")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info" / name
