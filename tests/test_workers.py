"""Worker processes: a worker that floods stderr, and one killed before its first cell.

Every wait here is on a file or a process, never on a clock; the timeouts only guard against a
hang and are far above what any of these runs takes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import make_distribution

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
if "rbench.worker" in argv:
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
    assert (failure["model"], failure["backend"], failure["status"]) == ("test_vit", "cpu", "crashed")
    assert "SIGKILL" in failure["message"]
    done = {(r["cell"]["model"], r["cell"]["backend"]): r["status"] for r in records(out / "store")}
    assert done == {("test_vit", "cpu"): "crashed", ("test_vit", "cpu+channels-last"): "ok",
                    ("test_byobnet", "cpu"): "ok", ("test_byobnet", "cpu+channels-last"): "ok"}
    assert not list(tmp_path.glob("rbench-job-*.json"))  # the job file the worker never read is gone
