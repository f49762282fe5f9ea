"""The subprocess executor: each model's cells in a fresh Python process.

A model's allocator cache, compiled graphs and threads die with its process, so they never
slow the next model. A cell past `--cell-timeout`, or a process that dies (a segfault, the
kernel's OOM killer), fails that cell only: the model's remaining cells go on in a new process.
A worker dies with its parent (on Linux, the kernel kills it; elsewhere it stops at its next
event): a cell interrupted so stays pending, never a failure, and the same command resumes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from itertools import groupby

import rbench


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to kill it when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker stops at its next event instead
        pass


def _run_group(grid: rbench.Grid, cells: list[rbench.Cell]):
    """Run one model's cells in worker processes; yields their outcomes."""
    pending = list(cells)
    while pending:
        # The worker removes the job file once read; the parent removes it if the worker never did.
        with tempfile.NamedTemporaryFile("w", prefix="rbench-job-", suffix=".json", delete=False) as f:
            json.dump(grid.job(pending).to_json(), f)
            job_file = f.name
        proc = subprocess.Popen([sys.executable, "-m", "rbench.worker", job_file], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                preexec_fn=_die_with_parent)
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        current, started = None, time.monotonic()
        try:
            while True:
                wait = None
                if grid.cell_timeout and current is not None:
                    wait = max(0.0, started + grid.cell_timeout - time.monotonic())
                if not selector.select(wait):  # the current cell ran past its timeout
                    proc.kill()
                    proc.wait()
                    yield rbench.record_failure(grid, current, "timeout", f"ran past --cell-timeout {grid.cell_timeout:g} s")
                    pending = pending[pending.index(current) + 1:]
                    break
                line = proc.stdout.readline()
                if not line:  # the worker exited
                    proc.wait()
                    if current is not None:  # it died inside a cell
                        error = (proc.stderr.read().strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                        yield rbench.record_failure(grid, current, "crashed", f"worker process died: {error}")
                        pending = pending[pending.index(current) + 1:]
                    elif proc.returncode != 0:
                        raise RuntimeError(f"rbench worker failed before its first cell: {proc.stderr.read()[-2000:]}")
                    else:
                        pending = []
                    break
                event = json.loads(line)
                cell = next(c for c in pending if c.key == event["key"])
                if event["event"] == "start":
                    current, started = cell, time.monotonic()
                grid.on_event(event)
                if event["event"] == "done":
                    current = None
                    yield rbench.CellOutcome(cell=cell, status=event["status"], message=event["message"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(job_file)


def execute(grid: rbench.Grid):
    for _, cells in groupby(grid.cells, key=lambda c: c.model):
        yield from _run_group(grid, list(cells))


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(name="subprocess", description="each model in a fresh process (isolates benchmarks)",
                                execute=execute)]
