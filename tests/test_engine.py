"""The run engine: resume after SIGKILL, failures that never stop the grid, Ray, two runs on
one store."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rbench import BackendSpec, Grid, hookimpl

from .conftest import Hold, make_distribution

MODELS = "test_vit,test_efficientnet,test_byobnet,test_resnet,test_convnext"

FAULTY_PLUGIN = '''
import rbench


def _register_broken_model():
    from timm.models import register_model

    def rbench_broken_model(pretrained=False, **kwargs):
        raise RuntimeError("this architecture cannot be built")

    register_model(rbench_broken_model)


def _oom_for_byobnet(batch):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


def _wrap(model):
    kind = type(model).__name__
    if kind == "EfficientNet":
        forward = model.forward
        model.forward = lambda x: forward(x) * float("nan")
    elif kind == "ByobNet":
        model.forward = _oom_for_byobnet
    return model


@rbench.hookimpl
def rbench_backends():
    _register_broken_model()
    return [rbench.BackendSpec(name="faulty", description="NaN logits for EfficientNet, out of memory for ByobNet",
                               modifier=True, prepare_model=_wrap)]
'''


def rbench(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "rbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def csvs(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.csv"))}


def records(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store / "records").glob("*.json"))]


def test_killed_run_resumes_only_the_missing_cells_and_matches_an_uninterrupted_run(tmp_path):
    hold = Hold(tmp_path)
    args = ["run", "-m", MODELS, "--weights", "random", "--bench", "validate,metadata", "--executor", "local",
            "--workers", "0", "-b", "cpu+hold"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rbench", *args, "--out", str(out)],
                            env={**os.environ, **hold.env(at=3)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The metadata cells run first; then each validation cell is one batch: the third is held,
        # so the kill lands part way through the 10 cells whatever the machine's speed.
        hold.wait_for(3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        hold.let_go()
    finished_before = len(records(out / "store"))
    assert 5 <= finished_before < 10, "the kill should land part way through the 10 cells"
    for name, text in csvs(out).items():  # what is there is a valid file of the finished cells
        assert text.splitlines()[0].startswith("model,"), name

    result = rbench(*args, "--out", str(out), env=hold.env())
    assert result.returncode == 0, result.stderr
    ran, held = map(int, re.search(r"(\d+) cell\(s\) to run.*?(\d+) already in the store", result.stdout, re.S).groups())
    assert (ran, held) == (10 - finished_before, finished_before)
    assert len(records(out / "store")) == 10

    clean = tmp_path / "clean"
    assert rbench(*args, "--out", str(clean), env=hold.env()).returncode == 0
    assert csvs(out) == csvs(clean)
    assert "results-synthetic.csv" in csvs(clean)


def test_failures_become_rows_and_the_rest_of_the_grid_completes(tmp_path):
    site = tmp_path / "site"
    make_distribution(site, "faultyplug", {"rbench.backends": {"faulty": "faultyplug_mod"}},
                      {"faultyplug_mod": FAULTY_PLUGIN})
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    result = rbench("run", "-m", "test_vit,test_efficientnet,test_byobnet,rbench_broken_model", "--weights", "random",
                    "-b", "cpu+faulty", "--bench", "validate", "--executor", "subprocess", "--batch-size", "16",
                    "--workers", "0", "--out", str(out), env=env)
    assert result.returncode == 1, result.stderr  # finished, with failures
    with open(out / "failures.csv", newline="") as f:
        failures = {(r["model"], r["status"]) for r in csv.DictReader(f)}
    assert failures == {("test_efficientnet@random", "non-finite"), ("test_byobnet@random", "oom"),
                        ("rbench_broken_model@random", "build-failed")}
    rows = list(csv.DictReader((out / "results-synthetic.csv").open()))
    assert [r["model"] for r in rows] == ["test_vit@random"]

    clean = tmp_path / "clean"
    assert rbench("run", "-m", "test_vit", "--weights", "random", "--bench", "validate", "--executor", "local",
                  "--workers", "0", "--out", str(clean)).returncode == 0
    assert (out / "results-synthetic.csv").read_text() == (clean / "results-synthetic.csv").read_text()

    again = rbench("run", "-m", "test_vit,test_efficientnet,test_byobnet,rbench_broken_model", "--weights", "random",
                   "-b", "cpu+faulty", "--bench", "validate", "--out", str(out), env=env)
    assert "0 cell(s) to run" in again.stdout  # failed cells are not retried without --retry-failed
    retry = rbench("run", "-m", "test_vit,test_efficientnet,test_byobnet,rbench_broken_model", "--weights", "random",
                   "-b", "cpu+faulty", "--bench", "validate", "--out", str(out), "--retry-failed", env=env)
    assert "3 cell(s) to run" in retry.stdout


def test_cell_timeout_fails_only_that_cell(tmp_path):
    out = tmp_path / "out"
    result = rbench("run", "-m", "test_vit,test_byobnet", "--weights", "random", "--bench", "infer",
                    "--executor", "subprocess", "--cell-timeout", "0.5", "--bench-seconds", "30", "--batch-size", "2",
                    "--out", str(out))
    assert result.returncode == 1
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["model"], r["status"]) for r in rows} == {("test_vit@random", "timeout"), ("test_byobnet@random", "timeout")}
    assert all("--cell-timeout 0.5" in r["message"] for r in rows)


def test_ray_executor_gives_the_local_executors_csvs(tmp_path):
    if importlib.util.find_spec("ray") is None and not os.environ.get("CI"):  # CI installs rbench[ray]
        pytest.skip("Ray is the optional extra: pip install 'rbench[ray]'")
    args = ["run", "-m", "test_vit,test_byobnet", "--weights", "random", "--bench", "validate,metadata",
            "--workers", "0"]
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    assert rbench(*args, "--executor", "local", "--out", str(local)).returncode == 0
    result = rbench(*args, "--executor", "ray", "--out", str(ray_out), env={"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert csvs(ray_out) == csvs(local)
    assert len(records(ray_out / "store")) == 4


class Call:
    """A method of a fake Ray actor: `.remote(...)` answers `answer`."""

    def __init__(self, answer):
        self.answer = answer

    def remote(self, *args):
        return self.answer


class FakeRay:
    """Ray's API as the ray executor uses it: records the options of each remote call and
    answers every task as done and ok (an ok record of its cell), without running it; its
    nodes have 8 CPUs; its actors answer nothing."""

    def __init__(self):
        self.options: list[dict] = []

    def is_initialized(self):
        return True

    def nodes(self):
        return [{"Resources": {"CPU": 8.0}, "Alive": True}]

    def put(self, value):
        return value

    def kill(self, actor):
        pass

    def cancel(self, task, force=False):
        pass

    def remote(self, function=None, **actor_options):
        ray = self
        if function is None:
            return self.remote

        class Remote:
            def options(self, **options):
                ray.options.append(options)
                return self

            def remote(self, *args):
                if isinstance(function, type):  # the events actor: no events
                    return type("Actor", (), {"take": Call([]), "put": Call(None)})()
                job, cells, events, checkpoints, *contents = args
                return (len(ray.options), json.dumps(cells[0]))

        return Remote()

    def wait(self, tasks, num_returns, timeout):
        return tasks[:num_returns], tasks[num_returns:]

    def get(self, task):
        from rbench import Cell, CellOutcome, CellRecord

        if not isinstance(task, tuple):  # an actor's answer
            return task
        return [CellOutcome.of(CellRecord(cell=Cell.from_json(json.loads(task[1])))).to_json()]


class NpuBackend:
    """A test plugin: an accelerator that Ray knows as the custom resource `npu`, two CPUs a cell."""

    @hookimpl
    def rbench_backends(self):
        return [BackendSpec(name="npu", description="an NPU", device="npu", device_tag=lambda: "npu-x1",
                            ray_resources={"npu": 1, "num_cpus": 2})]


def test_ray_tasks_reserve_what_each_backend_stack_declares(tmp_path, monkeypatch):
    from rbench.parent.plan import make_job, plan_cells
    from rbench.parent.plan import RunOptions, make_plan
    from rbench.plugins.executors import ray as ray_executor
    from rbench.registry import load_registry

    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    registry = load_registry(extra=[("test:npu", NpuBackend())])
    registry.backends["cuda"] = dataclasses.replace(registry.backends["cuda"], unavailable=lambda: None)
    plan = make_plan(RunOptions(models=["test_vit"], benches=["infer"], backends=["npu", "cpu", "cuda"],
                                out=tmp_path), registry)
    cells = plan_cells(plan)
    outcomes = list(ray_executor.execute(Grid(base_job=make_job(plan, cells, {}), cells=cells)))
    assert [o.status for o in outcomes] == ["ok"] * 3
    assert fake.options == [
        {"num_cpus": 2, "num_gpus": 0, "resources": {"npu": 1}, "max_retries": 0},  # the plugin's declaration
        {"num_cpus": 1, "num_gpus": 0, "max_retries": 0},  # cpu declares nothing
        {"num_cpus": 1, "num_gpus": 1, "max_retries": 0},  # the cuda bases: one GPU
    ]


def test_two_runs_on_one_store_leave_every_cell_once_and_no_corrupt_record(tmp_path):
    store = tmp_path / "store"
    common = ["run", "--weights", "random", "--bench", "validate,metadata", "--executor", "local", "--workers", "0",
              "--store", str(store)]
    a = subprocess.Popen([sys.executable, "-m", "rbench", *common, "-m", "test_vit,test_efficientnet,test_byobnet",
                          "--out", str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    b = subprocess.Popen([sys.executable, "-m", "rbench", *common, "-m", "test_byobnet,test_efficientnet,test_resnet",
                          "--out", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert a.wait() == 0 and b.wait() == 0
    found = records(store)  # every file parses
    keys = [r["key"] for r in found]
    assert len(keys) == len(set(keys)) == 8  # 4 models x (validate, metadata)
    assert all(r["status"] == "ok" for r in found)
    assert not list((store / "records").glob(".*"))  # no temporary files left
    # --out holds every row of the store: the run that took the store's lock second holds both runs' models
    held = {}
    for name in ("a", "b"):
        rows = list(csv.DictReader((tmp_path / name / "results-synthetic.csv").open()))
        held[name] = sorted(r["model"].split("@")[0].split(".")[0] for r in rows)
    everything = ["test_byobnet", "test_efficientnet", "test_resnet", "test_vit"]
    assert sorted(held.values(), key=len) in ([["test_byobnet", "test_efficientnet", "test_resnet"], everything],
                                              [["test_byobnet", "test_efficientnet", "test_vit"], everything])
