"""The run engine: the grid loop, and the contract between it and the executors.

`run_grid` works out which cells of a plan the store lacks, hands them to an executor
(`local`, `subprocess`, `ray`, or a plugin's), and passes every record, held or new, to its
caller as it arrives. Executors only decide where `run_cells` runs a `Job`: each cell's outcome
carries its `CellRecord` back (as JSON across processes), and `run_grid` writes it to the store
at once, then reports the cell done, so a run started again skips what is done.

The events of a cell are typed in `specs` (`CellStarted`, `CellProgressed`, `CellNote`,
`CellDone`: dicts, one JSON line each from a subprocess worker), in this order (executors send
the first three; `run_grid` sends `done` once the record is on disk):

    {"event": "start", "key": KEY}                              the cell began
    {"event": "progress", "key": KEY, "done": N, "total": M}    for its progress bar
    {"event": "note", "key": KEY, "message": TEXT}              a line worth reading
    {"event": "done", "key": KEY, "status": S, "message": TEXT} it ended, ok or failed
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cells import CELL_RUNNERS, Cell, CellFailure, Job, JobContext, job_digest, make_job, metadata_batch, \
    plan_cells, source_identity
from .errors import ExportError, RbenchError, one_line
from .listings import ListingError
from .record import CellRecord, Entry, Provenance
from .specs import Event
from .store import Store

STATUS_OK = "ok"
# A cell that did not run because rbench's own bookkeeping failed (a listing that cannot be
# read): it gets no record, so a finished one stays and a missing one stays pending.
STATUS_SKIPPED = "skipped"
EVENTS = ("start", "progress", "note", "done")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run_grid`'s cells: `kept` is how many of them the store got a record of
    before it (counted in the store, not from the events that reached this process)."""

    def __init__(self, kept: int):
        super().__init__(kept)
        self.kept = kept


@dataclass(frozen=True)
class CellOutcome:
    """How a cell ended: its record (`ok`, or a failure status: `oom`, `build-failed`,
    `export-failed`, `non-finite`, `timeout`, `crashed`, `error`, with its message), for
    `run_grid` to store; or, `skipped` (rbench could not read the cell's listing), no record."""

    cell: Cell
    status: str
    message: str = ""
    record: CellRecord | None = None

    @classmethod
    def of(cls, record: CellRecord) -> CellOutcome:
        return cls(cell=record.cell, status=record.status, message=record.message, record=record)

    def to_json(self) -> dict[str, Any]:
        """The outcome as plain data, to cross to another process (`from_json`)."""
        return {"cell": self.cell.to_json(), "status": self.status, "message": self.message,
                "record": self.record.to_json() if self.record is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellOutcome:
        """An outcome sent by `to_json`; its record is checked whole (`CellRecord.from_json`)."""
        record = CellRecord.from_json(data["record"]) if data.get("record") is not None else None
        return cls(cell=Cell.from_json(data["cell"]), status=data["status"], message=data["message"], record=record)


@dataclass
class Grid:
    """What an executor gets: the cells to run, the job they belong to, and where to report.

    `options` holds the executor's settings (`--executor-option`), parsed by its declaration
    (`ExecutorSpec.options`); `job(cells)` is the `Job` of some cells.
    `registry` is the run's plugin registry, for an executor that runs cells in this process.
    """

    base_job: Job
    cells: list[Cell]
    cell_timeout: float | None = None
    on_event: Callable[[Event], None] = lambda event: None
    options: Mapping[str, Any] = field(default_factory=dict)
    registry: Any = None

    @property
    def store(self) -> Store:
        return Store(Path(self.base_job.store))

    def job(self, cells: list[Cell]) -> Job:
        """The job of `cells`, to run with `run_cells` here or in another process or machine."""
        return self.base_job.with_cells(cells)


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


def record_failure(grid: Grid, cell: Cell, status: str, message: str) -> CellOutcome:
    """The outcome of a cell of `grid` that failed where its worker could not say so (a timeout,
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
    A validation cell's predictions file is written to the store here. A failure of one cell
    never stops the others. `registry`: the plugins to resolve the job's stacks with (default:
    this process's)."""
    context = _context(job, registry)
    for cell in job.cells:
        on_event({"event": "start", "key": cell.key})
        started = time.time()
        progress = CellProgress(cell.key, on_event)
        entries: list[Entry] = []
        fields: dict[str, Any] = {}
        try:
            with _alarm(timeout):
                entries, fields = CELL_RUNNERS[cell.kind](context, cell, progress)
            # A runner may keep rows and still fail the cell (a benchmark's failed row).
            status, message = fields.pop("status", STATUS_OK), fields.pop("message", "")
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
                                        provenance=Provenance.here(time.time() - started), **fields))


def run_grid(plan, registry, *, force: bool = False, retry_failed: bool = False,
             on_event: Callable[[Event], None] = lambda event: None,
             on_start: Callable[[list[Cell], int], None] = lambda todo, done: None,
             on_record: Callable[[CellRecord], None] = lambda record: None) -> None:
    """Run the cells of `plan` that the store does not hold yet.

    `on_record(record)` gets every record of the grid: first those already held, then each new
    one as its cell ends. A held record that `on_record` cannot use (it raises an `RbenchError`,
    such as a damaged predictions file) is reported as a note and its cell runs again.
    `on_start(todo, done)` gets the cells that will run and how many were already done.
    Ctrl-C while the cells run raises `Interrupted`, which says how many records the store got.
    """
    options = plan.options
    store = Store(options.store_dir)
    with store.lock(on_wait=lambda message: on_event({"event": "note", "key": "", "message": message})):
        _run_grid(plan, registry, store, force, retry_failed, on_event, on_start, on_record)


def _run_grid(plan, registry, store: Store, force, retry_failed, on_event, on_start, on_record) -> None:
    options = plan.options
    identities = {source.name: source_identity(source) for source in plan.sources}
    cells = plan_cells(plan, identities)
    listings = {s.name: store.put_source(s, identities[s.name], registry) for s in plan.sources}
    held = {} if force else store.load(c.key for c in cells)
    todo = []
    for cell in cells:
        record = held.get(cell.key)
        if record is None or (retry_failed and record.status != STATUS_OK):
            todo.append(cell)
            continue
        try:
            on_record(record)
        except RbenchError as exc:
            on_event({"event": "note", "key": cell.key, "message": f"{exc}; running the cell again"})
            todo.append(cell)
    for problem in store.problems:
        on_event({"event": "note", "key": "", "message": problem})
    on_start(todo, len(cells) - len(todo))
    store.put_grid(cells, command=" ".join(sys.argv))
    before = store.record_stamps(c.key for c in todo)
    outcomes = iter(())
    try:
        metadata_cells = [c for c in todo if c.kind == "metadata"]
        for cell, row in zip(*metadata_batch(metadata_cells, options.workers, on_event)):
            record = store.put(CellRecord(cell=cell, entries=(Entry(table="metadata", row=row),),
                                          provenance=Provenance.here()))
            on_event({"event": "done", "key": cell.key, "status": record.status, "message": ""})
            on_record(record)
        rest = [c for c in todo if c.kind != "metadata"]
        executor = registry.get("executors", options.executor)
        grid = Grid(base_job=make_job(plan, [], listings), cells=rest, cell_timeout=options.cell_timeout,
                    on_event=on_event, options=plan.executor_options, registry=registry)
        outcomes = executor.execute(grid)
        for outcome in outcomes:
            # The parent stores the record that the outcome carries (never re-read from disk), then
            # reports the cell done: a cell reported done always has its record on disk. A parent
            # killed before this write leaves the cell pending, and the same command runs it again.
            record = outcome.record
            if record is not None:
                store.put(record)
            on_event({"event": "done", "key": outcome.cell.key, "status": outcome.status, "message": outcome.message})
            if record is None:
                continue
            try:
                on_record(record)
            except RbenchError as exc:  # such as a listing damaged while the grid ran: the record is kept
                on_event({"event": "note", "key": outcome.cell.key, "message": f"{exc}; its rows are left out of "
                          "this report"})
    except KeyboardInterrupt:
        # The executor ends its workers first, so that no record lands after the count.
        getattr(outcomes, "close", lambda: None)()
        now = store.record_stamps(c.key for c in todo)
        raise Interrupted(sum(1 for key, stamp in now.items() if before.get(key) != stamp)) from None
