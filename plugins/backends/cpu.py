"""CPU backends: fp32, and bf16 autocast, on the host processor.

Telemetry is `rbench.cpu_telemetry`: what Linux's sysfs offers (cpufreq, the package
temperature, RAPL energy), else empty columns.
"""

from __future__ import annotations

import rbench


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
        device_tag=rbench.cpu_tag,
        prepare_model=_to_cpu,
        prepare_input=_to_cpu,
        is_out_of_memory=_is_out_of_memory,
        telemetry=rbench.cpu_telemetry,
        **kwargs,
    )


@rbench.hookimpl
def rbench_backends():
    return [
        _cpu_backend("cpu", "CPU, fp32", "fp32", 0, reference=True),  # fp32 on every machine: check-backend's reference
        # Below plain cpu: bf16 autocast is only fast on CPUs with bf16 instructions (AMX, AVX512-BF16).
        _cpu_backend("cpu-amp-bf16", "CPU, bf16 autocast", "amp_bf16", -10, autocast=_bf16_autocast),
    ]
