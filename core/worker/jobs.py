"""A job's cells run in a worker process (or in the parent, by the local executor): `run_cells`
runs each cell of a `Job` and yields its `CellOutcome`, which carries the cell's `CellRecord`
back to the parent (as JSON across processes: `CellOutcome.to_json`); the events each cell sends
while it runs; the failure outcome an executor yields for a cell whose worker could not
(`record_failure`); and `keep_sigint_ignored` for a worker started with SIGINT ignored.
"""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .cells import CELL_RUNNERS, PREDICTIONS_DATA, CellFailure, Job, JobContext, job_digest
from ..errors import ExportError, RbenchError, one_line
from ..listings import ListingError
from ..record import Cell, CellRecord, Entry, Provenance
from ..specs import Event

STATUS_OK = "ok"
# A cell that did not run because rbench's own bookkeeping failed (a listing that cannot be
# read): it gets no record, so a finished one stays and a missing one stays pending.
STATUS_SKIPPED = "skipped"
EVENTS = ("start", "progress", "note", "done")


@dataclass(frozen=True)
class CellOutcome:
    """How a cell ended: its record (`ok`, or a failure status: `oom`, `build-failed`,
    `export-failed`, `non-finite`, `timeout`, `crashed`, `error`, with its message), for
    `run_grid` to store; or, `skipped` (rbench could not read the cell's listing), no record.
    `predictions`: the bytes of the predictions file that the record names, from a worker that
    has no store (a `Job` without one); `run_grid` writes them before the record."""

    cell: Cell
    status: str
    message: str = ""
    record: CellRecord | None = None
    predictions: bytes | None = None

    @classmethod
    def of(cls, record: CellRecord, predictions: bytes | None = None) -> CellOutcome:
        return cls(cell=record.cell, status=record.status, message=record.message, record=record,
                   predictions=predictions)

    def to_json(self) -> dict[str, Any]:
        """The outcome as plain data, to cross to another process (`from_json`)."""
        import base64

        return {"cell": self.cell.to_json(), "status": self.status, "message": self.message,
                "record": self.record.to_json() if self.record is not None else None,
                "predictions": base64.b64encode(self.predictions).decode() if self.predictions is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellOutcome:
        """An outcome sent by `to_json`; its record is checked whole (`CellRecord.from_json`)."""
        import base64

        record = CellRecord.from_json(data["record"]) if data.get("record") is not None else None
        predictions = base64.b64decode(data["predictions"]) if data.get("predictions") is not None else None
        return cls(cell=Cell.from_json(data["cell"]), status=data["status"], message=data["message"], record=record,
                   predictions=predictions)


class CellProgress:
    """What a cell runner tells the user while it runs: `progress(done, total)` for its bar,
    `progress.note(message)` for a line worth reading (a warning, a cache being built)."""

    def __init__(self, key: str, on_event: Callable[[Event], None]):
        self.key, self.on_event = key, on_event

    def __call__(self, done: int, total: int) -> None:
        self.on_event({"event": "progress", "key": self.key, "done": done, "total": total})

    def note(self, message: str) -> None:
        self.on_event({"event": "note", "key": self.key, "message": message})


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


def keep_sigint_ignored() -> None:
    """Keep SIGINT ignored in a process that started with it ignored (`cmd &` in a script).

    polars installs its own SIGINT handler when imported, over the inherited SIG_IGN, and turns
    a SIGINT that lands during a query into a KeyboardInterrupt: a Ctrl-C meant for the script's
    other commands would kill the run, or a worker's cell. So it is imported now and SIG_IGN put
    back. Main thread only; a process that handles SIGINT is left as it is."""
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        return
    import polars  # noqa: F401 - for its handler, replaced just below

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def record_failure(grid: Any, cell: Cell, status: str, message: str) -> CellOutcome:
    """The outcome of a cell of `grid` (an `rbench.Grid`) that failed where its worker could not say so (a timeout,
    a worker that died), with its record; `run_grid` stores it, so the executor yields it."""
    return CellOutcome.of(CellRecord(cell=cell, status=status, message=message, provenance=Provenance.here()))


_CONTEXTS: dict[str, JobContext] = {}


def _context(job: Job, registry) -> JobContext:
    """One context per job settings and process: its stacks and sources are resolved once."""
    key = f"{job_digest(job)}-{id(registry)}"
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = JobContext(job, registry)
    return _CONTEXTS[key]


def run_cells(job: Job, on_event: Callable[[Event], None] = lambda event: None,
              timeout: float | None = None, registry=None) -> Iterator[CellOutcome]:
    """Run a job's cells here, one by one, and yield each one's outcome with its record, ok or
    failed, the moment the cell ends (the record is not stored here: `run_grid` stores it).
    A validation cell's predictions file is written to the store here, or, for a job without a
    store, its bytes go in the outcome. A failure of one cell
    never stops the others. `registry`: the plugins to resolve the job's stacks with (default:
    this process's)."""
    context = _context(job, registry)
    for cell in job.cells:
        on_event({"event": "start", "key": cell.key})
        started = time.time()
        progress = CellProgress(cell.key, on_event)
        entries: list[Entry] = []
        fields: dict[str, Any] = {}
        predictions = None
        try:
            with _alarm(timeout):
                entries, fields = CELL_RUNNERS[cell.kind](context, cell, progress)
            # A runner may keep rows and still fail the cell (a benchmark's failed row).
            status, message = fields.pop("status", STATUS_OK), fields.pop("message", "")
            predictions = fields.pop(PREDICTIONS_DATA, None)
        except CellTimeout:
            status, message = "timeout", f"ran past --cell-timeout {timeout:g} s"
        except ListingError as exc:
            yield CellOutcome(cell=cell, status=STATUS_SKIPPED, message=f"{exc}; the cell is skipped")
            continue
        except (CellFailure, ExportError) as exc:
            status, message = exc.status, str(exc)
        except RbenchError as exc:
            status, message = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad model never stops the grid
            status, message = "error", one_line(exc)
            fields = {"traceback": traceback.format_exc()[-4000:]}
        yield CellOutcome.of(CellRecord(cell=cell, status=status, message=message, entries=tuple(entries),
                                        provenance=Provenance.here(time.time() - started), **fields), predictions)
