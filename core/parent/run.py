"""One `rbench run`: the plan's grid through the engine, every record scored into the reports.

`--out` holds every row of its store, as `rbench report` writes it (`StoreReport`), whatever
the last command ran. The reports are rewritten as each cell finishes, so a run stopped halfway
still leaves valid files of what it finished, and the same command run again only runs the
cells that are missing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError
from ..files import write_json
from ..host import cpu_name
from ..listings import ListingError
from ..predictions import DamagedPredictions
from ..record import CellRecord, versions
from ..registry import Registry
from ..report.results import ReportFiles, Results, write_reports
from ..report.scoring import Scorer, ScoredView
from ..specs import MetricSpec, ReportRequest
from ..store import Store
from ..worker.backends import BackendStack
from .engine import run_grid
from .plan import Plan


def view_bases(registry: Registry) -> dict[str, str | None]:
    """Each view that a loaded data set plugin can produce or adds to a source (`AddedViews`), and its base view."""
    bases = {view: base for spec in registry.datasets.values() for view, base in spec.view_bases().items()}
    bases.update((view, base) for added in registry.added_views.values() for view, base in added.views.items())
    return bases


def view_part_columns(registry: Registry) -> dict[str, Sequence[str]]:
    """Each view's per-part top-1 columns, as its data set plugin declares them (`DatasetSpec.part_columns`)."""
    return {view: columns for spec in registry.datasets.values() for view, columns in spec.part_columns.items()}


def row_reports(registry: Registry, data_options: Mapping[str, Mapping[str, str]], store: Path,
                final: bool) -> dict[str, Callable[..., tuple[list[dict[str, Any]], list[str]]]]:
    """For each view of a data set given one of its report options (`DatasetSpec.report_options`),
    or of a data set that declares none, what makes its rows as written (`Results.row_reports`):
    its `report_rows` with those options."""
    found = {}
    for spec in registry.datasets.values():
        given = data_options.get(spec.name, {})
        if spec.report_rows is None or (spec.report_options and not set(given) & set(spec.report_options)):
            continue
        for view in spec.view_bases():
            found[view] = functools.partial(_report_rows, spec.report_rows, view, dict(given), store, final)
    return found


def _report_rows(report_rows, view: str, options: dict[str, str], store: Path, final: bool, rows, view_rows=None):
    return report_rows(ReportRequest(view=view, rows=rows, options=options, store=store, final=final,
                                     view_rows=view_rows or {}))


class StoreReport:
    """The reports of a whole store: its records, each scored once, made into `Results` on
    demand. `rbench report` writes `results()` of every record; `rbench run` holds the store's
    records, replaces each one its cells write, and writes the same, so a run's `--out` is what
    `rbench report` writes for that store. `data_options` are the `--data-option` settings given
    (their report options are applied to the rows: `row_reports`); `final` says that no row will
    come (`rbench report`), not a run still adding them."""

    def __init__(self, store: Store, metrics: Sequence[MetricSpec], registry: Registry,
                 data_options: Mapping[str, Mapping[str, str]] | None = None, final: bool = False):
        self.store = store
        self.bases = view_bases(registry)
        self.row_reports = row_reports(registry, data_options or {}, store.root, final)
        self.scorer = Scorer(store, metrics, registry)
        self.records: dict[str, CellRecord] = {}  # key -> record
        self._scored: dict[str, list[ScoredView]] = {}  # key -> the views scored from its predictions
        self.skipped: list[str] = []  # records left out, and why

    def add(self, record: CellRecord) -> None:
        """Hold `record`, in place of an earlier record of its cell, its predictions scored now.
        Raises, holding nothing new, when they cannot be scored (see `Results.add_record`)."""
        scored = self.scorer.views(record) if record.predictions is not None else []
        self.records[record.key] = record
        self._scored[record.key] = scored

    def load(self, skip: Collection[str] = (), quiet: Collection[str] = ()) -> None:
        """Hold every record of the store but those of the keys in `skip`. One that cannot be
        scored is left out with a line in `skipped` (none for the keys in `quiet`)."""
        for record in self.store.records():
            if record.key in skip:
                continue
            try:
                self.add(record)
            except ListingError as exc:  # its message says how to list the data again
                problem = f"{exc}; its record is skipped"
            except (DamagedPredictions, DataError) as exc:
                problem = f"{exc}; skipped (`rbench run` again re-runs that cell)"
            else:
                continue
            if record.key not in quiet:
                self.skipped.append(problem)

    def results(self, keys: Iterable[str] | None = None) -> Results:
        """The `Results` of the records held (only those of `keys`, when given), in key order
        as the store lists them, so the later of two rows of one model and size is the same."""
        chosen = self.records if keys is None else set(keys) & set(self.records)
        results = Results(bases=self.bases, scorer=self.scorer, row_reports=self.row_reports)
        for key in sorted(chosen):
            results.add_record(self.records[key], scored=self._scored[key])
        return results


def row_count(results: Results) -> int:
    """The rows of the results, benchmark and model metadata files that `results` make."""
    ran = sum(1 for (kind, _), rows in results.benchmarks.items() for row in rows
              if row.get(f"{kind}_samples_per_sec") is not None)
    return sum(len(rows) for rows in results.validation.values()) + ran + len(results.metadata)


@dataclass
class RunResults:
    """What one `rbench run` gave: `grid`, the results of its cells (those the store held and
    those it ran); `store`, the results of every record of the store, as written to `--out`,
    and `files`, those files; `new_rows`, how many of the rows written come from the cells this
    run ran; `skipped`, the store's records left out of the files, and why."""

    grid: Results
    store: Results
    files: ReportFiles = field(default_factory=lambda: ReportFiles(files={}))
    new_rows: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """The rows written (see `row_count`)."""
        return row_count(self.store)


def run(plan: Plan, registry: Registry, *, force: bool = False, retry_failed: bool = False,
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
        on_start: Callable[[list, int], None] = lambda todo, done: None) -> RunResults:
    """Run the plan's missing cells; rewrite the reports in `--out` (every record of the store)
    as each record arrives."""
    options = plan.options
    report = StoreReport(Store(options.store_dir), plan.metrics, registry, options.data_options)
    grid: set[str] = set()  # this run's cells: held, then run
    ran: set[str] | None = None  # the cells this run ran, once they start
    written = Results()
    files = ReportFiles(files={})
    started = time.time()
    write_json(options.out / "run.json", run_info(started, None, plan))

    def write() -> None:
        nonlocal written, files
        written = report.results()
        files = write_reports(written, options.out)

    def on_record(record: CellRecord) -> None:
        report.add(record)
        grid.add(record.key)
        if ran is not None:
            ran.add(record.key)
            write()

    def started_cells(todo: list, done: int) -> None:
        nonlocal ran
        # Under the store's lock, after the records held for this grid: every other record
        # (those of the cells about to run stand until their new ones arrive).
        report.load(skip=set(report.records), quiet={cell.key for cell in todo})
        ran = set()
        write()
        on_start(todo, done)

    # `run_grid` always starts the cells (`started_cells` writes the files) and every record after
    # that rewrites them: when it returns, `--out` is up to date.
    run_grid(plan, registry, force=force, retry_failed=retry_failed, on_event=on_event, on_start=started_cells,
             on_record=on_record)
    write_json(options.out / "run.json", run_info(started, time.time(), plan))
    return RunResults(grid=report.results(grid), store=written, files=files, new_rows=row_count(report.results(ran or ())),
                      skipped=[*report.store.problems, *report.skipped])


def run_info(started: float, finished: float | None, plan: Plan) -> dict[str, Any]:
    """Provenance written beside the CSVs (`run.json`)."""
    import platform
    import socket
    import sys
    import time

    import torch

    info = {
        "command": sys.argv, **versions(), "python": platform.python_version(),
        "cuda": torch.version.cuda, "host": socket.gethostname(), "cpu": cpu_name(),
        "devices": {s.name: _device_tag(s) for s in plan.stacks},
        "executor": plan.options.executor,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)) if finished else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda_driver"] = getattr(torch._C, "_cuda_getDriverVersion", lambda: None)()
    return info


def _device_tag(stack: BackendStack) -> str:
    try:
        return stack.base.device_tag()
    except Exception:  # noqa: BLE001 - provenance never stops a run
        return "unknown"


def check_backend(stack: str, out: Path, registry: Registry, *, workers: int = 0,
                  on_event: Callable[[dict[str, Any]], None] = lambda event: None,
                  on_start: Callable[[list, int], None] = lambda todo, done: None):
    """`(view, its conformance rows, results)` of `stack` against the reference backend
    (`Registry.reference_backend`) on the built-in set: `CHECK_MODELS` with random seeded weights,
    validated into `out` on the default data set's first view (`Registry.default_dataset`)."""
    from ..report.conformance import CHECK_MODELS
    from .plan import RunOptions, make_plan

    options = RunOptions(models=list(CHECK_MODELS), datasets=[registry.default_dataset()],
                         backends=[registry.reference_backend(), stack], benches=["validate"], weights="random",
                         out=out, batch_size=32, workers=workers, input_cache=False)
    plan = make_plan(options, registry)
    results = run(plan, registry, force=True, on_event=on_event, on_start=on_start).grid
    view = plan.sources[0].views[0].name
    return view, results.conformance.get(view, []), results
