"""What data set plugins that build files share: a build run in parallel processes with its
progress (`run_build`, `BuildProgress`), and the parsing of their data options
(`option_choices`, `option_whole_number`, `check_option_names`). Public API (`rbench.*`): a
plugin uses these, never another plugin's private helpers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import DataError


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


def _take(items, n: int) -> list:
    return [item for _, item in zip(range(n), items)]


def run_build(tasks: Sequence, make: Callable[[Any], int], workers: int, setup: Callable[[], None],
              bar: BuildProgress, weight: Callable[[Any], int]) -> tuple[int, int]:
    """`make(task)` for every task, here or in `workers` fresh processes (each first runs
    `setup`), advancing `bar` by `weight(task)` as each ends; returns (files made, tasks that
    made none). `make` and `setup` must be module-level functions (they are pickled)."""
    made = failed = 0
    if workers <= 1 or len(tasks) == 1:
        setup()
        for task in tasks:
            n = make(task)
            made, failed = made + n, failed + (n == 0)
            bar.advance(weight(task))
        return made, failed
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # Fresh processes (not forks of one that may hold torch's threads); a worker that dies fails
    # the build instead of being replaced forever.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=setup) as pool:
        queue = iter(tasks)
        running = {pool.submit(make, t): t for t in _take(queue, 4 * workers)}  # a few ahead, not all at once
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                n = future.result()
                made, failed = made + n, failed + (n == 0)
                bar.advance(weight(running.pop(future)))
            running.update({pool.submit(make, t): t for t in _take(queue, len(finished))})
    return made, failed


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
