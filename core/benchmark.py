"""Throughput benchmarks (inference and train), and parameters, MACs and activations counted on
the meta device.

The method is that of `spec/benchmarking.md`: a random model and a random batch on the
stack's device; a first call (compilation, lazy initialisation, autotuning) timed on its own;
warm-up steps until step times settle; then at least `steps` steps and `seconds` seconds timed
by the stack's `StepTimer`; the median step time makes samples/s, p10/p50/p90 show the spread.
A batch that does not fit backs off along timm's ladder (256, 192, 128, 96, 64, ...); any other
error ends the benchmark as a failed row. Everything device-specific (timer, peak memory,
what out-of-memory looks like, cleanup) comes from the backend stack.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends import BackendStack
from .errors import RbenchError
from .models import architecture, create_model

BENCH_KINDS = ("infer", "train")


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """How to measure: the batch asked for, warm-up steps, then at least `steps` steps and
    `seconds` seconds; `retry` backs off to smaller batches when a batch does not fit."""

    batch_size: int = 256
    warmup_steps: int = 10
    steps: int = 40
    seconds: float = 5.0
    retry: bool = True


@dataclass(frozen=True)
class Measurement:
    """Step times (ms) of the timed steps; the first call's seconds when the stack compiles; peak bytes."""

    times_ms: list[float]
    compile_s: float | None
    peak_bytes: int | None


@dataclass(frozen=True)
class ModelCounts:
    """What the meta device tells about a model at its benchmark input size; None where it cannot."""

    input_size: tuple[int, int, int] | None = None
    param_count: float | None = None  # millions
    gmacs: float | None = None  # one image
    macts: float | None = None  # one image, millions


def input_size(model, img_size: int | None) -> tuple[int, int, int]:
    """The model's eval input size (its test size where it has one), or `img_size` square."""
    from .data import eval_data_config

    return tuple(eval_data_config(model, img_size)["input_size"])  # type: ignore[return-value]


def backoff_batches(asked: int) -> list[int]:
    """`asked`, then every smaller size on timm's ladder of powers of two and 1.5x powers of two:
    `backoff_batches(256)` is 256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1."""
    sizes: set[int] = set()
    power = 1
    while power < asked:
        sizes.update(s for s in (power, 3 * power) if s < asked)
        power *= 2
    return [asked, *sorted(sizes, reverse=True)]


def warm_up(step: Callable[[], None], stack: BackendStack, steps: int, on_step: Callable[[], None]) -> None:
    """`steps` warm-up steps; then, when there were at least three, up to as many more until the
    last three step times agree within 10% (a clock boost, a cache or an autotuner settling)."""
    recent: list[float] = []
    for i in range(2 * steps):
        start = time.perf_counter()
        step()
        stack.synchronize()
        recent.append(time.perf_counter() - start)
        on_step()
        last = recent[-3:]
        if i + 1 >= steps and (len(last) < 3 or max(last) <= 1.1 * min(last)):
            return


def measure(step: Callable[[], None], stack: BackendStack, settings: BenchSettings,
            on_step: Callable[[], None] = lambda: None) -> Measurement:
    """Time `step` as the method says; the stack's peak memory counter must be reset before.

    The first call is the first warm-up step; it is always made, even with no warm-up asked.
    """
    # The first call compiles (torch.compile), initialises lazily and autotunes: it never
    # counts as a step, and is reported as the compile time when the stack compiles.
    start = time.perf_counter()
    step()
    stack.synchronize()
    first_call_s = time.perf_counter() - start
    on_step()
    warm_up(step, stack, settings.warmup_steps - 1, on_step)
    timer = stack.timer()
    count, start = 0, time.perf_counter()
    while count < settings.steps or time.perf_counter() - start < settings.seconds:
        timer.start()
        step()
        timer.stop()
        count += 1
        on_step()
    times = timer.times_ms()  # waits for the device
    return Measurement(times, first_call_s if stack.compiles else None, stack.peak_memory())


def _infer(model, batch, stack: BackendStack, settings: BenchSettings, on_step) -> Measurement:
    import torch

    model.eval()

    def step():
        model(batch)

    with torch.inference_mode(), stack.autocast():
        return measure(step, stack, settings, on_step)


def _train(model, batch, stack: BackendStack, settings: BenchSettings, on_step, num_classes: int) -> Measurement:
    import torch

    model.train()
    # timm's benchmark optimizer: SGD with Nesterov momentum 0.9, lr 1e-4, no weight decay.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    target = torch.randint(0, num_classes, (batch.shape[0],), device=stack.device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with stack.autocast():
            output = model(batch)
            if isinstance(output, tuple):  # distilled models return (logits, distilled logits) in train mode
                output = output[0]
            loss = loss_fn(output, target)
        loss.backward()
        optimizer.step()

    return measure(step, stack, settings, on_step)


def _attempt(kind: str, name: str, stack: BackendStack, settings: BenchSettings, batch_size: int,
             size: tuple[int, int, int] | None, img_size: int | None, on_step) -> tuple[Measurement, tuple, float]:
    """One benchmark at one batch size: `(measurement, input size, parameters in millions)`."""
    import torch

    stack.reset_peak_memory()
    # Created on the target device directly: no CPU copy, no transfer.
    model = create_model(name, "random", device=stack.device)
    size = size or input_size(model, img_size)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    num_classes = model.num_classes
    model = stack.prepare_model(model)
    batch = stack.prepare_input(torch.randn(batch_size, *size, device=stack.device))
    if kind == "infer":
        result = _infer(model, batch, stack, settings, on_step)
    else:
        result = _train(model, batch, stack, settings, on_step, num_classes)
    return result, size, params


def release(stack: BackendStack) -> None:
    """Free what the last model left: Python's garbage first (it holds device tensors), then
    each member's cleanup (compiled graphs, the allocator's cache)."""
    gc.collect()
    stack.cleanup()


def _one_line(exc: BaseException) -> str:
    """The whole error on one line (its hint is often at the end): whitespace collapsed, nothing cut."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def run_benchmark(kind: str, name: str, stack: BackendStack, settings: BenchSettings, img_size: int | None = None,
                  on_step: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """One row (full precision) of `kind` (`infer` or `train`) for a randomly initialised `name`.

    Out of memory retries with the next smaller batch (unless `settings.retry` is off); any
    other error, or running out of batch sizes, gives a row with status `failed` and the error.
    An `RbenchError` (something the user must fix) is raised.
    """
    counts = model_counts(name, img_size)
    batches = backoff_batches(settings.batch_size) if settings.retry else [settings.batch_size]
    for batch_size in batches:
        try:
            result, size, params = _attempt(kind, name, stack, settings, batch_size, counts.input_size, img_size, on_step)
        except RbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of one model becomes its row, not a crash
            error, out_of_memory = f"batch {batch_size}: {_one_line(exc)}", stack.is_out_of_memory(exc)
        else:
            release(stack)
            return _row(kind, name, stack, settings, counts, batch_size=batch_size, result=result, size=size, params=params)
        release(stack)  # after the except block, so the traceback's frames (and tensors) are gone
        if not out_of_memory:
            break
    return _row(kind, name, stack, settings, counts, error=error)


def _row(kind: str, name: str, stack: BackendStack, settings: BenchSettings, counts: ModelCounts, *,
         batch_size: int | None = None, result: Measurement | None = None, size: tuple | None = None,
         params: float | None = None, error: str | None = None) -> dict[str, Any]:
    """A benchmark row at full precision: the spec's columns, then the detailed ones."""
    times = result.times_ms if result else []
    median = statistics.median(times) if times else None
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    size = size or counts.input_size
    row: dict[str, Any] = {
        "model": architecture(name),
        f"{kind}_img_size": size[-1] if size else None,
        f"{kind}_samples_per_sec": batch_size / (median / 1000.0) if batch_size and median else None,
        f"{kind}_step_time": median,
        f"{kind}_batch_size": batch_size,
        "param_count": params if params is not None else counts.param_count,
        "batch_asked": settings.batch_size,
        "status": "failed" if result is None else "ok" if batch_size == settings.batch_size else "backoff",
        "step_time_p10": deciles[0] if deciles else None,
        "step_time_p50": median,
        "step_time_p90": deciles[8] if deciles else None,
        "steps": len(times) or None,
        "peak_memory_mib": result.peak_bytes / 2**20 if result and result.peak_bytes is not None else None,
        "compile_s": result.compile_s if result else None,
        "backend": stack.name,
        "error": error,
    }
    if kind == "infer":
        row["infer_gmacs"], row["infer_macts"] = counts.gmacs, counts.macts
    return row


@functools.lru_cache(maxsize=256)
def model_counts(name: str, img_size: int | None = None) -> ModelCounts:
    """Input size, parameters, GMACs and activations of `name`, from a model on the meta device
    (no weights, no memory). Everything is None for a model that cannot be built there; the
    MACs and activations alone for one that cannot run there."""
    from .metadevice import count_forward, meta_model

    try:
        model = meta_model(name)
    except Exception:  # noqa: BLE001 - some architectures need real tensors to be built
        return ModelCounts()
    size = input_size(model, img_size)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    try:
        macs, activations = count_forward(model, size)
    except Exception:  # noqa: BLE001 - some models need real data (data-dependent shapes)
        return ModelCounts(size, params)
    return ModelCounts(size, params, macs / 1e9, activations / 1e6)


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
    except Exception as exc:  # noqa: BLE001 - some architectures need real tensors to be built
        return MetaCounts(error=f"cannot build on the meta device: {_meta_error(exc)}")
    macs, errors = {}, []
    for size in map(tuple, sizes):
        try:
            mac_count, activations = count_forward(model, size)
        except Exception as exc:  # noqa: BLE001 - some models need real data (data-dependent shapes)
            errors.append(f"cannot run on the meta device at {'x'.join(map(str, size))}: {_meta_error(exc)}")
            continue
        macs[size] = (mac_count / 1e9, activations / 1e6)
    return MetaCounts(param_count=sum(p.numel() for p in model.parameters()) / 1e6, macs=macs,
                      error="; ".join(errors) or None)


def _meta_error(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
