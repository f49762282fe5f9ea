"""The subprocess executor: each model's cells in a fresh Python process.

A model's allocator cache, compiled graphs and threads die with its process, so they never
slow the next model. A cell past `--cell-timeout`, or a process that dies (a segfault, the
kernel's OOM killer), fails that cell only: the model's remaining cells go on in a new process.
A worker that dies between cells or before its first one (killed while it starts) fails the
cell it was about to run, so a model's cells always end.
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
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import groupby

import rbench


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to kill it when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker stops at its next event instead
        pass


STDERR_TAIL = 8192  # bytes of a worker's stderr kept for the message of its death


class _Worker:
    """One worker process (`rbench.worker_command`) running JOB. Both its pipes are always drained: a worker
    that writes more to stderr than a pipe holds (warnings, a library's log) would otherwise
    block on it forever. Only the end of stderr is kept, to say why a worker died."""

    def __init__(self, job_file: str):
        self.proc = subprocess.Popen(rbench.worker_command(job_file), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     preexec_fn=_die_with_parent)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.selector.register(self.proc.stderr, selectors.EVENT_READ)
        self.tail, self.stderr_open = b"", True

    def lines(self, deadline: Callable[[], float | None]) -> Iterator[str | None]:
        """Each line the worker writes to stdout, until it closes it (it exited); None when
        `deadline()` (a `time.monotonic()` instant, or None for none) has passed."""
        partial = b""
        while True:
            until = deadline()
            if until is not None and time.monotonic() >= until:
                yield None
                continue
            for key, _ in self.selector.select(None if until is None else until - time.monotonic()):
                chunk = os.read(key.fd, 65536)
                if key.fileobj is self.proc.stderr:
                    if chunk:
                        self._keep(chunk)
                    else:
                        self.selector.unregister(key.fileobj)
                        self.stderr_open = False
                    continue
                if not chunk:
                    return
                *complete, partial = (partial + chunk).split(b"\n")
                yield from (line.decode() for line in complete)

    def _keep(self, chunk: bytes) -> None:
        self.tail = (self.tail + chunk)[-STDERR_TAIL:]

    def death(self) -> str:
        """Why the worker ended: the signal that killed it or its exit status, and its last line on stderr."""
        self.proc.wait()
        if self.stderr_open:
            # What it wrote before it exited; never wait for more (a child of it may hold the pipe).
            os.set_blocking(self.proc.stderr.fileno(), False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(self.proc.stderr.fileno(), 65536):
                    self._keep(chunk)
        code = self.proc.returncode
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit status {code}"
        last = next((line for line in reversed(self.tail.decode(errors="replace").splitlines()) if line.strip()), "")
        return f"{how} ({last.strip()[:500]})" if last else how

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.selector.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _run_group(grid: rbench.Grid, cells: list[rbench.Cell]):
    """Run one model's cells in worker processes; yields their outcomes."""
    pending = list(cells)
    while pending:
        # The worker removes the job file once read; the parent removes it if the worker never did.
        with tempfile.NamedTemporaryFile("w", prefix="rbench-job-", suffix=".json", delete=False) as f:
            json.dump(grid.job(pending).to_json(), f)
            job_file = f.name
        worker = _Worker(job_file)
        current, started, done = None, 0.0, set()

        def deadline() -> float | None:
            return started + grid.cell_timeout if grid.cell_timeout and current is not None else None

        try:
            for line in worker.lines(deadline):
                if line is None:  # the current cell ran past its timeout
                    worker.kill()
                    yield rbench.record_failure(grid, current, "timeout", f"ran past --cell-timeout {grid.cell_timeout:g} s")
                    pending = pending[pending.index(current) + 1:]
                    break
                event = json.loads(line)
                cell = next(c for c in pending if c.key == event["key"])
                if event["event"] == "start":
                    current, started = cell, time.monotonic()
                if event["event"] == "done":  # the outcome, with the record for the engine to store
                    current = None
                    done.add(cell.key)
                    yield rbench.CellOutcome.from_json(event["outcome"])
                else:
                    grid.on_event(event)
            else:  # the worker exited
                why = worker.death()
                left = [c for c in pending if c.key not in done]
                if left:
                    # Dead inside a cell, or before one (killed at start, as the OOM killer does):
                    # that cell fails, and the model's next cells go on in a new worker.
                    cell = current or left[0]
                    yield rbench.record_failure(grid, cell, "crashed", f"worker process died: {why}")
                    left = left[left.index(cell) + 1:]
                pending = left
        finally:
            worker.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(job_file)


def execute(grid: rbench.Grid):
    for _, cells in groupby(grid.cells, key=lambda c: c.model):
        yield from _run_group(grid, list(cells))


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(name="subprocess", description="each model in a fresh process (isolates benchmarks)",
                                execute=execute, default_for="benchmarks")]
