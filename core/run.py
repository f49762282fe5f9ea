"""One `rbench run`: plan (every name resolved, every data folder checked), then the grid of
cells, run by an executor, then the CSV reports.

Each finished cell is written to the store at once, and the reports are rewritten from the
results so far, so a run stopped halfway still leaves valid files of what it finished, and the
same command run again only runs the cells that are missing.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .backends import BackendStack, best_stack, resolve_stack
from .engine import Cell, CellFailure, Grid, one_line
from .folders import file_stats
from .host import cpu_name
from .input_cache import DEFAULT_LIMIT as DEFAULT_INPUT_CACHE_SIZE
from .benchmark import BENCH_KINDS, BenchSettings, run_benchmark
from .errors import DataError, RbenchError, unknown_name
from .metadata import in1k_rows, metadata_rows, pretrained_name
from .models import (WEIGHTS_CHOICES, check_checkpoint, check_weights_available, create_model, param_count,
                     pretrained_tag, resolve_models)
from .paths import cache_dir
from .registry import Registry, check_data_options
from .specs import DataRequest, MetricSpec, Source
from .store import Store

BENCHES = ("validate", *BENCH_KINDS, "metadata")
DEFAULT_BENCHES = ("validate", "infer", "metadata")
DETAILED = "detailed"  # the folder of the detailed benchmark files, in --out


@dataclass(kw_only=True)
class RunOptions:
    """Everything `rbench run` was asked to do; defaults are the embedded default suite's."""

    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    backends: list[str] = field(default_factory=list)  # empty: the best available
    benches: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHES))
    out: Path = Path("results")
    store: Path | None = None  # None: <out>/store
    data_root: Path | None = None
    data_paths: dict[str, Path] = field(default_factory=dict)
    data_options: dict[str, dict[str, str]] = field(default_factory=dict)
    batch_size: int = 256
    workers: int = min(8, os.cpu_count() or 1)
    img_size: int | None = None
    weights: str = "pretrained"
    trust_checkpoint: bool = False
    allow_partial: bool = False
    bench: BenchSettings = field(default_factory=BenchSettings)
    input_cache: bool = True  # read and write the decoded-input cache
    input_cache_dir: Path | None = None  # None: input_cache.default_root()
    input_cache_size: int = DEFAULT_INPUT_CACHE_SIZE
    executor: str = "local"
    ray_address: str | None = None
    cell_timeout: float | None = None

    @property
    def store_dir(self) -> Path:
        return self.store or self.out / "store"


DEFAULT_SUITE_MODELS = ["test_vit.r160_in1k", "test_efficientnet.r160_in1k", "test_byobnet.r160_in1k"]


def default_suite(options: RunOptions) -> RunOptions:
    """The embedded default: timm's tiny test models, random weights, synthetic data, short benchmarks."""
    return replace(
        options,
        models=list(DEFAULT_SUITE_MODELS),
        weights="random",
        batch_size=min(options.batch_size, 32),
        bench=replace(options.bench, batch_size=min(options.bench.batch_size, 32), warmup_steps=3, steps=10, seconds=1.0),
    )


@dataclass
class Plan:
    """A run with every name resolved and every data source listed."""

    options: RunOptions
    models: list[str]
    sources: list[Source]
    stacks: list[BackendStack]
    metrics: list[MetricSpec]


def requested_views(names: list[str], registry: Registry) -> dict[str, frozenset[str] | None]:
    """`-d` names (sources or view names) -> `{source: views asked for by name, or None for all}`."""
    owner = {view: spec.name for spec in registry.datasets.values() for view in spec.view_bases()}
    wanted: dict[str, frozenset[str] | None] = {}
    for name in names:
        if name in registry.datasets:
            wanted[name] = None
        elif name in owner:
            source = owner[name]
            if source not in wanted or wanted[source] is not None:
                wanted[source] = (wanted.get(source) or frozenset()) | {name}
        else:
            raise unknown_name("dataset", name, [*registry.datasets, *owner], "rbench list datasets")
    return wanted


def load_source(spec, views: frozenset[str] | None, options: RunOptions) -> Source:
    """List one source's samples (the plugin checks its folder), keeping the views asked for."""
    check_data_options(spec, options.data_options.get(spec.name, {}))  # a mistyped key is an error, not ignored
    path = options.data_paths.get(spec.name)
    if path is None and spec.default_folder and options.data_root is not None:
        path = options.data_root / spec.default_folder
    request = DataRequest(path=path, cache_dir=cache_dir(), views=views, allow_partial=options.allow_partial,
                          options=options.data_options.get(spec.name, {}))
    source = spec.load(request)
    if views is not None:
        missing = views - {v.name for v in source.views}
        if missing:
            raise DataError(f"data set {spec.name} at {source.root} cannot give the view {sorted(missing)[0]!r}"
                            + (f" ({source.note})" if source.note else ""))
        source = replace(source, views=[v for v in source.views if v.name in views])
    return source


def make_plan(options: RunOptions, registry: Registry) -> Plan:
    """Resolve every name and check every data folder, before any model runs."""
    unknown = [b for b in options.benches if b not in BENCHES]
    if unknown:
        raise RbenchError(f"unknown benchmark {unknown[0]!r}; --bench takes {', '.join(BENCHES)}")
    weights = options.weights
    if weights not in WEIGHTS_CHOICES and not Path(weights).is_file():
        raise RbenchError(f"--weights {weights!r}: not 'pretrained', 'random' or an existing checkpoint file")
    if weights not in WEIGHTS_CHOICES:
        check_checkpoint(weights, options.trust_checkpoint)  # damaged, empty or unsafe: one line, before any model runs
    wanted = requested_views(options.datasets, registry) if "validate" in options.benches else {}
    for name in [*options.data_paths, *options.data_options]:
        registry.get("datasets", name)  # a typo in --data NAME=PATH is an error too
    stacks = [resolve_stack(name, registry) for name in options.backends] or [best_stack(registry)]
    models = resolve_models(options.models)
    if "validate" in options.benches:
        check_weights_available(models, weights)  # pretrained weights not here: one line, before any model runs
    if not models:
        raise RbenchError("no models to run; pass --models NAMES (see `rbench list models`)")
    metrics = list(registry.metrics.values())
    if wanted and "accuracy" not in registry.metrics:
        raise RbenchError("the 'accuracy' metric plugin is not loaded; reinstall rbench")
    sources = [load_source(registry.datasets[name], views, options) for name, views in wanted.items()]
    return Plan(options=options, models=models, sources=sources, stacks=stacks, metrics=metrics)


@dataclass
class Results:
    """Rows at full precision, grouped by the file they will be written to."""

    validation: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    bases: dict[str, str | None] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)  # views with their own column order
    # (benchmark kind, backend stack's file tag) -> rows, ok or failed
    benchmarks: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    metadata: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def add(self, entry: dict[str, Any]) -> None:
        """Add one store entry: `{"table": "validation"|"benchmark"|"metadata", "row": ..., ...}`."""
        table, row = entry["table"], entry["row"]
        if table == "validation":
            self.validation[entry["view"]].append(row)
            self.bases[entry["view"]] = entry.get("base")
            if entry.get("columns"):
                self.columns[entry["view"]] = entry["columns"]
        elif table == "benchmark":
            self.benchmarks[(entry["kind"], entry["tag"])].append(row)
        elif table == "metadata":
            self.metadata.append(row)
        else:
            raise ValueError(f"unknown table {table!r} in a store entry")

    def add_record(self, record: dict[str, Any]) -> None:
        """Add a cell's record: its rows, and its failure or unreadable images if any."""
        for entry in record["entries"]:
            self.add(entry)
        self.unreadable.extend(record.get("unreadable", []))
        if record.get("status", "ok") != "ok":
            info = record.get("cell_info") or {}
            self.failures.append({"model": info.get("model"), "dataset": info.get("source"),
                                  "backend": info.get("backend"), "bench": info.get("kind"),
                                  "status": record["status"], "message": record.get("message", "")})

    @classmethod
    def from_store(cls, store: Store) -> Results:
        results = cls()
        for record in store.records():
            results.add_record(record)
        return results


# --- cells --------------------------------------------------------------------------------

def source_identity(source: Source) -> str:
    """A hash of a source's file list, sizes and labels: it changes when the data set changes."""
    digest = hashlib.sha256(str(source.root).encode())
    stats = file_stats(path for path, _ in source.samples)
    for path, label in source.samples:
        size = stats[path].st_size if stats[path] else -1
        digest.update(f"{path}\0{size}\0{label}\n".encode())
    digest.update(source.identity.encode())
    return digest.hexdigest()[:20]


def weights_identity(weights: str) -> str:
    """`pretrained`, `random`, or a checkpoint's path with its size and modification time."""
    if weights in WEIGHTS_CHOICES:
        return weights
    stat = Path(weights).stat()
    return f"{Path(weights).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def versions() -> dict[str, Any]:
    """Versions that change results: they go into every cell's key."""
    import timm
    import torch

    return {"rbench": __version__, "torch": torch.__version__, "timm": timm.__version__}


def plan_cells(plan: Plan) -> list[Cell]:
    """Every cell of the plan, grouped by model (metadata, validation, then benchmarks)."""
    options = plan.options
    common = versions()
    cells = []
    weights = weights_identity(options.weights) if "validate" in options.benches else None
    data = {source.name: source_identity(source) for source in plan.sources}
    for name in plan.models:
        if "metadata" in options.benches:
            cells.append(Cell(kind="metadata", model=name,
                              identity={"kind": "metadata", "model": name, **common}))
        if "validate" in options.benches:
            stack = plan.stacks[0]
            for source in plan.sources:
                cells.append(Cell(kind="validate", model=name, source=source.name, backend=stack.name,
                                  device=stack.device, identity={
                                      "kind": "validate", "model": name, "weights": weights, "source": source.name,
                                      "data": data[source.name], "views": [v.name for v in source.views],
                                      "backend": stack.name, "img_size": options.img_size, **common}))
        for kind in (k for k in BENCH_KINDS if k in options.benches):
            for stack in plan.stacks:
                cells.append(Cell(kind=kind, model=name, backend=stack.name, device=stack.device, identity={
                    "kind": kind, "model": name, "backend": stack.name, "img_size": options.img_size,
                    "bench": asdict(options.bench), **common}))
    return cells


def metadata_cell(plan: Plan, cell: Cell, progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    (row,) = metadata_rows([cell.model], workers=0)
    return [{"table": "metadata", "row": row}], {}


def _metadata_batch(cells: list[Cell], options: RunOptions, on_event) -> tuple[list[Cell], list[dict[str, Any]]]:
    """The metadata rows of `cells`, computed together over worker processes."""
    if not cells:
        return [], []
    for cell in cells:
        on_event({"event": "start", "key": cell.key})
    by_tag = {row["model"]: row for row in metadata_rows([c.model for c in cells], workers=options.workers)}
    for cell in cells:
        on_event({"event": "done", "key": cell.key, "status": "ok", "message": ""})
    return cells, [by_tag[pretrained_name(c.model)] for c in cells]


def input_cache(options: RunOptions):
    """The run's decoded-input cache, or None with --no-cache."""
    from .input_cache import InputCache

    return InputCache(options.input_cache_dir, options.input_cache_size) if options.input_cache else None


def validate_cell(plan: Plan, cell: Cell, progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One model on one source: one forward pass, every view scored."""
    from .data import eval_data_config, make_loader
    from .input_cache import CacheCorrupted
    from .validate import predict, score_views

    options = plan.options
    stack = next(s for s in plan.stacks if s.name == cell.backend)
    source = next(s for s in plan.sources if s.name == cell.source)
    try:
        model = create_model(cell.model, options.weights, trust_checkpoint=options.trust_checkpoint)
    except RbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built is that cell's failure
        raise CellFailure("build-failed", one_line(exc)) from exc
    config = eval_data_config(model, options.img_size)
    common = {
        "model": pretrained_tag(model),
        "img_size": config["input_size"][-1],
        "param_count": param_count(model),
        "crop_pct": config["crop_pct"],
        "interpolation": config["interpolation"],
    }
    model = stack.prepare_model(model)
    cache = input_cache(options)
    note = progress.note
    batch_size = options.batch_size
    while True:  # out of memory: retry the pass with half the batch, down to 1
        loading = dict(batch_size=batch_size, workers=options.workers, pin_memory=stack.base.pin_memory)
        batches = (cache.loader(source, config, note=note, **loading) if cache is not None
                   else make_loader(source, config, **loading))
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            progress(done, len(source.samples))

        try:
            logits, unreadable = predict(model, batches, stack, config, advance)
            break
        except CacheCorrupted as exc:  # removed; the next pass decodes and writes it again
            note(f"input cache: {exc}; rebuilding it")
            cache.remove(exc.path)
        except Exception as exc:
            if not stack.is_out_of_memory(exc):
                raise
            if batch_size == 1:
                raise CellFailure("oom", f"out of memory even at batch 1: {one_line(exc)}") from exc
            batch_size = max(1, batch_size // 2)
            stack.cleanup()
    import torch

    if not torch.isfinite(logits).all():
        raise CellFailure("non-finite", f"{int((~torch.isfinite(logits)).sum())} non-finite logits on {source.name}")
    scores = score_views(logits, source, plan.metrics, unreadable)
    entries = [{"table": "validation", "view": view.name, "base": view.base,
                **({"columns": list(view.columns)} if view.columns else {}),
                "row": {**common, **scores[view.name], "partial": source.partial}} for view in source.views]
    return entries, {"unreadable": [source.samples[i][0] for i in unreadable]}


def benchmark_cell(plan: Plan, cell: Cell, progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One model on one backend stack; a failed row is kept (detailed file) and marks the cell failed."""
    options = plan.options
    stack = next(s for s in plan.stacks if s.name == cell.backend)
    total = max(1, options.bench.warmup_steps) + options.bench.steps
    steps = 0

    def on_step() -> None:
        nonlocal steps
        steps += 1
        progress(min(steps, total), total)

    row = run_benchmark(cell.kind, cell.model, stack, options.bench, options.img_size, on_step=on_step)
    entries = [{"table": "benchmark", "kind": cell.kind, "tag": stack.file_tag(), "row": row}]
    if row["status"] == "failed":
        return entries, {"status": "failed", "message": row.get("error") or ""}
    return entries, {}


CELL_RUNNERS = {"metadata": metadata_cell, "validate": validate_cell, "infer": benchmark_cell,
                "train": benchmark_cell}


# --- the grid -----------------------------------------------------------------------------

def options_to_json(options: RunOptions) -> dict[str, Any]:
    """RunOptions as JSON, for executors that run cells in other processes or machines."""
    data = asdict(options)
    data["store"] = str(options.store_dir.resolve())
    data["out"] = str(options.out)
    data["data_root"] = str(options.data_root) if options.data_root else None
    data["data_paths"] = {k: str(v) for k, v in options.data_paths.items()}
    data["input_cache_dir"] = str(options.input_cache_dir.resolve()) if options.input_cache_dir else None
    return data


def options_from_json(data: dict[str, Any]) -> RunOptions:
    data = dict(data)
    data["out"] = Path(data["out"])
    data["store"] = Path(data["store"])
    data["data_root"] = Path(data["data_root"]) if data["data_root"] else None
    data["data_paths"] = {k: Path(v) for k, v in data["data_paths"].items()}
    data["input_cache_dir"] = Path(data["input_cache_dir"]) if data.get("input_cache_dir") else None
    data["bench"] = BenchSettings(**data["bench"])
    return RunOptions(**data)


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


def run_grid(plan: Plan, registry: Registry, *, force: bool = False, retry_failed: bool = False,
             on_event: Callable[[dict[str, Any]], None] = lambda event: None,
             on_start: Callable[[int, int], None] = lambda todo, done: None) -> Results:
    """Run the cells the store does not hold yet; rewrite the reports as each one finishes.

    `on_start(todo, done)` is told how many cells will run and how many were already done.
    """
    import time

    options = plan.options
    store = Store(options.store_dir)
    cells = plan_cells(plan)
    held = {} if force else store.load(c.key for c in cells)
    todo = [c for c in cells if c.key not in held or (retry_failed and held[c.key].get("status") != "ok")]
    results = Results()
    for cell in cells:
        if cell.key in held and cell not in todo:
            results.add_record(held[cell.key])
    on_start(len(todo), len(cells) - len(todo))
    store.put_grid(cells, command=" ".join(__import__("sys").argv))
    started = time.time()
    write_json(options.out / "run.json", run_info(started, None, plan))
    write_reports(results, options.out)
    # Metadata cells are cheap and run together, in parallel processes (the whole zoo in minutes).
    for cell, row in zip(*_metadata_batch([c for c in todo if c.kind == "metadata"], options, on_event)):
        results.add_record(store.put(cell.identity, [{"table": "metadata", "row": row}], status="ok", message="",
                                     cell_info=cell.to_json()))
    todo = [c for c in todo if c.kind != "metadata"]
    write_reports(results, options.out)
    executor = registry.get("executors", options.executor)
    grid = Grid(options=options_to_json(options), cells=todo, cell_timeout=options.cell_timeout, on_event=on_event,
                plan=plan)
    for outcome in executor.execute(grid):
        record = store.get(outcome.cell.key)
        if record is not None:
            results.add_record(record)
        write_reports(results, options.out)
    write_json(options.out / "run.json", run_info(started, time.time(), plan))
    return results


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically."""
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def write_reports(results: Results, out: Path) -> list[Path]:
    """Every CSV that the results so far make, rewritten atomically."""
    from .report import (BENCH_COLUMNS, benchmark_table, failures_table, metadata_table, model_metadata_table,
                         validation_table, write_csv)

    written = []
    for view, rows in results.validation.items():
        base = results.bases.get(view)
        base_rows = results.validation.get(base, []) if base else None
        written.append(write_csv(validation_table(rows, base_rows, results.columns.get(view)),
                                 out / f"results-{view}.csv"))
    for (kind, tag), rows in results.benchmarks.items():
        columns = BENCH_COLUMNS[kind]
        written.append(write_csv(benchmark_table(rows, columns), out / f"benchmark-{kind}-{tag}.csv"))
        # Same name in a subfolder: readers that glob `benchmark-infer-*.csv` see timm's files only.
        written.append(write_csv(benchmark_table(rows, columns, detailed=True), out / DETAILED / f"benchmark-{kind}-{tag}.csv"))
    if results.metadata:
        written.append(write_csv(metadata_table(in1k_rows(results.metadata)), out / "model_metadata-in1k.csv"))
        written.append(write_csv(model_metadata_table(results.metadata), out / "model_metadata.csv"))
    if results.failures:
        written.append(write_csv(failures_table(results.failures), out / "failures.csv"))
    elif (out / "failures.csv").exists():  # a retry fixed them all
        (out / "failures.csv").unlink()
    return written


def check_out_dir(out: Path) -> None:
    """`out` must be a folder we can write to."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; pass a folder for the result CSVs")
