"""The CPU backend: fp32 on the host processor."""

from __future__ import annotations

import platform
import re
from functools import cache

import rbench

# Words that name the vendor or product line, not the chip: "Intel(R) Core(TM) i7-12700H" -> i7_12700h.
_NOISE = {"intel", "amd", "core", "cpu", "processor", "with", "radeon", "graphics", "apple"}


def short_cpu_name(model_name: str) -> str:
    """A short lowercase CPU name for file names, as timm's tables use (`i7_12700h`, `epyc_9654`)."""
    text = re.sub(r"\(.*?\)|@.*$|\d+-core", " ", model_name.lower())
    words = [w for w in re.split(r"[\s_]+", text) if w and w not in _NOISE]
    return re.sub(r"[^a-z0-9]+", "_", "_".join(words)).strip("_") or "unknown"


@cache
def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_tag() -> str:
    return f"cpu-{short_cpu_name(_cpu_model_name())}"


def _to_cpu(x):
    return x.to("cpu")


@rbench.hookimpl
def rbench_backends():
    return [
        rbench.BackendSpec(
            name="cpu",
            description="CPU, fp32",
            device="cpu",
            precision="fp32",
            priority=0,
            device_tag=_device_tag,
            prepare_model=_to_cpu,
            prepare_input=_to_cpu,
        )
    ]
