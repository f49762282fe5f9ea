"""The subprocess executor: each model's cells in a worker process of its own.

A model's allocator cache, compiled graphs and threads die with its process, so they never
slow the next model. The workers are forked from a fork server (`rbench.worker_server_command`)
that has imported torch, timm and the plugins once, so a worker starts at once and its first
cell's time holds no imports. A cell past `--cell-timeout`, or a process that dies (a segfault,
the kernel's OOM killer), fails that cell only: the model's remaining cells go on in a new
process. A worker that dies between cells or before its first one (killed while it starts)
fails the cell it was about to run, so a model's cells always end; so does the death of the
fork server, which is started again for the next worker.
A worker dies with its parent (on Linux, the kernel kills it; elsewhere it stops at its next
event): a cell interrupted so stays pending, never a failure, and the same command resumes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import BinaryIO

import rbench


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to kill it when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker stops at its next event instead
        pass


STDERR_TAIL = 8192  # bytes of a worker's stderr kept for the message of its death


def _worker_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


class _ForkServer:
    """A fork server process (`rbench.worker_server_command`), started with the job of its
    first worker (`first`, which writes to the server's own stdout and stderr); `start` asks
    it for one more worker. It reports on a Unix socket when each worker has ended."""

    def __init__(self, job_file: str):
        ours, theirs = socket.socketpair()
        log = os.dup(2)  # where the server writes its own errors: this process's stderr
        try:
            self.proc = subprocess.Popen(rbench.worker_server_command(theirs.fileno(), log, job_file),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_worker_environment(),
                                         pass_fds=(theirs.fileno(), log), preexec_fn=_die_with_parent)
        finally:
            theirs.close()
            os.close(log)
        self.control, self.inbox, self.next_id = ours, b"", 1
        self.ended: dict[int, int] = {}  # worker ID -> wait status, until asked for
        self.gone = False  # the socket closed: the server died (or is about to)
        self.first = _Worker(self, 0, self.proc.stdout, self.proc.stderr)

    def alive(self) -> bool:
        return not self.gone and self.proc.poll() is None

    def start(self, job_file: str) -> _Worker | None:
        """A new worker running the job in `job_file`, with this process's working directory and
        environment; None when the server is gone."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        worker, self.next_id = self.next_id, self.next_id + 1
        request = {"worker": worker, "job": job_file, "cwd": os.getcwd(), "env": _worker_environment()}
        try:
            socket.send_fds(self.control, [json.dumps(request).encode() + b"\n"], [out_w, err_w])
        except OSError:
            os.close(out_r)
            os.close(err_r)
            return None
        finally:  # the worker holds the writing ends now (or nobody: its reader sees the end)
            os.close(out_w)
            os.close(err_w)
        return _Worker(self, worker, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0))

    def kill(self, worker: int) -> None:
        with contextlib.suppress(OSError):
            self.control.sendall(json.dumps({"kill": worker}).encode() + b"\n")

    def wait(self, worker: int) -> int | None:
        """The wait status of `worker` once it has ended; None when the server died first (its
        workers die with it)."""
        while worker not in self.ended and not self.gone:
            data = self.control.recv(65536)
            if not data:
                self.gone = True
            *lines, self.inbox = (self.inbox + data).split(b"\n")
            for line in lines:
                message = json.loads(line)
                self.ended[message["exited"]] = message["status"]
        return self.ended.pop(worker, None)

    def death(self) -> str:
        """Why the server ended: the signal that killed it or its exit status."""
        self.proc.wait()
        return _how(self.proc.returncode)

    def close(self) -> None:
        """End the server (its workers die with it) and wait for it."""
        self.control.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class _Worker:
    """One worker process running a job, forked by `server`. Both its pipes are always drained: a worker
    that writes more to stderr than a pipe holds (warnings, a library's log) would otherwise
    block on it forever. Only the end of stderr is kept, to say why a worker died."""

    def __init__(self, server: _ForkServer, worker: int, stdout: BinaryIO, stderr: BinaryIO):
        self.server, self.id, self.stdout, self.stderr = server, worker, stdout, stderr
        self.status: int | None = None
        self.ended = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout, selectors.EVENT_READ)
        self.selector.register(self.stderr, selectors.EVENT_READ)
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
                if key.fileobj is self.stderr:
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

    def _wait(self) -> None:
        if not self.ended:
            self.status, self.ended = self.server.wait(self.id), True

    def death(self) -> str:
        """Why the worker ended: the signal that killed it or its exit status (or the fork
        server's death), and its last line on stderr."""
        self._wait()
        if self.stderr_open:
            # What it wrote before it exited; never wait for more (a child of it may hold the pipe).
            os.set_blocking(self.stderr.fileno(), False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(self.stderr.fileno(), 65536):
                    self._keep(chunk)
        if self.status is None:
            how = f"its fork server died, {self.server.death()}"
        else:
            how = _how(os.waitstatus_to_exitcode(self.status))
        last = next((line for line in reversed(self.tail.decode(errors="replace").splitlines()) if line.strip()), "")
        return f"{how} ({last.strip()[:500]})" if last else how

    def kill(self) -> None:
        if not self.ended:
            self.server.kill(self.id)
            self._wait()

    def close(self) -> None:
        self.kill()
        self.selector.close()
        self.stdout.close()
        self.stderr.close()


def _how(code: int) -> str:
    """A process's end as `Popen.returncode` says it: killed by a signal, or its exit status."""
    return f"killed by {_signal_name(-code)}" if code < 0 else f"exit status {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Workers:
    """Starts workers from one fork server, and a new server when there is none or it died."""

    def __init__(self):
        self.server: _ForkServer | None = None

    def start(self, job_file: str) -> _Worker:
        if self.server is not None and self.server.alive():
            worker = self.server.start(job_file)
            if worker is not None:
                return worker
        self.close()
        self.server = _ForkServer(job_file)
        return self.server.first

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def _run_group(grid: rbench.Grid, cells: list[rbench.Cell], workers: _Workers):
    """Run one model's cells in worker processes; yields their outcomes."""
    pending = list(cells)
    while pending:
        # The worker removes the job file once read; the parent removes it if the worker never did.
        with tempfile.NamedTemporaryFile("w", prefix="rbench-job-", suffix=".json", delete=False) as f:
            json.dump(grid.job(pending).to_json(), f)
            job_file = f.name
        worker = workers.start(job_file)
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
    workers = _Workers()
    try:
        for _, cells in groupby(grid.cells, key=lambda c: c.model):
            yield from _run_group(grid, list(cells), workers)
    finally:
        workers.close()


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(name="subprocess", description="each model in a fresh process (isolates benchmarks)",
                                execute=execute, default_for="benchmarks")]
