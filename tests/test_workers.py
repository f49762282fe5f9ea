"""Worker processes and signals: a worker that floods stderr, one killed before its first cell,
a run started with SIGINT ignored, and the count that Ctrl-C prints.

Every wait here is on a file or a process, never on a clock; the timeouts only guard against a
hang and are far above what any of these runs takes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rbench.files

from .conftest import invoke_apart, make_distribution

HANG_GUARD = 600  # seconds: far above any of these runs; only a hang reaches it
QUICK = ["--weights", "random", "--bench", "validate", "--workers", "0", "--img-size", "32"]


def start(*args, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rbench", *map(str, args)], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def with_site(site: Path, **env: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **env}


def records(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store / "records").glob("*.json"))]


def failures(out: Path) -> list[dict[str, str]]:
    with open(out / "failures.csv", newline="") as f:
        return list(csv.DictReader(f))


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Until `path` exists (or `proc` ends, or the hang guard)."""
    deadline = time.monotonic() + HANG_GUARD
    while not path.exists():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# --- a worker writing far more than a pipe holds to stderr ---------------------------------------

FLOOD_PLUGIN = '''
import sys

import rbench


def _flood(batch):
    sys.stderr.write(("w" * 1023 + "\\n") * 1024)  # a MiB a batch: sixteen times what a pipe holds
    sys.stderr.flush()
    return batch


@rbench.hookimpl
def rbench_backends():
    return [rbench.BackendSpec(name="flood", description="a MiB on stderr a batch", modifier=True,
                               prepare_input=_flood)]
'''


def test_a_worker_that_floods_stderr_finishes_and_its_result_is_the_local_executors(tmp_path, image_folder):
    site = tmp_path / "site"
    make_distribution(site, "floodplug", {"rbench.backends": {"flood": "floodplug_mod"}}, {"floodplug_mod": FLOOD_PLUGIN})
    args = ["run", "-m", "test_vit", *QUICK, "--data-dir", image_folder, "-b", "cpu+flood", "--batch-size", "8"]
    runs = {}
    for executor in ("subprocess", "local"):
        proc = start(*args, "--executor", executor, "--out", tmp_path / executor, env=with_site(site))
        out, err = proc.communicate(timeout=HANG_GUARD)  # a worker blocked on a full pipe never ends
        assert proc.returncode == 0, err[-3000:]
        runs[executor] = (tmp_path / executor / "results-imagefolder.csv").read_text()
    assert [r["status"] for r in records(tmp_path / "subprocess" / "store")] == ["ok"]
    assert runs["subprocess"] == runs["local"]  # the same scores as the run with no pipe at all
    assert len(runs["local"].splitlines()) == 2


# --- a worker killed before its first cell ------------------------------------------------------

# Imported by every Python process of the run (it is on PYTHONPATH): the first worker of
# test_vit kills itself before it reads its job, as the kernel's OOM killer may.
KILL_FIRST_WORKER = '''
import json
import os
import signal
import sys

argv = getattr(sys, "orig_argv", [])
if any("rbench.worker.worker" in arg for arg in argv[1:-1]):  # the worker's entry code names its module
    with open(argv[-1]) as f:
        model = json.load(f)["cells"][0]["model"]
    if model.startswith("test_vit"):
        try:
            os.close(os.open(os.environ["RBENCH_TEST_KILLED"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_worker_killed_before_its_first_cell_fails_that_cell_and_the_grid_goes_on(tmp_path, image_folder):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(KILL_FIRST_WORKER)
    killed = tmp_path / "killed"
    out = tmp_path / "out"
    # Two stacks: test_vit's second cell runs in a new worker after the first one's death.
    proc = start("run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", image_folder, "-b", "cpu,cpu+channels-last",
                  "--executor", "subprocess", "--out", out,
                  env=with_site(site, RBENCH_TEST_KILLED=str(killed), TMPDIR=str(tmp_path)))
    _, err = proc.communicate(timeout=HANG_GUARD)
    assert killed.exists(), "the test's worker should have been killed"
    assert proc.returncode == 1, err[-3000:]  # the grid finished, with a failure
    assert "Traceback" not in err
    (failure,) = failures(out)
    assert (failure["model"], failure["backend"], failure["status"]) == ("test_vit@random", "cpu", "crashed")
    assert "SIGKILL" in failure["message"]
    done = {(r["cell"]["model"], r["cell"]["backend"]): r["status"] for r in records(out / "store")}
    assert done == {("test_vit", "cpu"): "crashed", ("test_vit", "cpu+channels-last"): "ok",
                    ("test_byobnet", "cpu"): "ok", ("test_byobnet", "cpu+channels-last"): "ok"}
    assert not list(tmp_path.glob("rbench-job-*.json"))  # the job file the worker never read is gone


# --- started with SIGINT ignored (`cmd &` in a script) ----------------------------------------

# At its first batch the cell runs a polars query that waits for the test's go-ahead, so the
# group's SIGINT lands inside it (polars turns a SIGINT caught during a query into a
# KeyboardInterrupt); it also writes what the kernel says of its signals.
GATE_PLUGIN = '''
import os
import time
from pathlib import Path

import rbench


def _wait(series):
    gate = Path(os.environ["RBENCH_TEST_GATE"])
    (gate / "status.tmp").write_text(Path("/proc/self/status").read_text())
    os.replace(gate / "status.tmp", gate / "reached")
    while not (gate / "go").exists():
        time.sleep(0.01)
    return series


def _gate(batch):
    import polars as pl

    if not (Path(os.environ["RBENCH_TEST_GATE"]) / "reached").exists():
        pl.DataFrame({"a": [0]}).select(pl.col("a").map_batches(_wait))
    return batch


@rbench.hookimpl
def rbench_backends():
    return [rbench.BackendSpec(name="gate", description="waits inside a polars query", modifier=True,
                               prepare_input=_gate)]
'''


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("executor", ["subprocess", "local"])
def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(tmp_path, image_folder, executor):
    site = tmp_path / "site"
    make_distribution(site, "gateplug", {"rbench.backends": {"gate": "gateplug_mod"}}, {"gateplug_mod": GATE_PLUGIN})
    gate = tmp_path / "gate"
    gate.mkdir()
    out = tmp_path / "out"
    proc = start("run", "-m", "test_vit", *QUICK, "--data-dir", image_folder, "-b", "cpu+gate", "--batch-size", "8",
                  "--executor", executor, "--out", out, env=with_site(site, RBENCH_TEST_GATE=str(gate)),
                  preexec_fn=_ignore_sigint, start_new_session=True)
    try:
        wait_for(gate / "reached", proc)
        ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", (gate / "reached").read_text(), re.M).group(1), 16)
        os.killpg(proc.pid, signal.SIGINT)  # what a Ctrl-C in the script's terminal sends
        (gate / "go").touch()
        _, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert [r["status"] for r in records(out / "store")] == ["ok"]
    assert not (out / "failures.csv").exists()
    assert ignored & (1 << (signal.SIGINT - 1)), "the cell's process no longer ignores SIGINT"


# --- Ctrl-C: the count of kept cells is the store's ------------------------------------------

def test_ctrl_c_in_the_metadata_phase_counts_the_records_the_store_holds(tmp_path, monkeypatch):
    real = rbench.files.write_atomic
    written = []

    def ctrl_c_at_the_second_record(path, write):
        if Path(path).parent.name == "records":
            written.append(path)
            if len(written) == 2:
                raise KeyboardInterrupt
        return real(path, write)

    monkeypatch.setattr(rbench.files, "write_atomic", ctrl_c_at_the_second_record)
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit,test_byobnet,test_efficientnet", "--weights", "random",
                          "--bench", "metadata", "--workers", "0", "--out", str(out))
    assert result.exit_code == 130, result.output
    kept = re.search(r"interrupted: (\d+) finished cell\(s\) are kept", result.stderr)
    assert kept, result.stderr
    assert int(kept.group(1)) == len(records(out / "store")) == 1


# rbench started as its console script: the script's folder is first on the path, not the working directory.
# More than one model's metadata then runs in parallel processes (one build per process is enough).
CONSOLE_SCRIPT = """import sys
import rbench.worker.metadata
rbench.worker.metadata.BUILDS_PER_PROCESS = 1
from rbench.frontend.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


@pytest.mark.parametrize("clone", ["empty", "raising"])
def test_rbench_runs_from_a_folder_that_holds_a_folder_named_rbench(tmp_path, image_folder, clone):
    here = tmp_path / "here"
    (here / "rbench").mkdir(parents=True)
    if clone == "raising":
        (here / "rbench" / "__init__.py").write_text("raise RuntimeError('this is the clone, not the installed rbench')\n")
    script = tmp_path / "bin" / "rbench_script.py"
    script.parent.mkdir()
    script.write_text(CONSOLE_SCRIPT)
    out = tmp_path / "out"

    def rbench_here(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), "run", *args, "--out", str(out)], cwd=here,
                              capture_output=True, text=True, timeout=HANG_GUARD)

    # validation alone: the default executor (local)
    local = rbench_here("-m", "test_vit", *QUICK, "--data-dir", str(image_folder))
    assert local.returncode == 0, local.stderr
    # a worker process per model, and the metadata of two models in two processes
    apart = rbench_here("-m", "test_vit,test_efficientnet", "--weights", "random", "--bench", "validate,infer,metadata",
                        "--executor", "subprocess", "--workers", "2", "--img-size", "32", "--data-dir",
                        str(image_folder), "--batch-size", "2", "--warmup-steps", "0", "--bench-steps", "2",
                        "--bench-seconds", "0", "--bench-repeats", "1")
    assert apart.returncode == 0, apart.stderr
    assert "ImportError" not in apart.stderr and not (out / "failures.csv").exists()

    def rows(name: str) -> list[dict[str, str]]:
        with open(out / name, newline="") as f:
            return list(csv.DictReader(f))

    assert sorted(r["model"].split("@")[0].split(".")[0] for r in rows("results-imagefolder.csv")) == ["test_efficientnet", "test_vit"]
    (benchmark,) = out.glob("benchmark-infer-*.csv")
    assert sorted(r["model"].split("@")[0].split(".")[0] for r in rows(benchmark.name)) == ["test_efficientnet", "test_vit"]
    metadata = rows("model_metadata.csv")
    assert sorted(r["architecture"] for r in metadata) == ["test_efficientnet", "test_vit"]
    assert all(r["param_count"] and r["gmacs"] and not r["note"] for r in metadata)  # counted in the workers


# --- a cell's recorded time excludes its worker's start ----------------------------------------

# Imported by every Python process of the run (it is on PYTHONPATH): in a worker process (or the
# fork server that starts workers), importing torch or timm takes 1000 s on the clock that cells
# are timed with, so a cell that pays for a worker's imports is recorded as taking 1000 s or more.
SLOW_IMPORTS = '''
import sys
import time

argv = getattr(sys, "orig_argv", [])
if any("rbench.worker.worker" in arg for arg in argv[1:-1]):
    _real, _shift = time.time, [0.0]
    time.time = lambda: _real() + _shift[0]

    class _SlowImports:
        def find_spec(self, name, path=None, target=None):
            if name in ("torch", "timm"):
                _shift[0] += 1000.0
            return None

    sys.meta_path.insert(0, _SlowImports())
'''


def test_a_cells_recorded_seconds_exclude_its_workers_start(tmp_path, image_folder):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_IMPORTS)
    out = tmp_path / "out"
    proc = start("run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", image_folder, "-b", "cpu,cpu+channels-last",
                 "--executor", "subprocess", "--out", out, env=with_site(site))
    _, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, err[-3000:]
    done = records(out / "store")
    assert [r["status"] for r in done] == ["ok"] * 4
    assert all(0 <= r["provenance"]["seconds"] < 1000 for r in done), [r["provenance"]["seconds"] for r in done]


# --- a crash inside a cell, and the death of the process that starts the workers -------------

# At its first batch, the cell of the model named by RBENCH_TEST_CRASH ("MODEL:segfault" or
# "MODEL:parent") dereferences a null pointer, or kills its worker's parent process with SIGKILL
# (the fork server that started the worker; the run's own process must never be its parent).
CRASH_PLUGIN = '''
import ctypes
import os
import signal

import rbench

_model = None


def _remember(model):
    global _model
    _model = type(model).__name__.lower()
    return model


def _crash(batch):
    name, how = os.environ["RBENCH_TEST_CRASH"].split(":")
    if _model == name:
        if how == "segfault":
            ctypes.string_at(0)
        os.kill(os.getppid(), signal.SIGKILL)
    return batch


@rbench.hookimpl
def rbench_backends():
    return [rbench.BackendSpec(name="crash", description="a crash in one model's cell", modifier=True,
                               prepare_model=_remember, prepare_input=_crash)]
'''


@pytest.mark.parametrize("how", ["segfault", "parent"])
def test_a_crash_in_a_cell_or_of_the_fork_server_fails_that_cell_only(tmp_path, image_folder, how):
    site = tmp_path / "site"
    make_distribution(site, "crashplug", {"rbench.backends": {"crash": "crashplug_mod"}}, {"crashplug_mod": CRASH_PLUGIN})
    out = tmp_path / "out"
    proc = start("run", "-m", "test_vit,test_byobnet,test_efficientnet", *QUICK, "--data-dir", image_folder,
                 "-b", "cpu+crash", "--executor", "subprocess", "--out", out,
                 env=with_site(site, RBENCH_TEST_CRASH=f"byobnet:{how}"))
    _, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 1, err[-3000:]  # the grid finished, with a failure
    assert "Traceback" not in err
    (failure,) = failures(out)
    assert (failure["model"], failure["status"]) == ("test_byobnet@random", "crashed")
    expected = "SIGSEGV" if how == "segfault" else "fork server died, killed by SIGKILL"
    assert expected in failure["message"], failure["message"]
    done = {r["cell"]["model"]: r["status"] for r in records(out / "store")}
    assert done == {"test_vit": "ok", "test_byobnet": "crashed", "test_efficientnet": "ok"}
