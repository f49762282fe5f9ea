"""CPU backends: fp32, and bf16 autocast, on the host processor."""

from __future__ import annotations

import re

import rbench

# Words that name the vendor or product line, not the chip: "Intel(R) Core(TM) i7-12700H" -> i7_12700h.
_NOISE = {"intel", "amd", "core", "cpu", "processor", "with", "radeon", "graphics", "apple"}


def short_cpu_name(model_name: str) -> str:
    """A short lowercase CPU name for file names, as timm's tables use (`i7_12700h`, `epyc_9654`)."""
    text = re.sub(r"\(.*?\)|@.*$|\d+-core", " ", model_name.lower())
    words = [w for w in re.split(r"[\s_]+", text) if w and w not in _NOISE]
    return re.sub(r"[^a-z0-9]+", "_", "_".join(words)).strip("_") or "unknown"


def _device_tag() -> str:
    return f"cpu-{short_cpu_name(rbench.cpu_name())}"


def _to_cpu(x):
    return x.to("cpu")


def _bf16_autocast():
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def _is_out_of_memory(exc: BaseException) -> bool:
    # The CPU allocator says "can't allocate memory" where CUDA says "out of memory".
    return rbench.default_is_out_of_memory(exc) or "can't allocate memory" in str(exc)


def _cpu_backend(name: str, description: str, precision: str, priority: int, **kwargs) -> rbench.BackendSpec:
    return rbench.BackendSpec(
        name=name,
        description=description,
        device="cpu",
        precision=precision,
        priority=priority,
        device_tag=_device_tag,
        prepare_model=_to_cpu,
        prepare_input=_to_cpu,
        is_out_of_memory=_is_out_of_memory,
        **kwargs,
    )


@rbench.hookimpl
def rbench_backends():
    return [
        _cpu_backend("cpu", "CPU, fp32", "fp32", 0),
        # Below plain cpu: bf16 autocast is only fast on CPUs with bf16 instructions (AMX, AVX512-BF16).
        _cpu_backend("cpu-amp-bf16", "CPU, bf16 autocast", "amp_bf16", -10, autocast=_bf16_autocast),
    ]
