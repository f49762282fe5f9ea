"""Throughput benchmarks: counts against timm's published tables, the CSV files, out-of-memory
back-off, failures that are not retried, and an accelerator backend that lives in a test plugin.

No timings are asserted: the machine running the tests is whatever it is.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner

from rbench import BackendSpec, default_is_out_of_memory, hookimpl
from rbench.worker.backends import torch_tag
from rbench.worker.backends import backoff_batches
from rbench.worker.benchmark import AUTO_REPEATS, BenchSettings, model_counts
from rbench.frontend.cli import main
from rbench.errors import UnavailableError
from rbench.registry import load_registry
from rbench.report.results import DETAIL_COLUMNS, INFER_COLUMNS, LATENCY_COLUMNS, TRAIN_COLUMNS
from rbench.parent.plan import RunOptions, make_plan
from rbench.parent.run import run

TINY = ["test_vit", "test_byobnet"]  # the two fastest of timm's test models
QUICK = BenchSettings(batch_size=4, warmup_steps=0, steps=2, seconds=0.0, repeats=1)


@pytest.mark.parametrize(
    ("name", "gmacs", "macts"),
    [
        ("resnet50", 4.11, 11.11),
        ("vit_base_patch16_224", 17.58, 23.9),
        ("efficientnet_b0", 0.40, 6.75),
        ("convnext_tiny", 4.47, 13.44),
    ],
)
def test_meta_device_counts_match_timms_tables(name, gmacs, macts):
    counts = model_counts(name, 224)
    assert counts.input_size == (3, 224, 224)
    assert (round(counts.gmacs, 2), round(counts.macts, 2)) == (gmacs, macts)
    real = timm.create_model(name)
    assert counts.param_count * 1e6 == pytest.approx(sum(p.numel() for p in real.parameters()), abs=0.5)


def test_backoff_ladder_goes_down_from_the_batch_asked():
    assert backoff_batches(256) == [256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1]
    assert backoff_batches(200)[:3] == [200, 192, 128]
    assert backoff_batches(1) == [1]


@pytest.mark.parametrize(
    ("exc", "out_of_memory"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
        (RuntimeError("required rank 4 tensor to use channels_last format"), False),
        (ValueError("shapes do not match"), False),
    ],
)
def test_default_out_of_memory_recognition(exc, out_of_memory):
    assert default_is_out_of_memory(exc) is out_of_memory


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), list(csv.DictReader(lines))


def test_infer_and_train_csvs_have_the_spec_columns_sorted_by_rate(tmp_path):
    result = CliRunner().invoke(main, ["run", "-m", ",".join(TINY), "--bench", "infer,train", "-b", "cpu",
                                       "--batch-size", "2", "--warmup-steps", "0", "--bench-steps", "2",
                                       "--bench-seconds", "0", "--bench-repeats", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for kind, columns in (("infer", INFER_COLUMNS), ("train", TRAIN_COLUMNS)):
        (plain,) = tmp_path.glob(f"benchmark-{kind}-fp32-nchw-{torch_tag()}-cpu-*.csv")
        header, rows = read_csv(plain)
        assert header == list(columns)
        rates = [float(r[f"{kind}_samples_per_sec"]) for r in rows]
        assert sorted(r["model"] for r in rows) == sorted(TINY)
        assert rates == sorted(rates, reverse=True)
        header, detailed = read_csv(tmp_path / "detailed" / plain.name)
        assert header == [*columns, *DETAIL_COLUMNS]
        assert [r["model"] for r in detailed] == [r["model"] for r in rows]
        for row in detailed:
            assert (row["status"], row["batch_asked"], row[f"{kind}_batch_size"], row["error"]) == ("ok", "2", "2", "")
            assert float(row["step_time_p10"]) <= float(row["step_time_p50"]) <= float(row["step_time_p90"])
            # three loops of two steps asked for: every step kept
            assert (row["repeats"], row["steps"], row["compile_s"]) == ("3", "6", "")
            times = [float(t) for t in row["step_times_ms"].split()]
            assert len(times) == 6
            # timm's statistic under timm's names: batch over the mean step (the loops' samples over their time)
            # (the file rounds step times to 1e-4 ms, the step time to 1e-3 ms and samples/s to 0.01)
            mean = sum(times) / len(times)
            rate = 2 / (mean / 1000)
            assert float(row[f"{kind}_step_time"]) == pytest.approx(mean, abs=5e-4 + 5e-5)
            assert float(row[f"{kind}_samples_per_sec"]) == pytest.approx(rate, abs=0.005 + rate * 5e-5 / min(times))


class FakeOutOfMemory(Exception):
    """What the fake device raises when a batch does not fit."""


class FakeTimer:
    """A step timer of the fake device (the host clock), counting the steps it times."""

    def __init__(self, device: FakeDevice):
        self.device, self.times, self.begin = device, [], 0.0

    def start(self):
        self.begin = time.perf_counter()

    def stop(self):
        self.times.append((time.perf_counter() - self.begin) * 1000.0)
        self.device.timed_steps += 1

    def times_ms(self):
        return self.times


class FakeDevice:
    """A test plugin: an accelerator backend (really the CPU) with its own timer, memory counter,
    out-of-memory error and cleanup, that runs out of memory above `limit` images a batch or
    raises `error` on every batch."""

    def __init__(self, limit: int = 1024, error: Exception | None = None):
        self.limit, self.error = limit, error
        self.prepared: list[int] = []
        self.timed_steps = self.cleanups = 0

    def prepare_input(self, batch):
        self.prepared.append(batch.shape[0])
        if self.error is not None:
            raise self.error
        if batch.shape[0] > self.limit:
            raise FakeOutOfMemory(f"fake device out of memory at batch {batch.shape[0]}")
        return batch

    def cleanup(self):
        self.cleanups += 1

    @hookimpl
    def rbench_backends(self):
        return [BackendSpec(name="fakedev", description="a fake accelerator", device="cpu", device_tag=lambda: "fake-x1",
                            prepare_input=self.prepare_input, timer=lambda: FakeTimer(self),
                            reset_peak_memory=lambda: None, peak_memory=lambda: 123 * 2**20,
                            is_out_of_memory=lambda exc: isinstance(exc, FakeOutOfMemory) or default_is_out_of_memory(exc),
                            cleanup=self.cleanup)]


def run_fake(tmp_path: Path, device, benches=("infer",), **settings) -> dict[str, list[dict[str, str]]]:
    """Benchmark test_vit on the fake device through the ordinary plan; the detailed rows by kind."""
    registry = load_registry(extra=[("test:fakedev", device)])
    options = RunOptions(models=["test_vit"], benches=list(benches), backends=["fakedev"], out=tmp_path,
                         bench=BenchSettings(**{**QUICK.__dict__, **settings}))
    run(make_plan(options, registry), registry)
    tag = f"fp32-nchw-{torch_tag()}-fake-x1"
    return {kind: read_csv(tmp_path / "detailed" / f"benchmark-{kind}-{tag}.csv")[1] for kind in benches}


def test_a_fake_accelerator_from_a_plugin_benchmarks_with_its_own_timer_and_memory(tmp_path):
    device = FakeDevice()
    rows = run_fake(tmp_path, device, benches=("infer", "train"))
    for kind in ("infer", "train"):
        (row,) = rows[kind]
        assert (row["status"], row[f"{kind}_batch_size"], row["peak_memory_mib"]) == ("ok", "4", "123.0")
        assert row["backend"] == "fakedev"
    assert device.timed_steps == 4  # 2 timed steps per benchmark, all through the plugin's timer
    assert device.cleanups == 2  # once after each model


def test_out_of_memory_backs_off_and_the_row_says_so(tmp_path):
    device = FakeDevice(limit=2)
    (row,) = run_fake(tmp_path, device)["infer"]
    assert device.prepared == [4, 3, 2]
    assert (row["status"], row["batch_asked"], row["infer_batch_size"], row["error"]) == ("backoff", "4", "2", "")
    assert device.cleanups == 3  # after each attempt, so a failed one leaves nothing behind
    plain = read_csv(tmp_path / f"benchmark-infer-fp32-nchw-{torch_tag()}-fake-x1.csv")[1]
    assert plain[0]["infer_batch_size"] == "2"


def test_no_retry_records_the_out_of_memory_as_a_failed_row(tmp_path):
    device = FakeDevice(limit=2)
    (row,) = run_fake(tmp_path, device, retry=False)["infer"]
    assert device.prepared == [4]
    assert row["status"] == "failed" and row["infer_batch_size"] == "" and row["infer_samples_per_sec"] == ""
    assert row["error"] == "batch 4: FakeOutOfMemory: fake device out of memory at batch 4"
    assert read_csv(tmp_path / f"benchmark-infer-fp32-nchw-{torch_tag()}-fake-x1.csv") == (list(INFER_COLUMNS), [])


@pytest.mark.parametrize("error", [ValueError("fakedev has no kernel for this op"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered")])
def test_an_error_that_is_not_out_of_memory_is_not_retried_and_becomes_a_failed_row(tmp_path, error):
    device = FakeDevice(error=error)
    rows = run_fake(tmp_path, device, benches=("infer", "train"))
    assert device.prepared == [4, 4]  # one attempt each for infer and train, no back-off
    for kind in ("infer", "train"):
        (row,) = rows[kind]
        assert row["status"] == "failed"
        assert row["error"] == f"batch 4: {type(error).__name__}: {error}"
        assert row["param_count"] == "0.37"  # from the meta device, even though nothing ran


def test_a_long_error_is_kept_whole_on_one_line(tmp_path):
    message = "fakedev cannot run this op:\n" + "detail " * 80 + "\nhint: pass --no-retry or use another backend"
    (row,) = run_fake(tmp_path, FakeDevice(error=ValueError(message)))["infer"]
    assert row["error"] == f"batch 4: ValueError: {' '.join(message.split())}"


def test_compile_modifier_reports_compile_time_apart_and_names_the_file(tmp_path, monkeypatch):
    # The eager compiler backend traces with dynamo but skips code generation: fast enough for a test.
    monkeypatch.setenv("RBENCH_COMPILE_BACKEND", "eager")
    registry = load_registry()
    options = RunOptions(models=["test_byobnet"], benches=["infer"], backends=["cpu+compile"], out=tmp_path, bench=QUICK)
    run(make_plan(options, registry), registry)
    (path,) = tmp_path.glob(f"detailed/benchmark-infer-fp32-nchw-{torch_tag()}-cpu-*-dynamo.csv")
    (row,) = read_csv(path)[1]
    assert row["status"] == "ok" and float(row["compile_s"]) > 0


def test_unknown_compile_mode_is_refused_while_planning(monkeypatch):
    monkeypatch.setenv("RBENCH_COMPILE_MODE", "fastest")
    with pytest.raises(UnavailableError, match="RBENCH_COMPILE_MODE='fastest' is not a torch.compile mode"):
        make_plan(RunOptions(models=["test_vit"], benches=["infer"], backends=["cpu+compile"]), load_registry())


class ScriptedTimer:
    """A step timer that reports the next of the device's scripted step times (ms) for each step."""

    def __init__(self, device: ScriptedDevice):
        self.device, self.times = device, []

    def start(self):
        pass

    def stop(self):
        self.times.append(self.device.script.pop(0))

    def times_ms(self):
        return self.times


class ScriptedDevice:
    """A test plugin: a backend (really the CPU) whose timed steps take the times it is given."""

    def __init__(self, script: list[float]):
        self.script = list(script)
        self.synchronized = 0

    def synchronize(self):
        self.synchronized += 1

    @hookimpl
    def rbench_backends(self):
        return [BackendSpec(name="fakedev", description="a scripted accelerator", device="cpu",
                            device_tag=lambda: "fake-x1", timer=lambda: ScriptedTimer(self),
                            synchronize=self.synchronize)]


def nearest_rank_oracle(values: list[float], percentile: int) -> float:
    """The smallest value that at least `percentile`% of the values do not exceed, by counting."""
    return min(v for v in values if sum(w <= v for w in values) * 100 >= percentile * len(values))


def test_latency_percentiles_are_the_nearest_rank_of_the_step_times(tmp_path):
    import random

    rng = random.Random(19)
    script = [round(rng.uniform(1.0, 50.0), 3) for _ in range(150)]  # 150: p99 falls between ranks
    device = ScriptedDevice(script)
    (row,) = run_fake(tmp_path, device, benches=("latency",), latency_queries=150, latency_seconds=0.0,
                      repeats=1)["latency"]
    assert not device.script  # every scripted time was a timed query, none more
    assert (row["latency_batch_size"], row["batch_asked"], row["latency_queries"]) == ("1", "1", "150")
    for p in (50, 90, 99):
        assert float(row[f"latency_p{p}_ms"]) == round(nearest_rank_oracle(script, p), 3)
    mean = sum(script) / len(script)
    assert float(row["latency_mean_ms"]) == pytest.approx(mean, abs=5e-4)
    assert float(row["latency_samples_per_sec"]) == pytest.approx(1000.0 / mean, abs=5e-3)
    assert [float(t) for t in row["step_times_ms"].split()] == script
    plain = read_csv(tmp_path / f"benchmark-latency-fp32-nchw-{torch_tag()}-fake-x1.csv")
    assert plain[0] == list(LATENCY_COLUMNS)
    # one query at a time: the device is waited for after each, and after the first call
    assert device.synchronized == 1 + 150


def test_repeats_state_their_spread_beside_timms_mean_based_figure(tmp_path):
    # Three repeats of three steps at batch 4 (ms): medians 10, 20 and 12.
    script = [10.0, 10.0, 40.0, 20.0, 20.0, 20.0, 10.0, 12.0, 14.0]
    (row,) = run_fake(tmp_path, ScriptedDevice(script), steps=3, repeats=3)["infer"]
    # by hand: repeats' rates 4 / 10 ms = 400, 4 / 20 ms = 200, 4 / 12 ms = 333.33 samples/s
    assert (row["repeats"], row["steps"], row["samples_per_sec_repeats"]) == ("3", "9", "400.00 200.00 333.33")
    assert float(row["repeat_spread_pct"]) == round((400 - 200) / (4000 / 12) * 100, 2)  # 60.0
    # timm's figure under timm's names: 36 images over the nine steps' 156 ms (batch over the mean step)
    assert float(row["infer_samples_per_sec"]) == round(36 / 0.156, 2)
    assert float(row["infer_step_time"]) == round(156 / 9, 3)
    # rbench's: batch over the median of all nine steps (14 ms), and that median
    assert float(row["samples_per_sec_median"]) == round(4 / 0.014, 2)
    assert float(row["step_time_p50"]) == 14.0


@pytest.mark.parametrize(("script", "repeats"), [
    ([5.0, 7.0] * AUTO_REPEATS, AUTO_REPEATS),  # 12 ms of steps: short, repeated
    ([1499.0, 1501.0], 1),  # 3.000 s of steps: long enough alone
    ([2999.0, 0.5] * AUTO_REPEATS, AUTO_REPEATS),  # just under 3 s
])
def test_a_short_timed_loop_is_repeated_by_the_length_its_steps_measured(tmp_path, script, repeats):
    """The repeat decision reads the stack's step times, not the host's clock: scripted times decide it."""
    device = ScriptedDevice(script)
    (row,) = run_fake(tmp_path, device, steps=2, repeats=None)["infer"]
    assert not device.script  # every scripted step was timed, none more
    assert (row["repeats"], row["steps"]) == (str(repeats), str(2 * repeats))
    assert [float(t) for t in row["step_times_ms"].split()] == script


def test_a_store_of_the_median_based_columns_is_rewritten_with_timms_figure(tmp_path):
    """Records written when samples/s was rbench's median figure: `rbench report` moves their own
    numbers into today's columns, with no benchmark run."""
    import json

    script = [10.0, 30.0, 11.0]
    (row,) = run_fake(tmp_path / "now", ScriptedDevice(script), steps=3, repeats=1)["infer"]
    (record_path,) = (tmp_path / "now" / "store" / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    stored = record["entries"][0]["row"]
    # the old columns, by hand: samples/s and step time over the median (11 ms), timm's apart
    stored.update(infer_samples_per_sec=4 / 0.011, infer_step_time=11.0, step_time_mean=17.0,
                  samples_per_sec_mean=4 / 0.017)
    stored.pop("samples_per_sec_median")
    record_path.write_text(json.dumps(record))
    result = CliRunner().invoke(main, ["report", "--store", str(tmp_path / "now" / "store"), "--out", str(tmp_path / "re")])
    assert result.exit_code == 0, result.output
    tag = f"fp32-nchw-{torch_tag()}-fake-x1"
    (rewritten,) = read_csv(tmp_path / "re" / "detailed" / f"benchmark-infer-{tag}.csv")[1]
    assert (float(rewritten["infer_samples_per_sec"]), float(rewritten["infer_step_time"])) == (round(4 / 0.017, 2), 17.0)
    assert float(rewritten["samples_per_sec_median"]) == round(4 / 0.011, 2)
    assert "samples_per_sec_mean" not in rewritten and rewritten == row


def test_one_timed_loop_states_no_spread(tmp_path):
    (row,) = run_fake(tmp_path, ScriptedDevice([5.0, 7.0]), repeats=1)["infer"]
    # 4 images over the median step, 6 ms
    assert (row["repeats"], row["samples_per_sec_repeats"], row["repeat_spread_pct"]) == ("1", "666.67", "")


def test_latency_options_from_the_command_line(tmp_path):
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--bench", "latency", "-b", "cpu", "--warmup-steps", "0",
                                       "--latency-queries", "5", "--latency-seconds", "0", "--bench-repeats", "2",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob(f"detailed/benchmark-latency-fp32-nchw-{torch_tag()}-cpu-*.csv")
    (row,) = read_csv(path)[1]
    assert (row["latency_batch_size"], row["latency_queries"], row["repeats"], row["status"]) == ("1", "10", "2", "ok")
    times = sorted(float(t) for t in row["step_times_ms"].split())
    # nearest rank: the 5th of 10, and the 10th (the step times are written to 4 decimals, the percentiles to 3)
    assert float(row["latency_p50_ms"]) == pytest.approx(times[4], abs=1e-3)
    assert float(row["latency_p99_ms"]) == pytest.approx(times[-1], abs=1e-3)
