"""One `rbench run`: plan (every name resolved, every data folder checked), then the models,
then the CSV reports.

Reports are rewritten after each model, so a run stopped halfway still leaves valid files of
what it finished.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .backends import BackendStack, best_stack, resolve_stack
from .benchmark import BenchSettings, infer_benchmark
from .errors import DataError, RbenchError
from .metadata import in1k_rows, metadata_rows
from .models import WEIGHTS_CHOICES, create_model, param_count, pretrained_tag, resolve_models
from .paths import cache_dir
from .registry import Registry
from .specs import DataRequest, MetricSpec, Source

BENCHES = ("validate", "infer", "metadata")


@dataclass(kw_only=True)
class RunOptions:
    """Everything `rbench run` was asked to do; defaults are the embedded default suite's."""

    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    backends: list[str] = field(default_factory=list)  # empty: the best available
    benches: list[str] = field(default_factory=lambda: list(BENCHES))
    out: Path = Path("results")
    data_root: Path | None = None
    data_paths: dict[str, Path] = field(default_factory=dict)
    batch_size: int = 256
    workers: int = min(8, os.cpu_count() or 1)
    img_size: int | None = None
    weights: str = "pretrained"
    trust_checkpoint: bool = False
    allow_partial: bool = False
    bench: BenchSettings = field(default_factory=BenchSettings)


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


def make_plan(options: RunOptions, registry: Registry) -> Plan:
    """Resolve every name and check every data folder, before any model runs."""
    unknown = [b for b in options.benches if b not in BENCHES]
    if unknown:
        raise RbenchError(f"unknown benchmark {unknown[0]!r}; --bench takes {', '.join(BENCHES)}")
    weights = options.weights
    if weights not in WEIGHTS_CHOICES and not Path(weights).is_file():
        raise RbenchError(f"--weights {weights!r}: not 'pretrained', 'random' or an existing checkpoint file")
    dataset_specs = [registry.get("datasets", name) for name in options.datasets] if "validate" in options.benches else []
    for name in options.data_paths:
        registry.get("datasets", name)  # a typo in --data NAME=PATH is an error too
    stacks = [resolve_stack(name, registry) for name in options.backends] or [best_stack(registry)]
    models = resolve_models(options.models)
    if not models:
        raise RbenchError("no models to run; pass --models NAMES (see `rbench list models`)")
    metrics = list(registry.metrics.values())
    if dataset_specs and "accuracy" not in registry.metrics:
        raise RbenchError("the 'accuracy' metric plugin is not loaded; reinstall rbench")
    sources = []
    for spec in dataset_specs:
        path = options.data_paths.get(spec.name)
        if path is None and spec.default_folder and options.data_root is not None:
            path = options.data_root / spec.default_folder
        request = DataRequest(path=path, cache_dir=cache_dir(), allow_partial=options.allow_partial)
        sources.append(spec.load(request))
    return Plan(options=options, models=models, sources=sources, stacks=stacks, metrics=metrics)


@dataclass
class Results:
    """Rows at full precision, grouped by the file they will be written to."""

    validation: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    bases: dict[str, str | None] = field(default_factory=dict)
    benchmarks: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    metadata: list[dict[str, Any]] = field(default_factory=list)


def validate_model(name: str, plan: Plan, progress=None) -> list[tuple[str, dict[str, Any]]]:
    """Score one model on every source of the plan: `[(view name, row), ...]`."""
    from .data import eval_data_config, eval_transform, make_loader
    from .validate import predict, score_views

    options = plan.options
    stack = plan.stacks[0]
    model = create_model(name, options.weights, trust_checkpoint=options.trust_checkpoint)
    config = eval_data_config(model, options.img_size)
    transform = eval_transform(config)
    common = {
        "model": pretrained_tag(model),
        "img_size": config["input_size"][-1],
        "param_count": param_count(model),
        "crop_pct": config["crop_pct"],
        "interpolation": config["interpolation"],
    }
    model = stack.prepare_model(model)
    rows = []
    for source in plan.sources:
        loader = make_loader(source.samples, transform, batch_size=options.batch_size,
                             workers=options.workers, pin_memory=stack.device == "cuda")
        task = progress.add_task(f"validate {name} on {source.name}", total=len(source.samples)) if progress else None
        logits = predict(model, loader, stack, lambda n: progress and progress.advance(task, n))
        if progress:
            progress.remove_task(task)
        for view, scores in score_views(logits, source, plan.metrics).items():
            rows.append((view, {**common, **scores}))
    return rows


def run_plan(plan: Plan, out: Path, progress=None) -> tuple[Results, list[Path]]:
    """Run every model of the plan; reports are rewritten in `out` after each model."""
    options = plan.options
    results = Results()
    for source in plan.sources:
        for view in source.views:
            results.bases[view.name] = view.base
    written: list[Path] = []
    if "metadata" in options.benches:  # all models at once: it runs in parallel processes
        results.metadata = metadata_rows(plan.models, workers=options.workers, progress=progress)
        written = write_reports(results, out)
    if not ({"validate", "infer"} & set(options.benches)):
        return results, written
    overall = progress.add_task("models", total=len(plan.models)) if progress else None
    for name in plan.models:
        if "validate" in options.benches and plan.sources:
            for view, row in validate_model(name, plan, progress):
                results.validation[view].append(row)
        if "infer" in options.benches:
            for stack in plan.stacks:
                steps = options.bench.warmup_steps + options.bench.steps
                task = progress.add_task(f"infer {name} on {stack.name}", total=steps) if progress else None
                row = infer_benchmark(name, stack, options.bench, options.img_size,
                                      on_step=lambda: progress and progress.advance(task))
                if progress:
                    progress.remove_task(task)
                results.benchmarks[f"benchmark-infer-{stack.file_tag()}.csv"].append({**row, "backend": stack.name})
        written = write_reports(results, out)
        if progress:
            progress.advance(overall)
    return results, written


def write_reports(results: Results, out: Path) -> list[Path]:
    """Every CSV that the results so far make, rewritten atomically."""
    from .report import benchmark_table, metadata_table, model_metadata_table, validation_table, write_csv

    written = []
    for view, rows in results.validation.items():
        base = results.bases.get(view)
        base_rows = results.validation.get(base, []) if base else None
        written.append(write_csv(validation_table(rows, base_rows), out / f"results-{view}.csv"))
    for file_name, rows in results.benchmarks.items():
        written.append(write_csv(benchmark_table(rows), out / file_name))
    if results.metadata:
        written.append(write_csv(metadata_table(in1k_rows(results.metadata)), out / "model_metadata-in1k.csv"))
        written.append(write_csv(model_metadata_table(results.metadata), out / "model_metadata.csv"))
    return written


def check_out_dir(out: Path) -> None:
    """`out` must be a folder we can write to."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; pass a folder for the result CSVs")
