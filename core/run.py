"""One `rbench run`: plan (every name resolved, every data folder checked), then the cells,
then the CSV reports.

Each finished cell is written to the store at once, and the reports are rewritten from the
results so far, so a run stopped halfway still leaves valid files of what it finished.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .backends import BackendStack, best_stack, resolve_stack
from .benchmark import BENCH_KINDS, BenchSettings, run_benchmark
from .errors import DataError, RbenchError, unknown_name
from .metadata import metadata_row
from .models import WEIGHTS_CHOICES, create_model, param_count, pretrained_tag, resolve_models
from .paths import cache_dir
from .registry import Registry
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
    wanted = requested_views(options.datasets, registry) if "validate" in options.benches else {}
    for name in [*options.data_paths, *options.data_options]:
        registry.get("datasets", name)  # a typo in --data NAME=PATH is an error too
    stacks = [resolve_stack(name, registry) for name in options.backends] or [best_stack(registry)]
    models = resolve_models(options.models)
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
    # (benchmark kind, backend stack's file tag) -> rows, ok or failed
    benchmarks: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entry: dict[str, Any]) -> None:
        """Add one store entry: `{"table": "validation"|"benchmark"|"metadata", "row": ..., ...}`."""
        table, row = entry["table"], entry["row"]
        if table == "validation":
            self.validation[entry["view"]].append(row)
            self.bases[entry["view"]] = entry.get("base")
        elif table == "benchmark":
            self.benchmarks[(entry["kind"], entry["tag"])].append(row)
        elif table == "metadata":
            self.metadata.append(row)
        else:
            raise ValueError(f"unknown table {table!r} in a store entry")

    @classmethod
    def from_store(cls, store: Store) -> Results:
        results = cls()
        for record in store.records():
            for entry in record["entries"]:
                results.add(entry)
        return results


def source_identity(source: Source) -> str:
    """A hash of a source's file list, sizes and labels: it changes when the data set changes."""
    digest = hashlib.sha256(str(source.root).encode())
    for path, label in source.samples:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"{path}\0{size}\0{label}\n".encode())
    return digest.hexdigest()[:20]


def provenance() -> dict[str, Any]:
    """Versions that go with every record."""
    import timm
    import torch

    return {"rbench": __version__, "torch": torch.__version__, "timm": timm.__version__}


def validate_model(name: str, plan: Plan, store: Store, progress=None) -> list[dict[str, Any]]:
    """Score one model on every source of the plan; one store record per source. Returns the
    records (each with its entries and the paths of unreadable images)."""
    from .data import eval_data_config, make_loader
    from .validate import predict, score_views

    options = plan.options
    stack = plan.stacks[0]
    model = create_model(name, options.weights, trust_checkpoint=options.trust_checkpoint)
    config = eval_data_config(model, options.img_size)
    common = {
        "model": pretrained_tag(model),
        "img_size": config["input_size"][-1],
        "param_count": param_count(model),
        "crop_pct": config["crop_pct"],
        "interpolation": config["interpolation"],
    }
    model = stack.prepare_model(model)
    records = []
    for source in plan.sources:
        loader = make_loader(source.samples, config, batch_size=options.batch_size,
                             workers=options.workers, pin_memory=stack.device == "cuda")
        task = progress.add_task(f"validate {name} on {source.name}", total=len(source.samples)) if progress else None
        logits, unreadable = predict(model, loader, stack, lambda n: progress and progress.advance(task, n))
        if progress:
            progress.remove_task(task)
        scores = score_views(logits, source, plan.metrics, unreadable)
        entries = [
            {"table": "validation", "view": view.name, "base": view.base,
             "row": {**common, **scores[view.name], "partial": source.partial}}
            for view in source.views
        ]
        cell = {"kind": "validate", "model": name, "weights": options.weights, "source": source.name,
                "data": source_identity(source), "views": [v.name for v in source.views], "backend": stack.name,
                "img_size": options.img_size, **provenance()}
        records.append(store.put(cell, entries, unreadable=[source.samples[i][0] for i in unreadable]))
    return records


def run_plan(plan: Plan, progress=None) -> tuple[Results, list[Path], list[str]]:
    """Run every model of the plan; returns the results, the files written and the paths of
    unreadable images. Reports are rewritten in `out` after each model."""
    options = plan.options
    store = Store(options.store_dir)
    results = Results()
    unreadable: list[str] = []
    overall = progress.add_task("models", total=len(plan.models)) if progress else None
    written: list[Path] = []
    for name in plan.models:
        records = []
        if "metadata" in options.benches:
            records.append(store.put({"kind": "metadata", "model": name, "rbench": __version__},
                                     [{"table": "metadata", "row": metadata_row(name)}]))
        if "validate" in options.benches and plan.sources:
            records.extend(validate_model(name, plan, store, progress))
        for kind in (k for k in BENCH_KINDS if k in options.benches):
            for stack in plan.stacks:
                steps = max(1, options.bench.warmup_steps) + options.bench.steps
                task = progress.add_task(f"{kind} {name} on {stack.name}", total=steps) if progress else None
                row = run_benchmark(kind, name, stack, options.bench, options.img_size,
                                    on_step=lambda: progress and progress.advance(task))
                if progress:
                    progress.remove_task(task)
                cell = {"kind": kind, "model": name, "backend": stack.name, "img_size": options.img_size,
                        "bench": vars(options.bench), **provenance()}
                entry = {"table": "benchmark", "kind": kind, "tag": stack.file_tag(), "row": row}
                records.append(store.put(cell, [entry]))
        for record in records:
            for entry in record["entries"]:
                results.add(entry)
            unreadable.extend(record.get("unreadable", []))
        written = write_reports(results, options.out)
        if progress:
            progress.advance(overall)
    return results, written, unreadable


def write_reports(results: Results, out: Path) -> list[Path]:
    """Every CSV that the results so far make, rewritten atomically."""
    from .report import BENCH_COLUMNS, benchmark_table, metadata_table, validation_table, write_csv

    written = []
    for view, rows in results.validation.items():
        base = results.bases.get(view)
        base_rows = results.validation.get(base, []) if base else None
        written.append(write_csv(validation_table(rows, base_rows), out / f"results-{view}.csv"))
    for (kind, tag), rows in results.benchmarks.items():
        columns = BENCH_COLUMNS[kind]
        written.append(write_csv(benchmark_table(rows, columns), out / f"benchmark-{kind}-{tag}.csv"))
        # Same name in a subfolder: readers that glob `benchmark-infer-*.csv` see timm's files only.
        written.append(write_csv(benchmark_table(rows, columns, detailed=True), out / DETAILED / f"benchmark-{kind}-{tag}.csv"))
    if results.metadata:
        written.append(write_csv(metadata_table(results.metadata), out / "model_metadata-in1k.csv"))
    return written


def check_out_dir(out: Path) -> None:
    """`out` must be a folder we can write to."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; pass a folder for the result CSVs")
