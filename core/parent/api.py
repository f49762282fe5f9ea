"""rbench as a Python library: `evaluate` runs what `rbench run` runs, `load_report` reads what
`rbench report` writes, `compare` gives what `rbench compare` prints; each returns data.

Errors are the command line's: `RbenchError` subclasses, raised (the command line prints them
as one line). Nothing here prints; progress goes to an optional callback. The command line
(`frontend/cli.py`) parses its options, calls these, and prints what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import RbenchError, unknown_name
from ..registry import check_data_options
from ..report.results import PUBLISHED_GLOBS, import_published, report_files, write_reports
from ..report.tables import Report, Tables, failures_frame
from ..specs import Progress
from ..store import Store
from .plan import RUN_NUMBERS, Plan, RunOptions, check_out_dir, make_plan, run_options, select_metrics
from .run import RunResults, StoreReport, row_count, run

# `evaluate`'s options beyond the data sets, backends and kinds: each `rbench run` option, with
# underscores, that `run_options` takes as it is (or sets a `RunOptions` field by that name) ...
RUN_OPTIONS = ("data_dir", "data_root", "store", "batch_size", "workers", "img_size", "weights", "weights_name",
               "trust_checkpoint", "allow_partial", "executor", "executor_options", "cell_timeout", "limit", "keep")
# ... the `BenchSettings` field each benchmark option sets ...
BENCH_OPTIONS = {"warmup_steps": "warmup_steps", "bench_steps": "steps", "bench_seconds": "seconds",
                 "bench_repeats": "repeats", "latency_queries": "latency_queries",
                 "latency_seconds": "latency_seconds", "latency_batch_size": "latency_batch_size", "retry": "retry"}
# ... and those that take another form here than on the command line.
OTHER_OPTIONS = ("data", "data_options", "metrics", "cache", "cache_dir", "cache_size")


def split_names(values: str | Iterable[str] | None) -> list[str]:
    """Names given as `"a,b"`, `["a,b", "c"]` or None -> `["a", "b", "c"]`."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


def evaluation_options(models: str | Iterable[str] | None = None, *, datasets: str | Iterable[str] | None = None,
                       backends: str | Iterable[str] | None = None, bench: str | Iterable[str] | None = None,
                       out: str | Path = "results", registry=None, **options: Any) -> RunOptions:
    """The `RunOptions` of `evaluate`'s arguments (see there), by `plan.run_options`; an
    `UnknownNameError` for an option it does not take."""
    from ..registry import get_registry
    from ..worker.input_cache import parse_size

    registry = registry or get_registry()
    known = (*RUN_OPTIONS, *BENCH_OPTIONS, *OTHER_OPTIONS)
    for name in options:
        if name not in known:
            raise unknown_name("option", name, known, "docs/api.md")
    options = {name: RUN_NUMBERS[name].check(value, name) if name in RUN_NUMBERS and value is not None else value
               for name, value in options.items()}  # the command line's ranges, checked alike
    given = {name: options[name] for name in RUN_OPTIONS if options.get(name) is not None}
    for name in ("data_dir", "data_root", "store"):
        if name in given:
            given[name] = Path(given[name]).expanduser()
    if "executor_options" in given:
        given["executor_options"] = {str(k): str(v) for k, v in given["executor_options"].items()}
    cache_size = options.get("cache_size")
    if isinstance(cache_size, str):
        given["input_cache_size"] = parse_size(cache_size, "cache_size")
    elif cache_size is not None:
        given["input_cache_size"] = int(cache_size)
    if options.get("cache_dir") is not None:
        given["input_cache_dir"] = Path(options["cache_dir"]).expanduser()
    return run_options(
        registry, models=split_names(models), datasets=split_names(datasets), backends=split_names(backends),
        benches=split_names(bench), out=Path(out),
        data_paths={str(k): Path(v).expanduser() for k, v in (options.get("data") or {}).items()},
        data_options={str(k): {str(o): str(v) for o, v in settings.items()}
                      for k, settings in (options.get("data_options") or {}).items()},
        metrics=split_names(options.get("metrics")), input_cache=options.get("cache", True) is not False,
        bench={field: options.get(name) for name, field in BENCH_OPTIONS.items()}, **given)


def evaluate(models: str | Iterable[str] | None = None, *, datasets: str | Iterable[str] | None = None,
             backends: str | Iterable[str] | None = None, bench: str | Iterable[str] | None = None,
             out: str | Path = "results", force: bool = False, retry_failed: bool = False,
             progress: Callable[[Progress], None] | None = None, **options: Any) -> Report:
    """Run what `rbench run` runs and return its report.

    `models`, `datasets`, `backends` and `bench` (the kinds: validate, infer, train, latency,
    metadata) are names as `-m`, `-d`, `-b` and `--bench` take them: a list, or one string
    with commas; None is `rbench run`'s default (no models: the embedded default suite).
    `out` is `--out`: the CSV files are written there, and its store (`out/store`, or
    `store=`) keeps each finished cell, so the same call again runs only what is missing
    (`force=True` runs everything again, `retry_failed=True` the cells that failed).

    `options` are the other options of `rbench run`, with underscores: `data` (a mapping
    NAME -> folder, `--data`), `data_dir`, `data_root`, `data_options` (NAME -> {KEY: VALUE}),
    `store`, `batch_size`, `workers`, `img_size`, `weights`, `weights_name`,
    `trust_checkpoint`, `allow_partial`, `warmup_steps`, `bench_steps`, `bench_seconds`,
    `bench_repeats`, `latency_queries`, `latency_seconds`, `latency_batch_size`, `retry`
    (False: `--no-retry`), `executor`, `executor_options` (a mapping), `cell_timeout`,
    `cache` (False: `--no-cache`), `cache_dir`, `cache_size` (bytes, or text such as "100GB"),
    `metrics`, `limit`, `keep` (`--keep`: "scores", or NAME=VALUE items, or a mapping NAME ->
    "scores" or "compact"). The defaults are `rbench run`'s.

    `progress(event)`, when given, gets a `GridStarted` event (`{"event": "grid", "todo":
    cells, "held": n}`) once the store's records are read, then each cell's events
    (`rbench.Event`: start, progress, note, done) as they happen.

    Raises the `RbenchError` of any name, folder or option that is wrong, before any model
    runs; Ctrl-C raises `KeyboardInterrupt` with what finished kept in the store.
    """
    from ..registry import get_registry

    registry = get_registry()
    run_opts = evaluation_options(models, datasets=datasets, backends=backends, bench=bench, out=out,
                                  registry=registry, **options)
    check_out_dir(run_opts.out)
    plan = make_plan(run_opts, registry)
    return run_plan(plan, registry, force=force, retry_failed=retry_failed, progress=progress)


def run_plan(plan: Plan, registry, *, force: bool = False, retry_failed: bool = False,
             progress: Callable[[Progress], None] | None = None) -> Report:
    """Run a plan's missing cells (`run.run`) and return the report of its `--out`."""
    from ..worker.jobs import STATUS_SKIPPED

    tell = progress or (lambda event: None)
    skipped_cells = 0

    def on_event(event) -> None:
        nonlocal skipped_cells
        if event["event"] == "done" and event["status"] == STATUS_SKIPPED:
            skipped_cells += 1
        tell(event)

    outcome: RunResults = run(plan, registry, force=force, retry_failed=retry_failed, on_event=on_event,
                              on_start=lambda todo, held: tell({"event": "grid", "todo": todo, "held": held}))
    grid, store = outcome.grid, outcome.store
    return Report(tables=Tables(outcome.files.files), failures=failures_frame(grid.failures),
                  store=plan.options.store_dir, out=plan.options.out,
                  notes=[*grid.scorer.notes, *store.notes, *store.report_notes, *store.robustness_notes],
                  skipped=list(outcome.skipped),
                  unreadable=list(grid.unreadable), skipped_cells=skipped_cells, new_rows=outcome.new_rows,
                  rows=outcome.rows, results=store, grid_results=grid)


class NothingToReport(RbenchError):
    """A store with no usable record, and no imported file: `skipped` says which records were
    left out, and why."""

    def __init__(self, message: str, skipped: list[str]):
        super().__init__(message)
        self.skipped = skipped


def published_files(paths: Iterable[str | Path]) -> list[Path]:
    """The published files of `paths` (`--import`): each file as it is, each folder's files of
    `PUBLISHED_GLOBS`; an `RbenchError` for a path that does not exist."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            # The full model_metadata.csv before the two-column in-1k file, whose rows then add nothing.
            files.extend(f for pattern in PUBLISHED_GLOBS for f in sorted(path.glob(pattern)))
        elif path.is_file():
            files.append(path)
        else:
            raise RbenchError(f"--import {path} does not exist; pass a results CSV or a folder of them")
    return files


def store_folder(path: str | Path) -> Path:
    """The store of `path`: `path` itself when it holds `records/`, else its `store/` folder when
    it has one (the `--out` of a run), else `path` (a store with no records yet)."""
    path = Path(path)
    if not (path / "records").is_dir() and (path / "store").is_dir():
        return path / "store"
    return path


def load_report(path: str | Path = "results", *, import_: str | Path | Iterable[str | Path] = (),
                metrics: str | Iterable[str] | None = None, out: str | Path | None = None,
                data_options: Mapping[str, Mapping[str, str]] | None = None) -> Report:
    """The report of an existing store, as `rbench report` makes it, without running anything
    (nor importing torch). `path` is the `--out` folder of a run (its store is `path/store`) or
    a store folder. `import_` are files of timm's published results folder, or folders of
    them, whose rows join the tables (marked imported: the store's own rows win); `metrics` the
    metrics to score with (default: every loaded one). With `out`, the files are written there
    (as `rbench report --out`); without, nothing is written. `data_options` (NAME -> {KEY:
    VALUE}, `--data-option`) are report options of the data sets (`DatasetSpec.report_options`,
    such as `{"imagenet-c": {"reference_model": "resnet18.tv_in1k"}}`).

    Raises `RbenchError` for a path that is a file or does not exist (without `import_`), a
    published file that cannot be read, a data option that is not a report option or names what
    the store lacks, and `NothingToReport` when there is nothing to report."""
    from ..registry import get_registry

    imports = [import_] if isinstance(import_, (str, Path)) else list(import_)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RbenchError(f"--store {path} is a file, not a folder; pass the --store folder of an earlier `rbench run`")
    if not path.exists() and not imports:  # with imports, no store is no records
        raise RbenchError(f"store {path} does not exist; pass the --store (or --out) folder of an earlier "
                          "`rbench run`, or --import published files")
    if out is not None:
        check_out_dir(Path(out))
    registry = get_registry()
    data_options = {str(name): {str(k): str(v) for k, v in given.items()} for name, given in (data_options or {}).items()}
    for name, given in data_options.items():
        check_data_options(registry.get("datasets", name), given, report=True)
    store = Store(store_folder(path))
    store_report = StoreReport(store, select_metrics(split_names(metrics), registry), registry, data_options, final=True)
    store_report.load()
    results = store_report.results()
    for file in published_files(imports):
        import_published(results, file)
    if not (results.validation or results.metric_rows or results.benchmarks or results.metadata):
        raise NothingToReport(f"nothing to report: no records in {store.root} and no --import files",
                              skipped=[*store.problems, *store_report.skipped])
    made = write_reports(results, Path(out)) if out is not None else report_files(results)
    return Report(tables=Tables(made.files), failures=failures_frame(results.failures), store=store.root,
                  out=Path(out) if out is not None else None,
                  notes=[*results.scorer.notes, *results.notes, *results.report_notes, *results.robustness_notes],
                  skipped=[*store.problems, *store_report.skipped], unreadable=list(results.unreadable),
                  rows=row_count(results), results=results)


def compare(a: str, b: str, path: str | Path = "results", *, view: str | None = None, img_size: int | None = None):
    """Models `a` and `b` paired on the same images, from the stored predictions of `path` (the
    `--out` of a run, or a store folder), one row per view (`view`: that view only) as a polars
    frame: view, a, b, images, top1_a, top1_b, diff (A minus B, points) with its paired 95%
    interval `low` to `high`, both, only_a, only_b, neither (images right or wrong), p_value
    (McNemar's exact test) and verdict. `a` and `b` name rows as `rbench compare` takes them.
    Raises `UnknownNameError` for a model the store has not validated, `NotPaired` for models
    not run on the same images."""
    from ..report.compare import comparison_table

    return comparison_table(compare_store(Store(store_folder(path)), a, b, view=view, img_size=img_size))


def compare_store(store: Store, a: str, b: str, *, view: str | None = None, img_size: int | None = None):
    """What `compare` tables: the `report.compare.ViewComparison` of each view."""
    from ..registry import get_registry
    from ..report.compare import compare as compare_models

    if not store.root.is_dir():
        raise RbenchError(f"store {store.root} does not exist; pass the --store (or --out) of an earlier `rbench run`")
    return compare_models(store, a, b, view=view, img_size=img_size, registry=get_registry())
