"""The ray executor on real Ray clusters started on this machine: a head with no CPUs for tasks
and a worker node that cannot see the driver's store, out folder, checkpoint or cache (its own
mount namespace, an empty tmpfs over each), which gives the local run's CSVs; and a hung cell
on a cluster with fewer CPUs than cells, which is the one timed out while the others finish.
Also, without Ray: what a job without a store sends back, and the checks on what comes back.

Every node runs this interpreter (`sys.executable`), so its workers import the rbench under
test. Each cluster has its own temporary folder, and only its own processes (found by that
folder, and their children) are ended: never `ray stop`, which ends every Ray process of the
machine. Every wait is on a process or a file; the driver's clock for `--cell-timeout` is the
test's own, which stands still until the hung cell's forward has begun (so no load, however
heavy, times out a healthy cell), then jumps past the timeout."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import make_distribution

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None and not os.environ.get("CI"),  # CI has it
                               reason="Ray is the optional extra: pip install 'rbench[ray]'")

RAY = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
# Ray 2.60 turns token authentication on by default; a cluster of `ray start` nodes forms without it.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "HF_HUB_OFFLINE": "1"}
# A node in its own mount namespace, with an empty tmpfs over each folder given before `--`.
HIDDEN = 'while [ "$1" != -- ]; do mount -t tmpfs rbench-hidden "$1" || exit 97; shift; done; shift; exec "$@"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """`{pid: (parent pid, command line)}` of this machine's live processes (zombies left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state, parent = (entry / "stat").read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":
            found[int(entry.name)] = (int(parent), command)
    return found


class RayCluster:
    """A Ray cluster of `ray start` nodes on this machine, all in the temporary folder `temp`."""

    def __init__(self, temp: Path, env: dict[str, str]):
        self.temp, self.port = temp, free_port()
        self.env = {**os.environ, **RAY_ENV, **env}
        self.address = f"127.0.0.1:{self.port}"

    def _ports(self) -> list[str]:
        # Ports of their own: another cluster on this machine may hold Ray's defaults.
        return ["--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--disable-usage-stats"]

    def start_head(self, cpus: int) -> None:
        self._start([*RAY, "start", "--head", "--num-cpus", str(cpus), "--port", str(self.port), "--temp-dir",
                     str(self.temp), "--include-dashboard", "false", "--dashboard-port", str(free_port()),
                     *self._ports()])

    def add_node(self, cpus: int, hidden: list[Path]) -> None:
        """A worker node that sees an empty folder at each of `hidden` (its own mount namespace)."""
        self._start(["unshare", "--mount", "sh", "-c", HIDDEN, "sh", *map(str, hidden), "--",
                     *RAY, "start", "--address", self.address, "--num-cpus", str(cpus), *self._ports()])

    def _start(self, command: list[str]) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    def processes(self) -> dict[int, tuple[int, str]]:
        """The cluster's processes: those naming its folder, and their children."""
        everything = _processes()
        found = {pid for pid, (_, command) in everything.items() if str(self.temp) in command and pid != os.getpid()}
        while more := {pid for pid, (parent, _) in everything.items() if parent in found} - found:
            found |= more
        return {pid: everything[pid] for pid in found}

    def stop(self) -> None:
        """Kill the cluster's processes, and wait until none is left (a killed one may take a moment)."""
        deadline = time.monotonic() + 120  # only a process that cannot be killed reaches it
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)


@pytest.fixture
def ray_cluster(tmp_path_factory):
    """Start clusters with `ray_cluster(env)`; each is ended whatever the test did."""
    clusters = []

    def start(env: dict[str, str]) -> RayCluster:
        # A short folder: Ray's socket paths in it must fit a Unix socket's 107 bytes.
        clusters.append(RayCluster(tmp_path_factory.mktemp("ray"), env))
        return clusters[-1]

    yield start
    for cluster in clusters:
        cluster.stop()
    assert not any(cluster.processes() for cluster in clusters), "a Ray process outlived its cluster"


def rbench(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rbench", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **RAY_ENV, **env}, timeout=900)


def csvs(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.csv"))}


def write_checkpoint(path: Path) -> None:
    """Weights for test_resnet that are not its random ones (another seed), as safetensors."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(12345)
    model = timm.create_model("test_resnet", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def mount_namespaces_work() -> str | None:
    """Why a node cannot get a mount namespace of its own here, or None when it can."""
    if os.geteuid() != 0:
        return "a node in its own mount namespace needs root (unshare --mount, mount -t tmpfs)"
    try:
        probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs probe /mnt"], capture_output=True,
                               text=True, timeout=60)
    except FileNotFoundError:
        return "unshare is not installed"
    return None if probe.returncode == 0 else f"no mount namespace here: {probe.stderr.strip()[:200]}"


@needs_ray
def test_a_cluster_whose_nodes_share_only_the_data_gives_the_local_runs_csvs(tmp_path, image_folder, ray_cluster):
    why = mount_namespaces_work()
    if why:
        pytest.skip(why)
    driver, cache = tmp_path / "driver", tmp_path / "cache"  # the driver's own: its out folders and checkpoint; cache
    driver.mkdir()
    cache.mkdir()
    checkpoint = driver / "resnet-weights.safetensors"
    write_checkpoint(checkpoint)
    (driver / "models.txt").write_text(f"test_vit\ntest_resnet --weights {checkpoint}\n")
    env = {"RBENCH_CACHE_DIR": str(cache)}
    args = ["run", "-m", f"@{driver / 'models.txt'}", "--weights", "random", "--bench", "validate,metadata",
            "-d", "synthetic,imagefolder", "--data-dir", image_folder, "--workers", "0", "--img-size", "32"]

    local = rbench(*args, "--executor", "local", "--out", driver / "local", env=env)
    assert local.returncode == 0, local.stderr[-3000:]

    cluster = ray_cluster(env)
    cluster.start_head(cpus=0)  # no CPUs: every cell runs on the worker node
    cluster.add_node(cpus=2, hidden=[driver, cache])
    run = rbench(*args, "--executor", "ray", "--ray-address", cluster.address, "--out", driver / "ray", env=env)
    assert run.returncode == 0, run.stderr[-3000:]

    # The worker node saw an empty folder where the driver's store is (its processes' view of it).
    ours = os.readlink("/proc/self/ns/mnt")
    node = [pid for pid in cluster.processes() if os.readlink(f"/proc/{pid}/ns/mnt") != ours]
    assert node, "no process of the cluster runs in a mount namespace of its own"
    assert (driver / "ray" / "store" / "records").is_dir()
    assert not Path(f"/proc/{node[0]}/root{driver / 'ray' / 'store'}").exists()

    ray_csvs, local_csvs = csvs(driver / "ray"), csvs(driver / "local")
    assert {"results-synthetic.csv", "results-imagefolder.csv"} <= set(ray_csvs)
    assert ray_csvs == local_csvs
    results = list(csv.DictReader((driver / "ray" / "results-synthetic.csv").open()))
    assert len(results) == 2 and any(r["model"].startswith("test_resnet@ckpt-") for r in results)
    records = [json.loads(p.read_text()) for p in (driver / "ray" / "store" / "records").glob("*.json")]
    assert sorted(r["status"] for r in records) == ["ok"] * 6  # 4 validation cells, 2 metadata
    for record in records:
        if record.get("predictions"):
            assert (driver / "ray" / "store" / record["predictions"]["file"]).is_file()


HANG_PLUGIN = '''
import os
import time
from pathlib import Path

import rbench


def _hang_byobnet(model):
    if type(model).__name__ == "ByobNet":
        def forward(x):
            Path(os.environ["RBENCH_TEST_HUNG"]).touch()  # tells the test's clock
            while True:
                time.sleep(60)

        model.forward = forward
    return model


@rbench.hookimpl
def rbench_backends():
    return [rbench.BackendSpec(name="hang", description="ByobNet never returns", modifier=True,
                               prepare_model=_hang_byobnet)]
'''

TIMEOUT_S = 30.0


@needs_ray
def test_a_hung_cell_on_ray_is_the_one_timed_out_and_the_others_finish(tmp_path, ray_cluster, monkeypatch):
    import ray

    from rbench.parent.engine import run_grid
    from rbench.parent.plan import RunOptions, make_plan
    from rbench.plugins.executors import ray as ray_executor
    from rbench.registry import load_registry

    site = tmp_path / "site"
    make_distribution(site, "hangplug", {"rbench.backends": {"hang": "hangplug_mod"}}, {"hangplug_mod": HANG_PLUGIN})
    monkeypatch.syspath_prepend(str(site))
    hung = tmp_path / "hung"
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "RBENCH_CACHE_DIR": str(tmp_path / "cache"), "RBENCH_TEST_HUNG": str(hung)}
    monkeypatch.setenv("RBENCH_CACHE_DIR", env["RBENCH_CACHE_DIR"])
    events, records = [], []
    jumped = []

    def clock() -> float:
        """The driver's clock: still until ByobNet's forward has begun and the driver has reported
        its cell started (its start is then on the clock's 0), then past the timeout for good. A
        cell is timed out by the time since its own start, so only ByobNet's may be; a cell
        counted from its submission, or started after the jump, would be too."""
        if not jumped and hung.exists():
            started = {e["key"] for e in events if e["event"] == "start"}
            if started - {e["key"] for e in events if e["event"] == "done"}:  # one CPU: ByobNet's
                jumped.append(True)
        return 2 * TIMEOUT_S if jumped else 0.0

    monkeypatch.setattr(ray_executor, "clock", clock)
    # Events collected every second: ByobNet's forward begins before the driver hears of its start.
    monkeypatch.setattr(ray_executor, "POLL_S", 1.0)
    cluster = ray_cluster(env)
    cluster.start_head(cpus=1)  # one cell at a time, four cells
    models = ["test_vit", "test_byobnet", "test_resnet", "test_efficientnet"]
    registry = load_registry()
    plan = make_plan(RunOptions(models=models, weights="random", benches=["validate"], backends=["cpu+hang"],
                                workers=0, img_size=32, executor="ray", executor_options={"address": cluster.address},
                                cell_timeout=TIMEOUT_S, out=tmp_path / "out"), registry)
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    try:
        run_grid(plan, registry, on_event=events.append, on_record=records.append)
    finally:
        ray.shutdown()

    statuses = {r.cell.model: (r.status, r.message) for r in records}
    assert statuses.pop("test_byobnet") == ("timeout", f"ran past --cell-timeout {TIMEOUT_S:g} s")
    assert statuses == {m: ("ok", "") for m in models if m != "test_byobnet"}
    # With one CPU, cells run one after the other: each is reported started when it starts, so no
    # two are ever between their start and their end (a cell reported at submission would be).
    running = set()
    for event in events:
        if event["event"] == "start":
            assert not running, f"{event['key']} reported started while {running} ran: {events}"
            running.add(event["key"])
        elif event["event"] == "done":
            running.discard(event["key"])
    assert sum(e["event"] == "start" for e in events) == 4


# --- without Ray: a job for a machine that shares no disk with the driver ------------------------

def _grid(tmp_path, **options):
    from rbench import Grid
    from rbench.parent.plan import RunOptions, make_job, make_plan, plan_cells, source_identity
    from rbench.registry import load_registry
    from rbench.store import Store

    registry = load_registry()
    plan = make_plan(RunOptions(**{"models": ["test_vit"], "weights": "random", "benches": ["validate"],
                                   "workers": 0, "img_size": 32, "out": tmp_path / "out", **options}), registry)
    store = Store(plan.options.store_dir)
    listings = {s.name: store.put_source(s, source_identity(s), registry) for s in plan.sources}
    cells = plan_cells(plan, {s.name: source_identity(s) for s in plan.sources})
    return Grid(base_job=make_job(plan, [], listings), cells=cells, registry=registry), store


def test_a_job_without_a_store_sends_the_predictions_file_back_and_writes_nothing(tmp_path, monkeypatch):
    import hashlib

    from rbench import run_cells

    monkeypatch.setenv("RBENCH_CACHE_DIR", str(tmp_path / "cache"))
    grid, store = _grid(tmp_path)
    job = grid.detached_job(grid.cells)
    assert job.store is None and set(job.listings) == {"synthetic"}
    job = type(job).from_json(json.loads(json.dumps(job.to_json())))  # as it travels
    (outcome,) = run_cells(job, registry=grid.registry)
    assert outcome.status == "ok", outcome.message
    import polars as pl

    assert not (store.root / "predictions").exists()  # the worker wrote nothing into the store
    info = outcome.record.predictions
    assert info.file == f"predictions/{outcome.cell.key}.parquet"
    assert hashlib.sha256(outcome.predictions).hexdigest() == info.sha256
    assert pl.read_parquet(outcome.predictions).height == info.rows == 100  # the synthetic data set's images
    sent = type(outcome).from_json(json.loads(json.dumps(outcome.to_json())))
    assert sent.predictions == outcome.predictions

    store.put_predictions_file(outcome.cell.key, info, sent.predictions)
    assert store.get_predictions(outcome.record).height == 100


def test_predictions_that_are_not_the_file_the_record_names_are_never_written(tmp_path):
    import hashlib

    from rbench.predictions import DamagedPredictions
    from rbench.record import PredictionsFile
    from rbench.store import Store

    store = Store(tmp_path / "store")
    data = b"PAR1 not really"
    good = PredictionsFile(file="predictions/k1.parquet", sha256=hashlib.sha256(data).hexdigest(), rows=1)
    with pytest.raises(DamagedPredictions, match="checksum"):
        store.put_predictions_file("k1", good, data + b"x")
    for elsewhere in ("predictions/k2.parquet", "records/k1.parquet", "../k1.parquet"):
        with pytest.raises(DamagedPredictions, match="not predictions/k1.parquet"):
            store.put_predictions_file("k1", PredictionsFile(file=elsewhere, sha256=good.sha256, rows=1), data)
    assert not any(tmp_path.rglob("*.parquet"))
    store.put_predictions_file("k1", good, data)
    assert (tmp_path / "store" / "predictions" / "k1.parquet").read_bytes() == data


def test_a_checkpoint_sent_as_bytes_is_checked_against_the_plans_hash(tmp_path):
    import hashlib

    from rbench import Cell, WeightsError

    checkpoint = tmp_path / "mine.safetensors"
    write_checkpoint(checkpoint)
    data = checkpoint.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    grid, _ = _grid(tmp_path)
    cell = Cell(kind="validate", model="test_resnet", source="synthetic", weights=str(checkpoint),
                identity={"weights": f"sha256:{digest}"})
    job = grid.detached_job([cell])
    with pytest.raises(WeightsError, match="other bytes than the plan hashed"):
        job.with_checkpoint_copies({str(checkpoint): data[:-1] + b"!"})
    copy = Path(job.with_checkpoint_copies({str(checkpoint): data}).checkpoints[str(checkpoint)])
    assert copy != checkpoint and copy.name == checkpoint.name and copy.read_bytes() == data


def test_a_ray_task_reserves_a_cpu_per_loader_worker_up_to_the_largest_node():
    from rbench.plugins.executors.ray import task_options

    assert task_options({}, loader_workers=4, node_cpus=16)["num_cpus"] == 5
    assert task_options({}, loader_workers=8, node_cpus=4)["num_cpus"] == 4  # placeable on the largest node
    assert task_options({"num_cpus": 2}, loader_workers=3, node_cpus=1)["num_cpus"] == 2  # never below the stack's
    assert task_options({"num_gpus": 1}, loader_workers=0, node_cpus=8) == {"num_cpus": 1, "num_gpus": 1}
