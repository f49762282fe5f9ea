"""Nothing lost, nothing silent: faults a user can meet, found before the run or survived in it."""

from __future__ import annotations

import csv
import hashlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rbench
import rbench.files
import rbench.registry
from rbench import DatasetSpec, Source, ViewSpec, hookimpl
from rbench.registry import load_registry

from .conftest import Hold, invoke_apart

QUICK = ["--weights", "random", "--bench", "validate", "--workers", "0", "--img-size", "32"]


def _default_sigint() -> None:
    # A test run started in the background (`cmd &` in a script) ignores SIGINT, and rbench keeps
    # an inherited ignore: the run under test gets the default, as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def rbench_process(*args, env=None, **kwargs):
    kwargs.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen([sys.executable, "-m", "rbench", *args], env={**os.environ, **(env or {})}, **kwargs)


def records(store: Path) -> list[Path]:
    return sorted((store / "records").glob("*.json"))


# --- 1. a kill -9 of the parent leaves the worker's cell pending -----------------------------

def test_kill_9_of_the_parent_leaves_the_cell_pending_and_the_worker_dies_with_it(tmp_path, images):
    hold = Hold(tmp_path)
    out = tmp_path / "out"
    args = ["run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "-b", "cpu+hold", "--batch-size", "1",
            "--executor", "subprocess", "--out", str(out)]
    parent = rbench_process(*args, env={**hold.env(at=3), "TMPDIR": str(tmp_path)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        (worker,) = set(hold.wait_for(3, parent))  # inside the cell, held at its third batch of 9
        assert worker != parent.pid and "rbench.worker.worker" in Path(f"/proc/{worker}/cmdline").read_text()
        parent.send_signal(signal.SIGKILL)  # the parent alone, not its process group
        parent.wait()
    finally:
        parent.kill()  # (already killed, unless the test failed before)
        hold.let_go()  # the worker goes on, and must notice that its parent is gone
    deadline = time.monotonic() + 120  # a generous limit on the wait, not a measure of speed
    while time.monotonic() < deadline and worker_alive(worker):
        time.sleep(0.1)
    assert not worker_alive(worker), "the worker ran on after its parent died"
    assert len(hold.pids()) < 9  # it stopped within the cell
    assert records(out / "store") == []  # no failure that never happened
    assert not list(tmp_path.glob("rbench-job-*.json"))  # the job file went with the worker
    again = subprocess.run([sys.executable, "-m", "rbench", *args], env={**os.environ, **hold.env(), "TMPDIR": str(tmp_path)},
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "1 cell(s) to run" in again.stdout
    assert [r["model"] for r in csv.DictReader((out / "results-imagefolder.csv").open())] == ["test_vit@random"]
    assert not (out / "failures.csv").exists()


def worker_alive(pid: int) -> bool:
    """Whether `pid` is still an rbench worker (an exited one may linger as a zombie, without a command line)."""
    try:
        return "rbench.worker.worker" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


# --- 3. folders that cannot be written, and a full disk --------------------------------------

def test_an_out_folder_that_is_a_file_or_cannot_be_written_is_one_line_before_any_model(tmp_path, images, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        result = invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(out))
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "rbench: error:" in result.stderr and str(blocker) in result.stderr
    denied = tmp_path / "denied"

    def refuse(*args, dir=None, **kwargs):  # root ignores modes: inject what a read-only folder says
        if dir is not None and Path(dir) == denied / "store":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    real_mkstemp = rbench.files.tempfile.mkstemp
    monkeypatch.setattr(rbench.files.tempfile, "mkstemp", refuse)
    result = invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(denied))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"rbench: error: --store {denied / 'store'}: cannot write there (Permission "
                                     "denied); pass a folder you can write to")


def test_a_full_disk_during_the_run_is_one_line_and_loses_nothing(tmp_path, images, monkeypatch):
    out = tmp_path / "out"
    args = ["run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", str(images), "--out", str(out)]
    real = rbench.files.write_atomic
    writes = {"records": 0}

    def fill_up(path, write):
        if Path(path).parent.name == "records":
            writes["records"] += 1
            if writes["records"] == 2:  # the second cell's record: the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    monkeypatch.setattr(rbench.files, "write_atomic", fill_up)
    result = invoke_apart(*args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("rbench: error: No space left on device writing ") and "run the same command again" in line
    assert len(records(out / "store")) == 1
    monkeypatch.setattr(rbench.files, "write_atomic", real)
    again = invoke_apart(*args)
    assert again.exit_code == 0 and "1 cell(s) to run" in again.output
    clean = invoke_apart("run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", str(images), "--out", str(tmp_path / "c"))
    assert clean.exit_code == 0
    assert (out / "results-imagefolder.csv").read_bytes() == (tmp_path / "c" / "results-imagefolder.csv").read_bytes()


# --- 4, 5. malformed records, truncated records, a corrupt grid file ------------------------

@pytest.mark.parametrize("damage", [
    lambda r: {**r, "entries": "oops"},
    lambda r: {**r, "entries": [{"table": "benchmark", "kind": "infer", "tag": "x", "row": {"infer_samples_per_sec": "abc"}}]},
    lambda r: {**r, "version": "???"},
])
def test_a_malformed_record_is_named_quarantined_and_its_cell_runs_again(tmp_path, images, damage):
    out = tmp_path / "out"
    args = ["run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(out)]
    assert invoke_apart(*args).exit_code == 0
    (path,) = records(out / "store")
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(tmp_path / "report"))
    assert str(path) in report.stderr and "quarantine" in report.stderr
    assert report.exit_code == 2  # nothing left to report, said in one line
    (kept,) = (out / "store" / "quarantine").iterdir()  # set aside, never deleted
    again = invoke_apart(*args)
    assert again.exit_code == 0, again.output
    assert "1 cell(s) to run" in again.output
    assert len(records(out / "store")) == 1 and kept.exists()


def test_a_truncated_record_is_reported_as_skipped_and_a_corrupt_grid_file_is_named(tmp_path, images):
    out = tmp_path / "out"
    assert invoke_apart("run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", str(images), "--out", str(out)).exit_code == 0
    first, second = records(out / "store")
    first.write_text(first.read_text()[:50])
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(tmp_path / "report"))
    assert report.exit_code == 0
    assert f"{first}: not valid JSON" in report.stderr and "counts as not run" in report.stderr
    (grid,) = (out / "store" / "grids").glob("*.json")
    grid.write_text("{")
    status = invoke_apart("status", "--store", str(out / "store"))
    assert f"{grid}: not a readable grid file" in status.stderr


# --- 9. weights are recorded; one row per model and size --------------------------------------

def test_rows_say_their_weights_and_two_rows_of_one_model_are_never_written_silently(tmp_path, images):
    from safetensors.torch import save_file

    from rbench.worker.models import create_model

    ckpt = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("test_vit", "random").state_dict().items()}, str(ckpt))
    store = tmp_path / "store"
    for weights in ("random", str(ckpt)):
        result = invoke_apart("run", "-m", "test_vit", *QUICK[2:], "--weights", weights, "--data-dir", str(images),
                        "--out", str(tmp_path / weights.replace("/", "_")), "--store", str(store))
        assert result.exit_code == 0, result.output
    report = invoke_apart("report", "--store", str(store), "--out", str(tmp_path / "report"))
    assert report.exit_code == 0
    # Two weights of one model are two rows, each named by its weights.
    assert "two rows" not in report.stderr
    metrics = list(csv.DictReader((tmp_path / "report" / "metrics-imagefolder.csv").open()))
    own = f"test_vit@ckpt-{hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12]}"
    assert {(m["model"], m["weights"]) for m in metrics} == {("test_vit@random", "random"),
                                                             (own, "checkpoint:mine.safetensors")}


# --- 10. two runs on one store: one waits, no cell runs twice ---------------------------------

def test_a_second_run_on_a_busy_store_waits_and_runs_no_cell_twice(tmp_path, images):
    hold = Hold(tmp_path)
    args = ["run", "-m", "test_vit,test_byobnet,test_efficientnet", *QUICK, "--data-dir", str(images),
            "-b", "cpu+hold", "--batch-size", "1", "--executor", "local", "--out", str(tmp_path / "out")]
    # The first run holds the store, stopped at its first batch until the second says it waits.
    first = rbench_process(*args, env=hold.env(at=1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        hold.wait_for(1, first)
        # The second never holds: should it not wait, its batches run at once and show in the log.
        second = rbench_process(*args, env=hold.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        for line in second.stderr:
            said.append(line)
            if "waiting for it to finish" in line:
                break
    finally:
        hold.let_go()
    out2, err2 = second.communicate(timeout=600)
    err2 = "".join(said) + err2
    rest, _ = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err2
    assert "is in use by another rbench run" in err2 and "waiting for it to finish" in err2
    assert "start validate test_efficientnet on imagefolder on cpu" in rest  # the first ran all its cells
    assert "0 cell(s) to run with the local executor, 3 already in the store" in out2
    assert len(records(tmp_path / "out" / "store")) == 3
    assert set(hold.pids()) == {first.pid}  # every batch ran in the first run


# --- 10b. a lock or a store folder that is not what rbench makes ----------------------------

@pytest.mark.parametrize("kind", ["link", "dangling link", "folder", "pipe", "second name"])
def test_a_lock_that_is_not_the_stores_own_file_is_one_line_and_its_target_is_left_intact(tmp_path, images, kind):
    store = tmp_path / "o" / "store"
    store.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("a file of someone's, outside the store\n")
    lock = store / "lock"
    if kind == "link":
        lock.symlink_to(victim)
    elif kind == "dangling link":
        lock.symlink_to(tmp_path / "not-there")
    elif kind == "folder":
        lock.mkdir()
    elif kind == "pipe":
        os.mkfifo(lock)
    else:
        os.link(victim, lock)
    result = invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"rbench: error: the store's lock {lock} is not a plain file of its own") and "remove it" in line
    assert victim.read_text() == "a file of someone's, outside the store\n"
    assert not (tmp_path / "not-there").exists() and records(store) == []


def test_a_store_folder_that_is_a_file_is_one_line(tmp_path, images):
    store = tmp_path / "o" / "store"
    store.mkdir(parents=True)
    (store / "records").write_text("not a folder")
    for command in (["run", "-m", "test_vit", *QUICK, "--data-dir", str(images)], ["report"], ["status"]):
        result = invoke_apart(*command, "--out", str(tmp_path / "o"))
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert f"{store / 'records'}, which is not a folder" in line
    assert (store / "records").read_text() == "not a folder"


def test_the_lock_names_its_holder_while_held_and_is_emptied_after(tmp_path):
    from rbench.store import Store

    store = Store(tmp_path / "store")
    with store.lock():
        assert (tmp_path / "store" / "lock").read_text().startswith(f"pid {os.getpid()} on ")
    assert (tmp_path / "store" / "lock").read_text() == ""


# --- 11. an empty view writes no row --------------------------------------------------------

class EmptyViewSource:
    def __init__(self, root: Path):
        self.root = root

    @hookimpl
    def rbench_datasets(self):
        def load(request):
            from rbench import list_class_folders

            _, samples = list_class_folders(self.root)
            return Source(name="halfempty", root=self.root, samples=samples,
                          views=[ViewSpec(name="halfempty"), ViewSpec(name="halfempty-none", samples=[])])

        return [DatasetSpec(name="halfempty", description="a view with no sample", load=load,
                            views={"halfempty": None, "halfempty-none": "halfempty"})]


def test_an_empty_view_writes_no_row_and_says_why(tmp_path, images, monkeypatch):
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:empty", EmptyViewSource(images))]))
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit", *QUICK, "-d", "halfempty", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "results-halfempty.csv").is_file() and not (out / "results-halfempty-none.csv").exists()
    assert "halfempty-none: no row, the view has no readable sample" in result.stderr
    assert "nan" not in (out / "results-halfempty.csv").read_text()
    # A report from the store's score entries (nothing new) says and writes the same.
    written = (out / "results-halfempty.csv").read_bytes()
    again = invoke_apart("report", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "halfempty-none: no row, the view has no readable sample" in again.stderr
    assert (out / "results-halfempty.csv").read_bytes() == written and not (out / "results-halfempty-none.csv").exists()


# --- 12. files get the umask's mode ---------------------------------------------------------

def test_written_files_get_the_umasks_mode(tmp_path, images):
    previous = os.umask(0o022)
    try:
        assert invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(tmp_path / "o")).exit_code == 0
    finally:
        os.umask(previous)
    written = [p for p in (tmp_path / "o").rglob("*") if p.is_file() and p.name != "lock"]
    assert len(written) >= 5
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}


# --- UX: progress lines, closing line, --dry-run, --limit, Ctrl-C ----------------------------

def test_without_a_terminal_a_line_per_cell_and_a_closing_count(tmp_path, images):
    args = ["run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", str(images), "--out", str(tmp_path / "o")]
    result = invoke_apart(*args)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "start validate test_vit on imagefolder on cpu" in lines and "done  validate test_byobnet on imagefolder on cpu" in lines
    assert any(line.startswith("2 cells: 2 ok, 0 failed, 0 already in the store, in ") for line in lines)
    again = invoke_apart(*args)
    assert any(line.startswith("2 cells: 0 ok, 0 failed, 2 already in the store") for line in again.output.splitlines())


def test_dry_run_prints_the_grid_and_runs_nothing(tmp_path, images):
    out = tmp_path / "o"
    assert invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(out)).exit_code == 0
    result = invoke_apart("run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", str(images), "--out", str(out), "--dry-run")
    assert result.exit_code == 0
    assert "1 done, 1 pending; 9 image(s) to validate" in result.output
    assert len(records(out / "store")) == 1


def test_limit_takes_the_first_images_and_marks_the_rows(tmp_path, images):
    out = tmp_path / "o"
    result = invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(out), "--limit", "4")
    assert result.exit_code == 0
    (row,) = list(csv.DictReader((out / "results-imagefolder.csv").open()))
    assert row["images"] == "4"


def test_ctrl_c_exits_130_with_the_resume_hint(tmp_path, images):
    hold = Hold(tmp_path)
    proc = rbench_process("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "-b", "cpu+hold",
                          "--batch-size", "1", "--executor", "local", "--out", str(tmp_path / "o"), env=hold.env(at=1),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hold.wait_for(1, proc)  # inside the cell, held at its first batch
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        hold.let_go()
        proc.kill()  # nothing left behind should the interrupt have been lost
    assert proc.returncode == 130
    assert "run the same command again to resume" in err
