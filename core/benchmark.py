"""Inference throughput, and MACs / activations counted on the meta device."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
    return meta_counts(arch, [size]).macs.get(tuple(size), (None, None))


@dataclass(frozen=True)
class MetaCounts:
    """What the meta device tells about one model: its parameters, and its MACs at some input sizes."""

    param_count: float | None = None  # millions; None when the model cannot be built
    macs: dict[tuple[int, ...], tuple[float, float]] = field(default_factory=dict)  # size -> (GMACs, M activations)
    error: str | None = None  # why a count is missing


def meta_counts(name: str, sizes: Iterable[Sequence[int]]) -> MetaCounts:
    """Parameters (millions) and, at each input size (C, H, W), GMACs and activations (millions).

    `name` is built once on the meta device: no memory, no weights. A model that cannot be built
    or run there gives what could be counted and an `error` saying why; this never raises for it.
    """
    from .metadevice import count_forward, meta_model

    try:
        model = meta_model(name)
    except Exception as exc:
        return MetaCounts(error=f"cannot build on the meta device: {_one_line(exc)}")
    macs, errors = {}, []
    for size in map(tuple, sizes):
        try:
            mac_count, activations = count_forward(model, size)
        except Exception as exc:  # some models need real data (data-dependent shapes)
            errors.append(f"cannot run on the meta device at {'x'.join(map(str, size))}: {_one_line(exc)}")
            continue
        macs[size] = (mac_count / 1e9, activations / 1e6)
    return MetaCounts(param_count=param_count(model), macs=macs, error="; ".join(errors) or None)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
