"""Facts about the machine rbench runs on, for provenance and file names."""

from __future__ import annotations

import platform
from functools import cache


@cache
def cpu_name() -> str:
    """The CPU's model name (`AMD EPYC 9654 96-Core Processor`), or the best the platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
