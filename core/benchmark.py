"""Inference throughput, and MACs / activations counted on the meta device."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from .backends import BackendStack
from .models import architecture, create_model, param_count


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """How long to measure: warm-up steps, then at least `steps` steps and `seconds` seconds."""

    batch_size: int = 256
    warmup_steps: int = 10
    steps: int = 40
    seconds: float = 5.0


def input_size(model, img_size: int | None) -> tuple[int, int, int]:
    """The model's eval input size (its test size where it has one), or `img_size` square."""
    from .data import eval_data_config

    return tuple(eval_data_config(model, img_size)["input_size"])  # type: ignore[return-value]


def time_steps(step, stack: BackendStack, settings: BenchSettings, on_step=lambda: None) -> list[float]:
    """Run `step` through warm-up, then time it; returns step times in milliseconds."""
    for _ in range(settings.warmup_steps):
        step()
        on_step()
    stack.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < settings.steps or time.perf_counter() - start < settings.seconds:
        t0 = time.perf_counter()
        step()
        stack.synchronize()
        times.append((time.perf_counter() - t0) * 1000.0)
        on_step()
    return times


def infer_benchmark(name: str, stack: BackendStack, settings: BenchSettings, img_size: int | None = None,
                    on_step=lambda: None) -> dict[str, Any]:
    """One inference benchmark row (full precision) for a randomly initialised `name`."""
    import torch

    arch = architecture(name)
    model = create_model(arch, "random", device=stack.device)
    size = input_size(model, img_size)
    model = stack.prepare_model(model)
    batch = stack.prepare_input(torch.randn(settings.batch_size, *size, device=stack.device))

    def step():
        model(batch)

    with torch.inference_mode(), stack.autocast():
        times = time_steps(step, stack, settings, on_step)
    median = statistics.median(times)
    macs, acts = count_macs(arch, size)
    return {
        "model": arch,
        "infer_img_size": size[-1],
        "infer_samples_per_sec": settings.batch_size / (median / 1000.0),
        "infer_step_time": median,
        "infer_batch_size": settings.batch_size,
        "param_count": param_count(model),
        "infer_gmacs": macs,
        "infer_macts": acts,
    }


def count_macs(arch: str, size: tuple[int, int, int]) -> tuple[float | None, float | None]:
    """GMACs and activations (millions) for one image, counted on the meta device.

    MACs are FLOPs / 2 of the convolutions and matmuls; activations are the output elements of
    those same ops. Returns `(None, None)` for a model that cannot be built on the meta device.
    """
    import timm
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    counted_ops = {
        torch.ops.aten.convolution.default,
        torch.ops.aten.mm.default,
        torch.ops.aten.addmm.default,
        torch.ops.aten.bmm.default,
        torch.ops.aten.baddbmm.default,
    }

    class ActivationCounter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in counted_ops:
                ActivationCounter.total += out.numel()
            return out

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False).eval()
            x = torch.empty(1, *size)
        flops = FlopCounterMode(display=False)
        with torch.no_grad(), flops, ActivationCounter():
            model(x)
    except Exception:  # some architectures cannot run without real data; their counts stay empty
        return None, None
    return flops.get_total_flops() / 2 / 1e9, ActivationCounter.total / 1e6
