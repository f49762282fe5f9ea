"""The run engine: the grid loop, and the contract between it and the executors.

`run_grid` works out which cells of a plan the store lacks, hands them to an executor
(`local`, `subprocess`, `ray`, or a plugin's), and passes every record, held or new, to its
caller as it arrives. Executors only decide where `run_cells` runs a `Job`: each cell's outcome
carries its `CellRecord` back (as JSON across processes), and `run_grid` writes it to the store
at once, then reports the cell done, so a run started again skips what is done. A worker that
shares no disk with this process (`Grid.detached_job`) sends a validation cell's predictions file
back too, and `run_grid` writes it, checked against the checksum the record names, before the
record.

The events of a cell are typed in `specs` (`CellStarted`, `CellProgressed`, `CellNote`,
`CellDone`: dicts, one JSON line each from a subprocess worker), in this order (executors send
the first three; `run_grid` sends `done` once the record is on disk):

    {"event": "start", "key": KEY}                              the cell began
    {"event": "progress", "key": KEY, "done": N, "total": M}    for its progress bar
    {"event": "note", "key": KEY, "message": TEXT}              a line worth reading
    {"event": "done", "key": KEY, "status": S, "message": TEXT} it ended, ok or failed
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..worker.cells import Job, metadata_batch
from ..errors import RbenchError
from ..predictions import DamagedPredictions
from ..worker.jobs import STATUS_OK, CellOutcome
from .plan import make_job, plan_cells, source_identity
from ..record import Cell, CellRecord, Entry, Provenance
from ..specs import Event
from ..store import Store



class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run_grid`'s cells: `kept` is how many of them the store got a record of
    before it (counted in the store, not from the events that reached this process)."""

    def __init__(self, kept: int):
        super().__init__(kept)
        self.kept = kept


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

    def detached_job(self, cells: list[Cell]) -> Job:
        """The job of `cells` for a machine that shares no disk with this one (a node of a Ray
        cluster): it has no store, carries its sources' listings, and its validation cells send
        their predictions back in their outcomes. Their checkpoints (`checkpoints`) are for the
        executor to send (`Job.with_checkpoint_copies` on the other machine)."""
        listings = {name: self.store.get_listing(relative) for name, relative in self.base_job.sources.items()}
        return replace(self.base_job.with_cells(cells), store=None, listings=listings)

    def checkpoints(self, cells: list[Cell]) -> list[str]:
        """The checkpoint files that `cells` load, as their cells name them (a validation cell's
        weights from a file; a benchmark times random weights)."""
        from ..worker.models import WEIGHTS_CHOICES

        return sorted({c.weights for c in cells if c.kind == "validate" and c.weights not in (None, *WEIGHTS_CHOICES)})


def held_cells(cells: list[Cell], store: Store) -> tuple[list[Cell], dict[str, CellRecord]]:
    """`(cells, {key: record})`: the cells with their records that the store holds. A
    validation cell asked for compact predictions that the store holds only with full scores
    kept (done) is that cell, in its place: its file has every compact column."""
    held = store.load(c.key for c in cells)
    twins = {c.key: c.keeping_scores() for c in cells
             if c.kind == "validate" and not c.keeps_scores and c.key not in held}
    with_scores = {key: record for key, record in store.load(t.key for t in twins.values()).items() if record.ok}
    cells = [twins[c.key] if c.key in twins and twins[c.key].key in with_scores else c for c in cells]
    return cells, {**held, **with_scores}


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
    cells, held = (cells, {}) if force else held_cells(cells, store)
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
            if record is not None and outcome.predictions is not None:  # from a worker without the store
                try:
                    store.put_predictions_file(record.key, record.predictions, outcome.predictions)
                except DamagedPredictions as exc:
                    record = CellRecord(cell=record.cell, status="error", message=str(exc), provenance=record.provenance)
                    outcome = CellOutcome.of(record)
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
