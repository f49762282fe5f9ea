"""Facts about the machine rbench runs on, for provenance and file names."""

from __future__ import annotations

import platform
import re
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


# Words that name the vendor or product line, not the chip: "Intel(R) Core(TM) i7-12700H" -> i7_12700h.
_NOISE = {"intel", "amd", "core", "cpu", "processor", "with", "radeon", "graphics", "apple"}


def short_cpu_name(model_name: str) -> str:
    """A short lowercase CPU name for file names, as timm's tables use (`i7_12700h`, `epyc_9654`)."""
    text = re.sub(r"\(.*?\)|@.*$|\d+-core", " ", model_name.lower())
    words = [w for w in re.split(r"[\s_]+", text) if w and w not in _NOISE]
    return re.sub(r"[^a-z0-9]+", "_", "_".join(words)).strip("_") or "unknown"


def cpu_tag() -> str:
    """This CPU in benchmark file names: `cpu-<short cpu name>` (`cpu-epyc_9654`)."""
    return f"cpu-{short_cpu_name(cpu_name())}"
