"""Benchmarks (inference and train throughput, batch-1 latency), and parameters, MACs and
activations counted on the meta device.

The method is that of `spec/benchmarking.md`: a random model and a random batch on the
stack's device; a first call (compilation, lazy initialisation, autotuning) timed on its own;
warm-up steps until step times settle; then at least `steps` steps and `seconds` seconds timed
by the stack's `StepTimer`; samples/s and the step time are timm's figures (the samples of the
timed loops over their time, the sum of their steps: batch over the mean step), the median step
makes rbench's robust figure (`samples_per_sec_median`), and p10/p50/p90 show the spread. A timed
loop whose steps add up to less than `SHORT_LOOP_S` is repeated `AUTO_REPEATS` times, so that
the spread between repeats is stated. The latency benchmark issues one query (batch 1) at a time, each waiting for the
last to finish (MLPerf's SingleStream scenario), and reports nearest-rank percentiles. A batch
that does not fit backs off along timm's ladder (256, 192, 128, 96, 64, ...); any other error
ends the benchmark as a failed row. Everything device-specific (timer, peak memory, what
out-of-memory looks like, telemetry, cleanup) comes from the backend stack.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends import BackendStack, BatchFailed, with_backoff
from ..errors import one_line
from .models import architecture, create_model, param_count

BENCH_KINDS = ("infer", "train", "latency")
SHORT_LOOP_S = 3.0  # a timed loop shorter than this says little alone: it is repeated
AUTO_REPEATS = 3
TELEMETRY_EVERY_S = 0.5  # telemetry readings during the timed steps, at most this often
LATENCY_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """How to measure: the batch asked for, warm-up steps, then at least `steps` steps and
    `seconds` seconds; `retry` backs off to smaller batches when a batch does not fit.

    `repeats`: how many times the timed loop runs (None: once, or `AUTO_REPEATS` times when
    the first loop took under `SHORT_LOOP_S`). The latency benchmark times at least
    `latency_queries` queries of `latency_batch_size` images and `latency_seconds` seconds:
    1024 queries as MLPerf's SingleStream minimum, but 10 s instead of its 600 s, so that a
    grid of models stays practical; 1024 queries put about ten above the 99th percentile.
    """

    batch_size: int = 256
    warmup_steps: int = 10
    steps: int = 40
    seconds: float = 5.0
    retry: bool = True
    repeats: int | None = None
    latency_batch_size: int = 1
    latency_queries: int = 1024
    latency_seconds: float = 10.0

    def for_kind(self, kind: str) -> tuple[int, int, float]:
        """`(batch asked, at least these steps, at least these seconds)` of one benchmark kind."""
        if kind == "latency":
            return self.latency_batch_size, self.latency_queries, self.latency_seconds
        return self.batch_size, self.steps, self.seconds

    def expected_steps(self, kind: str) -> int:
        """About how many steps one benchmark of `kind` makes, warm-up included (for a progress bar)."""
        return max(1, self.warmup_steps) + self.for_kind(kind)[1] * (self.repeats or 1)


@dataclass(frozen=True)
class Measurement:
    """The timed steps of one benchmark: every step time (ms) in order, the steps of each repeat
    of the timed loop; the first call's seconds when the stack compiles; peak bytes; and the
    telemetry readings with their host times (s)."""

    times_ms: list[float]
    compile_s: float | None
    peak_bytes: int | None
    repeat_steps: list[int] = field(default_factory=list)
    readings: list[tuple[float, dict]] = field(default_factory=list)


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
            on_step: Callable[[], None] = lambda: None, *, steps: int | None = None, seconds: float | None = None,
            synchronous: bool = False) -> Measurement:
    """Time `step` as the method says; the stack's peak memory counter must be reset before.

    The first call is the first warm-up step; it is always made, even with no warm-up asked.
    `steps` and `seconds` default to the settings'; `synchronous` waits for each step to end
    before the next starts (latency: one query in flight at a time). The stack's telemetry is
    read before, during (every `TELEMETRY_EVERY_S`) and after the timed loops.
    """
    steps = settings.steps if steps is None else steps
    seconds = settings.seconds if seconds is None else seconds
    # The first call compiles (torch.compile), initialises lazily and autotunes: it never
    # counts as a step, and is reported as the compile time when the stack compiles.
    start = time.perf_counter()
    step()
    stack.synchronize()
    first_call_s = time.perf_counter() - start
    on_step()
    warm_up(step, stack, settings.warmup_steps - 1, on_step)
    telemetry = stack.telemetry()
    readings: list[tuple[float, dict]] = []

    def read() -> None:
        if telemetry is not None:
            readings.append((time.perf_counter(), dict(telemetry.read())))

    read()
    times: list[float] = []
    repeat_steps: list[int] = []
    repeats = settings.repeats or 1
    while len(repeat_steps) < repeats:
        timer = stack.timer()
        count, start = 0, time.perf_counter()
        last_read = start
        while count < steps or time.perf_counter() - start < seconds:
            timer.start()
            step()
            timer.stop()
            if synchronous:
                stack.synchronize()
            count += 1
            on_step()
            if telemetry is not None and time.perf_counter() - last_read >= TELEMETRY_EVERY_S:
                read()
                last_read = readings[-1][0]
        loop_ms = timer.times_ms()  # waits for the device
        times.extend(loop_ms)
        repeat_steps.append(count)
        # The loop's length as its steps measured it (the stack's timer, scriptable in tests), not
        # the host's clock, which a busy machine stretches.
        if settings.repeats is None and len(repeat_steps) == 1 and sum(loop_ms) < SHORT_LOOP_S * 1000.0:
            repeats = AUTO_REPEATS
    read()
    return Measurement(times, first_call_s if stack.compiles else None, stack.peak_memory(), repeat_steps, readings)


def _infer(model, batch, stack: BackendStack, settings: BenchSettings, on_step, latency: bool = False) -> Measurement:
    import torch

    model.eval()

    def step():
        model(batch)

    _, steps, seconds = settings.for_kind("latency" if latency else "infer")
    with torch.inference_mode(), stack.autocast():
        return measure(step, stack, settings, on_step, steps=steps, seconds=seconds, synchronous=latency)


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
    params = param_count(model)
    num_classes = model.num_classes
    model = stack.prepare_model(model)
    batch = stack.prepare_input(torch.randn(batch_size, *size, device=stack.device))
    if kind in ("infer", "latency"):
        result = _infer(model, batch, stack, settings, on_step, latency=kind == "latency")
    else:
        result = _train(model, batch, stack, settings, on_step, num_classes)
    return result, size, params


def run_benchmark(kind: str, name: str, stack: BackendStack, settings: BenchSettings, img_size: int | None = None,
                  on_step: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """One row (full precision) of `kind` (`infer`, `train`, `latency`) for a randomly initialised `name`.

    Out of memory retries with the next smaller batch (unless `settings.retry` is off); any
    other error, or running out of batch sizes, gives a row with status `failed` and the error.
    An `RbenchError` (something the user must fix) is raised.
    """
    counts = model_counts(name, img_size)
    try:
        (result, size, params), batch_size = with_backoff(
            lambda batch: _attempt(kind, name, stack, settings, batch, counts.input_size, img_size, on_step),
            settings.for_kind(kind)[0], stack, retry=settings.retry)
    except BatchFailed as exc:  # every failure of one model becomes its row, not a crash
        return _row(kind, name, stack, settings, counts, error=f"batch {exc.batch_size}: {one_line(exc.error)}")
    return _row(kind, name, stack, settings, counts, batch_size=batch_size, result=result, size=size, params=params)


def _row(kind: str, name: str, stack: BackendStack, settings: BenchSettings, counts: ModelCounts, *,
         batch_size: int | None = None, result: Measurement | None = None, size: tuple | None = None,
         params: float | None = None, error: str | None = None) -> dict[str, Any]:
    """A benchmark row at full precision: the spec's columns, then the detailed ones."""
    times = result.times_ms if result else []
    median = statistics.median(times) if times else None
    mean = statistics.fmean(times) if times else None
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    size = size or counts.input_size
    asked = settings.for_kind(kind)[0]
    row: dict[str, Any] = {
        "model": architecture(name),
        f"{kind}_img_size": size[-1] if size else None,
        f"{kind}_batch_size": batch_size,
        "param_count": params if params is not None else counts.param_count,
    }
    if kind == "latency":
        row["latency_samples_per_sec"] = per_second(batch_size, mean)
        row["latency_mean_ms"] = mean
        for p in LATENCY_PERCENTILES:
            row[f"latency_p{p}_ms"] = nearest_rank(times, p) if times else None
        row["latency_queries"] = len(times) or None
    else:
        # timm's statistic under timm's names: the timed loop's samples over its time (the sum of
        # its steps), so these rows and timm's published ones are one quantity.
        row[f"{kind}_samples_per_sec"] = per_second(batch_size, mean)
        row[f"{kind}_step_time"] = mean
    row.update({
        "batch_asked": asked,
        "status": "failed" if result is None else "ok" if batch_size == asked else "backoff",
        "step_time_p10": deciles[0] if deciles else None,
        "step_time_p50": median,
        "step_time_p90": deciles[8] if deciles else None,
        "steps": len(times) or None,
        "peak_memory_mib": result.peak_bytes / 2**20 if result and result.peak_bytes is not None else None,
        "compile_s": result.compile_s if result else None,
        "backend": stack.name,
        "error": error,
        "samples_per_sec_median": per_second(batch_size, median),
        **repeat_columns(result, batch_size),
        **telemetry_columns(result.readings if result else [], (batch_size or 0) * len(times)),
        "step_times_ms": " ".join(f"{t:.4f}" for t in times) or None,
    })
    if kind == "infer":
        row["infer_gmacs"], row["infer_macts"] = counts.gmacs, counts.macts
    return row


def per_second(batch_size: int | None, step_ms: float | None) -> float | None:
    """Samples per second of `batch_size` images a step of `step_ms` milliseconds."""
    return batch_size / (step_ms / 1000.0) if batch_size and step_ms else None


def nearest_rank(times: Sequence[float], percentile: int) -> float:
    """The nearest-rank percentile: the smallest time that at least `percentile`% of `times` do
    not exceed, `sorted(times)[ceil(percentile * n / 100) - 1]` (no interpolation: a time that
    was measured)."""
    ordered = sorted(times)
    rank = -(-percentile * len(ordered) // 100)  # ceil in integers: 0.9 * 10 is not exactly 9 in floats
    return ordered[max(rank, 1) - 1]


def repeat_columns(result: Measurement | None, batch_size: int | None) -> dict[str, Any]:
    """How many times the timed loop ran, each loop's samples/s (batch over its median step),
    and their spread: (highest - lowest) / median of them, in percent (None for one loop)."""
    if result is None or not result.repeat_steps:
        return {"repeats": None, "samples_per_sec_repeats": None, "repeat_spread_pct": None}
    rates, begin = [], 0
    for count in result.repeat_steps:
        rates.append(per_second(batch_size, statistics.median(result.times_ms[begin:begin + count])))
        begin += count
    spread = (max(rates) - min(rates)) / statistics.median(rates) * 100 if len(rates) > 1 else None
    return {"repeats": len(rates), "samples_per_sec_repeats": " ".join(f"{r:.2f}" for r in rates),
            "repeat_spread_pct": spread}


def telemetry_columns(readings: Sequence[tuple[float, Mapping[str, Any]]], images: int) -> dict[str, Any]:
    """The detailed row's telemetry (`results.TELEMETRY_COLUMNS`) from the readings
    `(host seconds, TelemetryReading)` of one benchmark: mean and lowest compute clock, mean
    memory clock, the highest temperature; the energy counter's difference from the first
    reading to the last over `images` (mJ an image) and over the time between them (W), else
    the mean of the power readings; `throttled`, the throttle reasons any reading gave (`none`
    when the device reported none). None where no reading had the value."""

    def values(key: str) -> list:
        return [r[key] for _, r in readings if r.get(key) is not None]

    def mean(key: str) -> float | None:
        found = values(key)
        return statistics.fmean(found) if found else None

    columns: dict[str, Any] = {
        "clock_mhz": mean("clock_mhz"),
        "clock_mhz_min": min(values("clock_mhz"), default=None),
        "memory_clock_mhz": mean("memory_clock_mhz"),
        "power_w": mean("power_w"),
        "temperature_c": max(values("temperature_c"), default=None),
        "energy_per_image_mj": None,
    }
    energy = [(t, r["energy_j"]) for t, r in readings if r.get("energy_j") is not None]
    if len(energy) > 1 and energy[-1][0] > energy[0][0]:
        used_j = energy[-1][1] - energy[0][1]
        columns["power_w"] = used_j / (energy[-1][0] - energy[0][0])
        columns["energy_per_image_mj"] = used_j * 1000.0 / images if images else None
    reasons = [r["throttle_reasons"] for _, r in readings if r.get("throttle_reasons") is not None]
    seen = sorted({reason for found in reasons for reason in found})
    columns["throttled"] = (" ".join(seen) or "none") if reasons else None
    return columns


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
    params = param_count(model)
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
    return MetaCounts(param_count=param_count(model), macs=macs,
                      error="; ".join(errors) or None)


def _meta_error(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
