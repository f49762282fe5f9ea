"""What data set plugins that build files share: a build run in parallel processes with its
progress (`run_build`, `BuildProgress`), the making of a source's build slice by slice by the
cells that need it (`make_slices`), and the parsing of their data options (`option_choices`,
`option_whole_number`, `check_option_names`). Public API (`rbench.*`): a plugin uses these,
never another plugin's private helpers.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DataError
from .files import write_bytes


class BuildProgress:
    """A build's progress on `stream` (stderr): a rich bar on a terminal, else a line every 10 s
    (and at the end), so that a log shows it too."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)
        else:
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        print(f"{self.label}: {self.done:,}/{self.total:,} files ({100 * self.done / max(1, self.total):.0f}%), "
              f"{rate:.1f} files/s", file=self.stream, flush=True)

    def advance(self, n: int) -> None:
        """Count `n` more files made."""
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif time.monotonic() - self.last >= 10 or self.done == self.total:
            self.last = time.monotonic()
            self._line()

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self.bar is not None:
            self.bar.stop()


def _run_pool(feed: Callable[[int], tuple[Any, Any] | None], make: Callable[[Any], int], workers: int,
              setup: Callable[[], None] | None, finished: Callable[[Any, int], None]) -> None:
    """`make(task)` for each `(task, tag)` that `feed(running)` gives (None: nothing more for now;
    it gets how many tasks are running, and may wait only when none is), here (`workers` <= 1)
    or in `workers` fresh processes started on the first task (each first runs `setup`);
    `finished(tag, files)` as each ends. Ends when nothing runs and `feed` gives nothing."""
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    pool = None
    running: dict = {}
    try:
        while True:
            while len(running) < 4 * max(1, workers):  # a few ahead, not all at once
                item = feed(len(running))
                if item is None:
                    break
                task, tag = item
                if workers <= 1:
                    if pool is None:
                        pool = "here"
                        if setup is not None:
                            setup()
                    future: Future = Future()
                    future.set_result(make(task))
                else:
                    if pool is None:
                        import multiprocessing
                        from concurrent.futures import ProcessPoolExecutor

                        # Fresh processes (not forks of one that may hold torch's threads); a worker
                        # that dies fails the build instead of being replaced forever.
                        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                   initializer=setup)
                    future = pool.submit(make, task)
                running[future] = tag
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished(running.pop(future), future.result())
    finally:
        if pool is not None and pool != "here":
            pool.shutdown(wait=True, cancel_futures=True)


def run_build(tasks: Sequence, make: Callable[[Any], int], workers: int, setup: Callable[[], None],
              bar: BuildProgress, weight: Callable[[Any], int]) -> tuple[int, int]:
    """`make(task)` for every task, here or in `workers` fresh processes (each first runs
    `setup`), advancing `bar` by `weight(task)` as each ends; returns (files made, tasks that
    made none). `make` and `setup` must be module-level functions (they are pickled)."""
    counts = [0, 0]
    queue = iter(tasks)

    def feed(running: int):
        task = next(queue, None)
        return None if task is None else (task, task)

    def finished(task, n: int) -> None:
        counts[0] += n
        counts[1] += n == 0
        bar.advance(weight(task))

    _run_pool(feed, make, 1 if len(tasks) == 1 else min(workers, len(tasks)), setup, finished)
    return counts[0], counts[1]


# --- a source's build, made slice by slice by the cells that read it ------------------------

COMPLETE = ".complete"  # in a slice's folder, written last: its file count
LOCK = ".build.lock"  # in a slice's folder: held by the one builder making it
BUILD_INFO = "build.json"


def slice_folder(folder: Path, name: str) -> Path:
    """The folder of slice `name` (a relative path) inside the build `folder`; a name that
    leaves it is a `DataError`."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or any(p in (".", "..") for p in parts):
        raise DataError(f"a build slice is named {name!r}, which is not a folder inside {folder}")
    return Path(folder, *parts)


def slice_made(folder: Path, name: str, first: int, end: int) -> bool:
    """Whether slice `name` (samples `first` to `end - 1`) of the build `folder` is made whole."""
    from .made import is_real_file

    marker = slice_folder(folder, name) / COMPLETE
    try:
        return is_real_file(marker) and marker.read_text().strip() == str(end - first)
    except OSError:
        return False


def _lock(path: Path, wait: bool) -> int | None:
    """A held lock on `path` (its descriptor), or None when another builder holds it and
    `wait` is false. The file is made if missing and never followed through a link."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_slices(build, dataset: str, needed: int, note: Callable[[str], None] = lambda message: None,
                progress: Callable[[int, int], None] = lambda done, total: None) -> int:
    """Make the slices of `build` (a `SourceBuild` of data set `dataset`) that samples below
    `needed` fall in and that are not made yet; returns the files made here.

    Each slice is made under its own lock by one builder: here, slices that no other builder
    (another cell, on this machine or one sharing the folder) holds are made first, `group` at a
    time, their tasks in one pool of processes; then those others held are waited for, and made
    here if their builder stopped before finishing. `.complete` is written when a slice's every
    task has ended, so a slice without it is never read as whole, and a stopped build leaves
    whole files that the next builder does not make again. `note` gets a line when making
    starts and one when it ends; `progress(files made, files to make)` as tasks end."""
    import itertools
    from collections import deque

    from .files import write_json
    from .made import is_real_file, mark_build

    folder = Path(build.folder)
    todo = [s for s in build.slices if s[1] < needed and not slice_made(folder, *s)]
    if not todo:
        return 0
    try:
        for name, _, _ in todo:
            slice_folder(folder, name).mkdir(parents=True, exist_ok=True)
        mark_build(folder, dataset, (*build.files, COMPLETE, LOCK, BUILD_INFO))
        if build.about and not is_real_file(folder / BUILD_INFO):
            write_json(folder / BUILD_INFO, dict(build.about))
    except OSError as exc:
        raise DataError(f"{dataset}: cannot make its files in {folder} ({exc.strerror or exc}); give a folder you can "
                        f"write to with --data-option {dataset}.build_dir=PATH") from None
    sizes = {name: end - first for name, first, end in todo}
    missing = build.tasks(list(sizes))
    total = sum(files for _, files in missing)
    started = time.monotonic()
    if total:
        note(build.label.format(tasks=len(missing), files=total, folder=folder))
    queue = deque(sizes)  # not tried yet
    held_by_others: deque = deque()
    ahead: deque = deque()  # (task, group) of the groups claimed here
    groups: dict[int, list] = {}  # group -> [its slices' names, their locks, tasks left]
    counts = {"made": 0, "failed": 0, "slices": 0}
    numbers = itertools.count()

    def finish(group: int) -> None:
        names, locks, _ = groups.pop(group)
        try:
            for name in names:
                write_bytes(slice_folder(folder, name) / COMPLETE, f"{sizes[name]}\n".encode())
            counts["slices"] += len(names)
        finally:
            for fd in locks:
                os.close(fd)

    def claim(first: str | None = None, first_lock: int | None = None) -> None:
        """Lock up to `group` slices (starting with `first`, already locked), and queue the
        tasks of those still to make; slices others hold go to `held_by_others`."""
        names, locks = ([first], [first_lock]) if first is not None else ([], [])
        while queue and len(names) < max(1, build.group):
            name = queue.popleft()
            fd = _lock(slice_folder(folder, name) / LOCK, wait=False)
            if fd is None:
                held_by_others.append(name)
            else:
                names.append(name)
                locks.append(fd)
        kept = []
        for name, fd in zip(names, locks):
            if slice_made(folder, name, 0, sizes[name]):  # made meanwhile by the builder that held it
                os.close(fd)
            else:
                kept.append((name, fd))
        if not kept:
            return
        group = next(numbers)
        groups[group] = [[n for n, _ in kept], [fd for _, fd in kept], 0]
        tasks = build.tasks(groups[group][0])
        groups[group][2] = len(tasks)
        ahead.extend((task, group) for task, _ in tasks)
        if not tasks:
            finish(group)

    def feed(running: int):
        while not ahead:
            if queue:
                claim()
            elif held_by_others and not running:  # nothing of ours in flight: wait for the others' slices
                name = held_by_others.popleft()
                note(f"{dataset}: waiting for another builder of {name} in {folder}")
                claim(name, _lock(slice_folder(folder, name) / LOCK, wait=True))
            else:
                return None
        return ahead.popleft()

    def finished(group: int, n: int) -> None:
        counts["made"] += n
        counts["failed"] += n == 0
        progress(counts["made"], total)
        groups[group][2] -= 1
        if groups[group][2] == 0:
            finish(group)

    try:
        workers = min(build.workers or os.cpu_count() or 1, len(missing))  # no more processes than tasks
        _run_pool(feed, build.make, workers, build.setup, finished)
    finally:
        for _, locks, _ in groups.values():  # stopped: a slice left unfinished stays without .complete
            for fd in locks:
                os.close(fd)
    seconds = time.monotonic() - started
    if counts["made"] or total:
        note(f"{dataset}: made {counts['made']:,} files in {seconds:.0f} s "
             f"({counts['made'] / max(seconds, 1e-9):.1f} files/s), {counts['slices']} of {len(todo)} slices here"
             + (f"; {counts['failed']:,} task(s) made no file (an unreadable input: their samples count as "
                "unreadable)" if counts["failed"] else ""))
    return counts["made"]


# --- data options (`--data-option NAME.KEY=VALUE`) ------------------------------------------

def option_choices(dataset: str, text: str | None, allowed: Sequence, key: str, convert=str) -> list:
    """The comma-separated subset of `allowed` that `text` (the value of `dataset`'s option `key`)
    names, in `allowed`'s order; all of `allowed` when `text` is None. A `DataError` names the
    option and the choices when it names nothing or something else."""
    if text is None:
        return list(allowed)
    try:
        chosen = [convert(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        chosen = [None]
    wrong = [c for c in chosen if c not in allowed]
    if wrong or not chosen:
        raise DataError(f"--data-option {dataset}.{key}={text!r}: choose from {','.join(map(str, allowed))}")
    return [c for c in allowed if c in chosen]  # the canonical order, whatever was typed


def option_whole_number(dataset: str, options: Mapping[str, str], key: str, default: int) -> int:
    """`dataset`'s option `key` as a whole number >= 1 (`default` when not given); a `DataError`
    naming the option otherwise."""
    try:
        value = int(options.get(key, default))
        if value < 1:
            raise ValueError
    except ValueError:
        raise DataError(f"--data-option {dataset}.{key}={options[key]!r}: give a whole number >= 1") from None
    return value


def check_option_names(dataset: str, options: Mapping[str, str], allowed: Sequence[str], mode: str) -> None:
    """A `DataError` for the first option of `dataset` not in `allowed` (what `mode`, the way the
    data set is being read, takes)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"--data-option {dataset}.{unknown[0]} does not apply to {mode}; it takes {', '.join(allowed)}")
