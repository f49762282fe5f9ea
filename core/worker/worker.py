"""The subprocess executor's worker (`command(JOB.json)`, or `python -m rbench.worker.worker
JOB.json`): run a job's cells in this process. Each event is one JSON line on stdout; a cell's last line is its `done`
event, which carries the cell's outcome with its record (`CellOutcome.to_json`) for the parent
to store. Anything else that code prints goes to stderr, so it cannot be mistaken for an event.
The job file is removed once read. When the parent is gone (an event cannot be written), the
worker exits at once, recording nothing: the cell it was running stays pending.

Workers are forked from a fork server (`server_command`, `serve`): a process that imports what
every cell needs (torch, timm, rbench's worker modules, the plugins) once, and never runs a cell
itself, so a worker starts without importing anything and its first cell is timed without the
imports. The server starts with the job of its first worker, and forks one more worker for each
job the parent sends it over a Unix socket, with that worker's stdout and stderr pipes, working
directory and environment; it tells the parent when each of its workers ends, and how."""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn


# `python -m` and `python -c` put the working directory first on the path, where a folder named
# `rbench` (a clone of the project) would shadow the installed package; this entry drops it
# before importing rbench (`python -P` does the same from Python 3.11 only).
_ENTRY = ("import sys\n"
          "if sys.path[:1] == ['']: del sys.path[0]\n"
          "from rbench.worker.worker import main\n"
          "sys.exit(main(sys.argv))\n")
# The fork server's entry: `serve` returns only in a forked worker, with that worker's arguments.
_SERVER_ENTRY = ("import sys\n"
                 "if sys.path[:1] == ['']: del sys.path[0]\n"
                 "from rbench.worker.worker import serve, work\n"
                 "work(serve(sys.argv))\n")

# What the fork server imports before it forks a worker: what any cell imports. Not polars:
# importing it starts threads (its allocator's, a spill cleaner), which a fork would not copy.
PRELOAD = ("torch", "torchvision.transforms", "timm", "timm.data", "timm.models", "PIL.Image", "numpy",
           "safetensors", "huggingface_hub", "rbench.record", "rbench.store", "rbench.predictions",
           "rbench.worker.jobs", "rbench.worker.cells", "rbench.worker.models", "rbench.worker.backends",
           "rbench.worker.data", "rbench.worker.validate", "rbench.worker.benchmark", "rbench.worker.input_cache",
           "rbench.worker.metadata", "rbench.worker.metadevice")
# Forking a process that loaded torch's libraries is safe on Linux; elsewhere (macOS's system
# libraries) it is not, and the server imports nothing: each worker imports what it needs.
PRELOADS = sys.platform.startswith("linux")


def command(job_file: str) -> list[str]:
    """The command line of a worker process that runs the job in `job_file`, whatever the
    working directory holds."""
    return [sys.executable, "-c", _ENTRY, job_file]


def server_command(control_fd: int, log_fd: int, job_file: str) -> list[str]:
    """The command line of a fork server (`serve`) whose first worker runs the job in `job_file`
    with the server's stdout and stderr. `control_fd`: the server's end of a Unix stream socket
    to the parent (the requests, the ends of workers); `log_fd`: where the server writes its own
    errors once its first worker runs. Both are to be inherited (`subprocess.Popen(pass_fds=...)`)."""
    return [sys.executable, "-c", _SERVER_ENTRY, str(control_fd), str(log_fd), job_file]


def main(argv: list[str]) -> int:
    from .cells import Job
    from .jobs import keep_sigint_ignored, run_cells

    keep_sigint_ignored()
    events = sys.stdout
    sys.stdout = sys.stderr
    with open(argv[1]) as f:
        job = Job.from_json(json.load(f))
    os.unlink(argv[1])

    def emit(event: dict) -> None:
        try:
            events.write(json.dumps(event) + "\n")
            events.flush()
        except (BrokenPipeError, OSError):  # the parent died: nobody will read this cell's result
            os._exit(3)

    for outcome in run_cells(job, on_event=emit):
        emit({"event": "done", "key": outcome.cell.key, "status": outcome.status, "message": outcome.message,
              "outcome": outcome.to_json()})
    return 0


def work(argv: list[str]) -> NoReturn:
    """Run `main` in a forked worker, and end it as multiprocessing ends its forked children:
    its exit handlers run and its output is flushed, but the interpreter is not torn down (with
    torch loaded that takes half a second, and the process's memory goes with it anyway). An
    uncaught exception is printed, and a KeyboardInterrupt ends it by SIGINT, as in a fresh worker."""
    import atexit
    import signal
    import traceback

    code, interrupted = 1, False
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - printed, as an uncaught exception would be
        traceback.print_exc()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__):
        try:
            stream.flush()
        except (OSError, ValueError):  # the parent is gone, or the stream was closed
            pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def serve(argv: list[str]) -> list[str]:
    """Run the fork server of `server_command`'s arguments. Returns only in a forked worker: the
    `main` arguments of its job, for `work`. The parent's requests are JSON lines on the control socket:
    `{"worker": ID, "job": FILE, "cwd": DIR, "env": {...}}`, sent with the worker's stdout and
    stderr (two file descriptors), and `{"kill": ID}`; the server answers `{"exited": ID,
    "status": WAIT_STATUS}` when a worker has ended (the first worker's ID is 0). It exits when
    the parent closes the socket, and with the parent (Linux kills it; elsewhere, at its next
    answer)."""
    import gc
    import selectors
    import signal
    import socket

    control = socket.socket(fileno=int(argv[1]))
    log_fd, first_job = int(argv[2]), argv[3]
    threads = _preload() if PRELOADS else None
    fork_safe = _fork_safe()
    # What the server holds stays for good: the garbage collector of each worker (rbench collects
    # between models and stacks, and at exit) need not walk torch's and timm's modules again.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector below
    server = os.getpid()
    workers: dict[int, int] = {}  # ID -> pid, until reaped
    sigint = signal.getsignal(signal.SIGINT)  # what each worker gets, as a fresh one would

    def fork(worker: int, job_file: str, pipes: list[int], cwd: str | None, env: dict | None) -> list[str] | None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            workers[worker] = pid
            return None
        # The worker: what a fresh worker process would have, on the descriptors it was sent.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, sigint)
        for fd in (control.detach(), wake_r, wake_w, log_fd):
            os.close(fd)
        _die_with(server)
        if pipes:
            os.dup2(pipes[0], 1)
            os.dup2(pipes[1], 2)
            os.close(pipes[0])
            os.close(pipes[1])
        if cwd is not None:
            os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if not fork_safe:  # the server holds threads or a CUDA context: a fresh process instead
            os.execv(sys.executable, command(job_file))
        if "numpy" in sys.modules:  # a fresh process seeds it from the system (`random` reseeds itself)
            sys.modules["numpy"].random.seed()
        if threads is not None:  # torch's default, which the server set to one
            sys.modules["torch"].set_num_threads(threads)
        sys.argv[:] = ["-c", job_file]
        return sys.argv

    if (worker_args := fork(0, first_job, [], None, None)) is not None:
        return worker_args
    # A Ctrl-C is the parent's to handle; the server ends with it. The server's own output from
    # now on: none on stdout, errors to the parent's stderr.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)

    def answer(message: dict) -> None:
        try:
            control.sendall(json.dumps(message).encode() + b"\n")
        except OSError:  # the parent is gone: so are its workers
            _end(workers)

    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    inbox, received = b"", []
    while True:
        for key, _ in selector.select():
            if key.fileobj is not control:
                os.read(wake_r, 4096)  # the signals' bytes; more are read at the next wake
                for worker, status in _reaped(workers):
                    answer({"exited": worker, "status": status})
                continue
            data, fds, _, _ = socket.recv_fds(control, 65536, 16)
            if not data:  # the parent closed the socket, or died
                _end(workers)
            inbox += data
            received += fds
            *lines, inbox = inbox.split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "job" in request:
                    pipes, received = received[:2], received[2:]
                    worker_args = fork(request["worker"], request["job"], pipes, request["cwd"], request["env"])
                    if worker_args is not None:
                        selector.close()
                        return worker_args
                    for fd in pipes:
                        os.close(fd)
                elif request.get("kill") in workers:
                    os.kill(workers[request["kill"]], signal.SIGKILL)


def _preload() -> int | None:
    """Import `PRELOAD` and the plugins, keeping SIGINT's disposition (a plugin may import
    polars, which replaces an inherited SIG_IGN), and run torch's common CPU kernels once on one
    thread: their first call in a process sets libraries up (0.2 to 0.3 s), which each worker
    would otherwise do again in its first batch; one thread starts no thread pool. What fails to import is left to
    the worker, which meets the error where a fresh worker would. Returns torch's default
    number of threads (None without torch), which each worker sets back."""
    import importlib
    import signal

    sigint = signal.getsignal(signal.SIGINT)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the worker imports it again, and fails there
            pass
    try:
        from ..registry import get_registry

        get_registry()
    except Exception:  # noqa: BLE001 - as above
        pass
    if sigint is not None:
        signal.signal(signal.SIGINT, sigint)
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            x = torch.nn.functional.conv2d(torch.zeros(2, 3, 16, 16), torch.zeros(8, 3, 3, 3))
            x = torch.nn.functional.layer_norm(torch.nn.functional.gelu(x), x.shape[1:])
            torch.nn.functional.linear(x.mean((2, 3)), torch.zeros(4, 8)).softmax(-1)
    except Exception:  # noqa: BLE001 - a warm-up only: the worker runs these kernels anyway
        pass
    return threads


def _fork_safe() -> bool:
    """Whether a fork of this process is a sound worker: no other thread (a fork copies only the
    caller, and a lock another thread held stays locked) and no CUDA context (CUDA cannot be
    used again in a forked child). Native pools that stop themselves before a fork (OpenBLAS's)
    and torch's own, which starts on first use, are not threads yet."""
    import threading

    torch = sys.modules.get("torch")
    return threading.active_count() == 1 and not (torch is not None and torch.cuda.is_initialized())


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (PR_SET_PDEATHSIG); exit now if it
    already has. Elsewhere a worker stops at its next event instead."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(3)


def _reaped(workers: dict[int, int]) -> list[tuple[int, int]]:
    """The workers that ended since the last call, with their wait status; removed from `workers`."""
    ended = []
    for worker, pid in list(workers.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ended.append((worker, status))
            del workers[worker]
    return ended


def _end(workers: dict[int, int]) -> None:
    """Kill the workers still running and exit."""
    import signal

    for pid in workers.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
