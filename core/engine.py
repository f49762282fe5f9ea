"""The run engine: a grid of cells, run by an executor, each finished cell stored at once.

A cell is one model on one source (validation), one model on one backend stack (a benchmark),
or one model's metadata. Its key is a hash of everything that changes its result, so a run
started again skips what the store already holds, and two runs can share one store.
Executors (`local`, `subprocess`, `ray`, or a plugin's) only decide where `run_cells` runs.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RbenchError
from .store import Store, cell_key

STATUS_OK = "ok"


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One unit of work. `identity` holds everything that changes its result; `key` hashes it."""

    kind: str  # validate, infer, train, metadata
    model: str
    source: str | None = None
    backend: str | None = None
    device: str = "cpu"
    identity: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        return cell_key(self.identity)

    @property
    def label(self) -> str:
        where = " on ".join(filter(None, [self.source, self.backend]))
        return f"{self.kind} {self.model}" + (f" on {where}" if where else "")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "source": self.source, "backend": self.backend,
                "device": self.device, "identity": self.identity}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        return cls(**data)


@dataclass(frozen=True)
class CellOutcome:
    """How a cell ended: `ok`, or a failure status (`oom`, `build-failed`, `non-finite`,
    `timeout`, `crashed`, `error`) with a one-line message."""

    cell: Cell
    status: str
    message: str = ""

    def status_dict(self) -> dict[str, str]:
        return {"status": self.status, "message": self.message}


@dataclass
class Grid:
    """What an executor gets: the run's options (JSON), the cells to run, and where to report."""

    options: dict[str, Any]
    cells: list[Cell]
    cell_timeout: float | None = None
    on_event: Callable[[dict[str, Any]], None] = lambda event: None
    plan: Any = None  # the parent's plan, for executors that run cells in this process

    @property
    def store(self) -> Store:
        return Store(Path(self.options["store"]))

    def job(self, cells: list[Cell]) -> dict[str, Any]:
        """A JSON-able job for `run_cells`, in this process or another."""
        return {"options": self.options, "cells": [c.to_json() for c in cells]}


class CellProgress:
    """What a cell runner tells the user while it runs: `progress(done, total)` for its bar,
    `progress.note(message)` for a line worth reading (a warning, a cache being built)."""

    def __init__(self, key: str, on_event: Callable[[dict[str, Any]], None]):
        self.key, self.on_event = key, on_event

    def __call__(self, done: int, total: int) -> None:
        self.on_event({"event": "progress", "key": self.key, "done": done, "total": total})

    def note(self, message: str) -> None:
        self.on_event({"event": "note", "key": self.key, "message": message})


class CellFailure(Exception):
    """A cell that failed in a known way; `status` names how."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class CellTimeout(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: float | None):
    """Raise `CellTimeout` after `seconds` (main thread only; elsewhere no limit)."""
    if not seconds:
        yield
        return

    def expired(signum, frame):
        raise CellTimeout()

    try:
        previous = signal.signal(signal.SIGALRM, expired)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def record_failure(grid: Grid, cell: Cell, status: str, message: str, **extra: Any) -> CellOutcome:
    """Store a failed cell's record (for an executor whose worker could not) and return its outcome."""
    grid.store.put(cell.identity, [], status=status, message=message, cell_info=cell.to_json(), **extra)
    grid.on_event({"event": "done", "key": cell.key, "status": status, "message": message})
    return CellOutcome(cell=cell, status=status, message=message)


_CONTEXTS: dict[str, Any] = {}


def _context(options_json: dict[str, Any]):
    """The plan of a job's options, made once per process (it lists the data folders)."""
    from .registry import get_registry
    from .run import make_plan, options_from_json

    key = json.dumps(options_json, sort_keys=True)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = make_plan(options_from_json(options_json), get_registry())
    return _CONTEXTS[key]


def run_cells(job: dict[str, Any], on_event: Callable[[dict[str, Any]], None] = lambda event: None,
              timeout: float | None = None, plan: Any = None) -> Iterator[CellOutcome]:
    """Run a job's cells here, one by one; each record goes to the store the moment its cell
    ends, ok or failed. A failure of one cell never stops the others. `plan`: the run's plan
    when it is at hand (in the process that made it); else it is made from the job's options."""
    from .run import CELL_RUNNERS

    plan = plan or _context(job["options"])
    store = Store(Path(job["options"]["store"]))
    for data in job["cells"]:
        cell = Cell.from_json(data)
        on_event({"event": "start", "key": cell.key})
        started = time.time()

        progress = CellProgress(cell.key, on_event)
        extra: dict[str, Any] = {}
        try:
            with _alarm(timeout):
                entries, extra = CELL_RUNNERS[cell.kind](plan, cell, progress)
            # A runner may keep rows and still fail the cell (a benchmark's failed row).
            status, message = extra.pop("status", STATUS_OK), extra.pop("message", "")
        except CellTimeout:
            entries, status, message = [], "timeout", f"ran past --cell-timeout {timeout:g} s"
        except CellFailure as exc:
            entries, status, message = [], exc.status, str(exc)[:300]
        except RbenchError as exc:
            entries, status, message = [], "error", str(exc)[:300]
        except Exception as exc:  # noqa: BLE001 - one bad model never stops the grid
            entries, status, message = [], "error", one_line(exc)
            extra = {"traceback": traceback.format_exc()[-4000:]}
        store.put(cell.identity, entries, status=status, message=message, cell_info=cell.to_json(),
                  seconds=time.time() - started, **extra)
        on_event({"event": "done", "key": cell.key, "status": status, "message": message})
        yield CellOutcome(cell=cell, status=status, message=message)
