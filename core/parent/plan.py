"""Options and the plan: what `rbench run` was asked, with every name resolved and every data
folder listed and checked, before any model runs; then the plan's grid of cells (`plan_cells`,
each with the identity its key hashes) and the job that ships some of them (`make_job`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..worker.backends import BackendStack, best_stack, resolve_stack
from ..worker.benchmark import BENCH_KINDS, BenchSettings
from ..worker.cells import Job
from ..errors import DataError, PluginError, RbenchError, unknown_name
from ..folders import file_stats
from ..worker.input_cache import DEFAULT_LIMIT as DEFAULT_INPUT_CACHE_SIZE
from ..worker.models import WEIGHTS_CHOICES, ModelEntry, architecture, check_checkpoint_fits, check_weights_available, \
    resolve_entries
from ..paths import cache_dir
from ..record import Cell, versions
from ..registry import Registry, check_data_options
from ..specs import DataRequest, MetricSpec, Source

BENCHES = ("validate", *BENCH_KINDS, "metadata")
DEFAULT_BENCHES = ("validate", "infer", "metadata")
RESULTS_COLUMN = "top1"  # the timm schema's column that makes a metric the results file's


@dataclass(frozen=True)
class NumberRange:
    """The values a numeric option takes: a finite number from `low` to `high` (above `low` with
    `low_open`), a whole one for `int`."""

    kind: type
    low: float
    high: float
    low_open: bool = False

    def check(self, value: Any, name: str) -> int | float:
        """`value` as a number of this range; anything else (`inf`, `nan`, `1e400`, a number out
        of range, text) is an `RbenchError` naming the option `name` and giving the range."""
        import math

        try:
            number = self.kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if isinstance(value, float) and self.kind is int and number != value:
            number = None  # 2.5 is not a whole number, whatever int() makes of it
        above = number is not None and math.isfinite(number) and (number > self.low if self.low_open
                                                                  else number >= self.low)
        if not (above and number <= self.high):
            what = "a whole number" if self.kind is int else "a finite number"
            span = (f"above {self.low:,} and at most {self.high:,}" if self.low_open
                    else f"from {self.low:,} to {self.high:,}")
            raise RbenchError(f"{name} {value}: expected {what} {span}")
        return number


# The range of each numeric option of `rbench run` (and `rbench.evaluate`), by its name there.
RUN_NUMBERS = {
    "batch_size": NumberRange(int, 1, 65536), "workers": NumberRange(int, 0, 1024),
    "img_size": NumberRange(int, 16, 8192), "warmup_steps": NumberRange(int, 0, 1_000_000),
    "bench_steps": NumberRange(int, 1, 1_000_000), "bench_seconds": NumberRange(float, 0, 86400),
    "bench_repeats": NumberRange(int, 1, 1000), "latency_queries": NumberRange(int, 1, 10_000_000),
    "latency_seconds": NumberRange(float, 0, 86400), "latency_batch_size": NumberRange(int, 1, 65536),
    "cell_timeout": NumberRange(float, 0, 604800, low_open=True), "limit": NumberRange(int, 1, 1_000_000_000),
}


@dataclass(kw_only=True)
class RunOptions:
    """Everything `rbench run` was asked to do; defaults are the embedded default suite's."""

    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # empty: the default data set (DatasetSpec.default)
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
    weights_name: str | None = None  # the row name of --weights (`models.row_name`); None: derived
    trust_checkpoint: bool = False
    allow_partial: bool = False
    bench: BenchSettings = field(default_factory=BenchSettings)
    input_cache: bool = True  # read and write the decoded-input cache
    input_cache_dir: Path | None = None  # None: input_cache.default_root()
    input_cache_size: int = DEFAULT_INPUT_CACHE_SIZE
    executor: str | None = None  # None: the executor of runs without benchmarks (ExecutorSpec.default_for)
    executor_options: dict[str, str] = field(default_factory=dict)  # KEY -> VALUE, as given (ExecutorSpec.options)
    cell_timeout: float | None = None
    metrics: list[str] = field(default_factory=list)  # empty: every loaded metric, accuracy first
    limit: int | None = None  # the first N samples of each source, for a quick look (rows marked partial)
    keep: str = "compact"  # what validation keeps of each prediction (KEEP_CHOICES): compact, or full scores
    keep_datasets: dict[str, str] = field(default_factory=dict)  # per data set, over `keep` (`--keep NAME=scores`)

    def keeps_scores(self, source: Source) -> bool:
        """Whether the validation cells of `source` keep full scores: the source declares it
        (`Source.keep_scores`), or `--keep` asks it for every data set or for this one."""
        return source.keep_scores or self.keep_datasets.get(source.name, self.keep) == "scores"

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
        bench=replace(options.bench, batch_size=min(options.bench.batch_size, 32), warmup_steps=3, steps=10, seconds=1.0,
                      latency_queries=100, latency_seconds=1.0),
    )


def parse_keep(values: str | Iterable[str] | Mapping[str, str] | None) -> tuple[str | None, dict[str, str]]:
    """`--keep` values (`scores`, `imagenet=scores`, repeatable; or a mapping NAME -> VALUE) ->
    `(the value for every data set or None, {data set: value})`; an `RbenchError` for a value
    that is not one of `KEEP_CHOICES`."""
    from ..predictions import KEEP_CHOICES

    if values is None:
        return None, {}
    if isinstance(values, Mapping):
        items = [f"{name}={value}" for name, value in values.items()]
    else:
        items = [values] if isinstance(values, str) else list(values)
    every, per_dataset = None, {}
    for item in items:
        name, _, value = str(item).strip().rpartition("=")
        if value not in KEEP_CHOICES or (_ and not name):
            raise RbenchError(f"--keep {item!r}: expected {' or '.join(KEEP_CHOICES)}, for every data set, or "
                              f"NAME={'|'.join(KEEP_CHOICES)} for one (for example --keep imagenet=scores)")
        if name:
            per_dataset[name] = value
        else:
            every = value
    return every, per_dataset


def run_options(registry: Registry, *, models: list[str], datasets: list[str], backends: list[str],
                benches: list[str], data_paths: Mapping[str, Path], data_dir: Path | None = None,
                batch_size: int | None = None, workers: int | None = None, weights: str | None = None,
                executor: str | None = None, bench: Mapping[str, Any] | None = None,
                keep: str | Iterable[str] | Mapping[str, str] | None = None, **given: Any) -> RunOptions:
    """What `rbench run` was given, resolved into `RunOptions`: the one place its defaults are
    decided. Lists may be empty and values None when not given. `--data-dir` is the data set
    that takes a folder (`Registry.data_dir_dataset`); a folder given for a data set asks for
    it; no models is the embedded default suite; `bench` overrides `BenchSettings` fields; no
    executor is the registry's default for runs with or without benchmarks. `keep` is what
    `--keep` takes (`parse_keep`; none: compact predictions). `given` sets the other
    `RunOptions` fields as they are."""
    every, per_dataset = parse_keep(keep)
    options = RunOptions(data_paths=dict(data_paths), keep=every or "compact", keep_datasets=per_dataset, **given)
    if data_dir is not None:
        options.data_paths.setdefault(registry.data_dir_dataset(), data_dir)
    if datasets:
        options.datasets = list(datasets)
    elif options.data_paths:  # a folder given for a data set asks for that data set
        options.datasets = list(options.data_paths)
    options.backends = list(backends)
    if benches:
        options.benches = list(benches)
    options = replace(options, models=list(models)) if models else default_suite(options)
    chosen = {k: v for k, v in (bench or {}).items() if v is not None}
    if batch_size:
        chosen.setdefault("batch_size", batch_size)
    options = replace(options, batch_size=batch_size or options.batch_size,
                      workers=options.workers if workers is None else workers, weights=weights or options.weights,
                      bench=replace(options.bench, **chosen))
    benchmarks = any(b in options.benches for b in BENCH_KINDS)
    return replace(options, executor=executor or registry.default_executor(benchmarks))


@dataclass
class Plan:
    """A run with every name resolved and every data source listed; `executor_options` are the
    executor's settings, parsed by its declaration (what `Grid.options` holds)."""

    options: RunOptions
    models: list[ModelEntry]
    sources: list[Source]
    stacks: list[BackendStack]
    metrics: list[MetricSpec]
    executor_options: dict[str, Any] = field(default_factory=dict)


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
    # Report options are applied when reporting (`DatasetSpec.report_options`): the listing, and so
    # the cells' keys, never depend on them.
    given = {key: value for key, value in options.data_options.get(spec.name, {}).items()
             if key not in spec.report_options}
    request = DataRequest(path=path, cache_dir=cache_dir(), views=views, allow_partial=options.allow_partial,
                          options=given)
    source = spec.load(request)
    declared = spec.view_bases()
    undeclared = [v.name for v in source.views if v.name not in declared]
    if undeclared:
        raise PluginError(f"data set {spec.name} returned the view {undeclared[0]!r}, which its DatasetSpec.views "
                          f"does not declare ({', '.join(declared)}); declare it there, with its base view")
    if views is not None:
        missing = views - {v.name for v in source.views}
        if missing:
            raise DataError(f"data set {spec.name} at {source.root} cannot give the view {sorted(missing)[0]!r}"
                            + (f" ({source.note})" if source.note else ""))
        source = replace(source, views=[v for v in source.views if v.name in views])
    if options.limit is not None and options.limit < len(source.samples):
        source = limited(source, options.limit)
    return source


def limited(source: Source, n: int) -> Source:
    """The first `n` samples of `source`, each view keeping those of its samples (and labels)
    among them; marked partial, so that its rows say how many images they counted."""
    views = []
    for view in source.views:
        if view.samples is None:
            views.append(view)
            continue
        kept = [(i, k) for k, i in enumerate(view.samples) if i < n]
        labels = [view.labels[k] for _, k in kept] if view.labels is not None else None
        views.append(replace(view, samples=[i for i, _ in kept], labels=labels))
    note = "; ".join(filter(None, [source.note, f"--limit: the first {n:,} of {len(source.samples):,} images"]))
    return replace(source, samples=list(source.samples[:n]), views=views, partial=True, note=note)


def make_plan(options: RunOptions, registry: Registry) -> Plan:
    """Resolve every name and check every data folder, before any model runs; nothing is
    written unless the whole plan holds."""
    unknown = [b for b in options.benches if b not in BENCHES]
    if unknown:
        raise RbenchError(f"unknown benchmark {unknown[0]!r}; --bench takes {', '.join(BENCHES)}")
    options = replace(options, executor=options.executor or registry.default_executor(benchmarks=False))
    executor_options = registry.executor_options(options.executor, options.executor_options)
    if "validate" in options.benches and not options.datasets:
        options = replace(options, datasets=[registry.default_dataset()])
    wanted = requested_views(options.datasets, registry) if "validate" in options.benches else {}
    for name in [*options.data_paths, *options.data_options, *options.keep_datasets]:
        registry.get("datasets", name)  # a typo in --data NAME=PATH is an error too
    for name, given in options.data_options.items():  # a report option applies to the store's rows of a data
        check_data_options(registry.get("datasets", name), given)  # set this run may not list
    stacks = [resolve_stack(name, registry) for name in options.backends] or [best_stack(registry)]
    # A checkpoint that is damaged, empty or unsafe, or two weights given one row name: one line,
    # before any model runs.
    models = resolve_entries(options.models, options.weights, options.weights_name,
                             trust_checkpoint=options.trust_checkpoint)
    if "validate" in options.benches:  # pretrained weights not here: one line, before any model runs
        check_weights_available([m.name for m in models if m.weights == "pretrained"])
        fitted: dict[str, list[str]] = {}  # each checkpoint's models: its header is read once
        for entry in models:
            if entry.weights not in WEIGHTS_CHOICES:
                fitted.setdefault(entry.weights, []).append(entry.name)
        for path, names in fitted.items():  # keys and shapes against each model, on the meta device
            check_checkpoint_fits(path, names, options.trust_checkpoint)
    if not models:
        raise RbenchError("no models to run; pass --models NAMES (see `rbench list models`)")
    metrics = select_metrics(options.metrics, registry)
    sources = [load_source(registry.datasets[name], views, options) for name, views in wanted.items()]
    check_folders(options)
    return Plan(options=options, models=models, sources=sources, stacks=stacks, metrics=metrics,
                executor_options=executor_options)


def select_metrics(names: list[str], registry: Registry) -> list[MetricSpec]:
    """The metrics named (`--metrics`), or every loaded one, first the one whose columns fill the
    timm-schema results file (it writes `top1`)."""
    if names:
        return [registry.get("metrics", name) for name in names]
    return sorted(registry.metrics.values(), key=lambda m: (RESULTS_COLUMN not in m.columns, m.name))


def check_out_dir(out: Path) -> None:
    """`out` must be a folder we can write to (made if missing), on a disk with room."""
    from ..files import check_writable_folder

    check_writable_folder(out, "--out")


def check_folders(options: RunOptions) -> None:
    """Every folder the run writes to (`--out`, `--store`) can be written, and the store's
    folders and lock are its own (`Store.check`); the decoded-input cache's is a folder (a
    read-only cache is still read, so it need not be writable)."""
    from ..files import check_writable_folder
    from ..store import Store

    check_writable_folder(options.out, "--out")
    check_writable_folder(options.store_dir, "--store")
    Store(options.store_dir).check()
    if options.input_cache and "validate" in options.benches:
        from ..worker.input_cache import default_root

        cache = options.input_cache_dir or default_root()
        if cache.exists() and not cache.is_dir():
            raise RbenchError(f"--cache-dir {cache} is a file, not a folder; pass a folder, or --no-cache")


# --- the grid: its cells and their jobs ---------------------------------------------------

def source_identity(source: Source) -> str:
    """A hash of a source's file list, sizes, labels and views: it changes when the data set does.

    The files of a build (`Source.build`) are made by the cells, after the plan: their sizes
    are not known here and are left out (the build's folder name and the source's `identity`
    say what decides their pixels)."""
    digest = hashlib.sha256(str(source.root).encode())
    built = _built_samples(source)
    stats = file_stats(path for i, (path, _) in enumerate(source.samples) if i not in built)
    for i, (path, label) in enumerate(source.samples):
        if i in built:
            size = "built"
        else:
            size = stats[path].st_size if stats[path] else -1
        digest.update(f"{path}\0{size}\0{label}\n".encode())
    digest.update(source.identity.encode())
    if source.border:  # only when set: the keys of sources without one stay as they were
        digest.update(f"\0border {source.border}".encode())
    return digest.hexdigest()[:20]


def _built_samples(source: Source) -> set[int] | range:
    """The indices of the samples a source's build makes."""
    if source.build is None:
        return range(0)
    return {i for _, first, end in source.build.slices for i in range(first, end)}


def plan_cells(plan, data: Mapping[str, str] | None = None) -> list[Cell]:
    """Every cell of a `Plan`, grouped by model (metadata, validation, then benchmarks).

    `data`: each source's `source_identity`, when already computed."""
    options = plan.options
    common = versions()
    cells = []
    if data is None:
        data = {source.name: source_identity(source) for source in plan.sources}
    for entry in plan.models:
        name = entry.name
        # The row name is in the identity where the name and weights do not already give it.
        named = {"name": entry.row_name} if entry.named else {}
        weighted = dict(weights=entry.weights, name=entry.row_name)
        if "metadata" in options.benches:
            cells.append(Cell(kind="metadata", model=name,
                              identity={"kind": "metadata", "model": name, **common}))
        if "validate" in options.benches:
            # Every stack validates; the first is the reference that the others are compared with
            # (their cells also run it on the same inputs: `validate_cell`).
            reference = plan.stacks[0].name
            for stack in plan.stacks:
                against = {"reference": reference} if stack is not plan.stacks[0] else {}
                for source in plan.sources:
                    cell = Cell(kind="validate", model=name, source=source.name, backend=stack.name,
                                device=stack.device, ray_resources=stack.ray_resources, **weighted, identity={
                                    "kind": "validate", "model": name, "weights": entry.weights_id, **named,
                                    "source": source.name,
                                    "data": data[source.name], "views": [v.name for v in source.views],
                                    "backend": stack.name, "img_size": options.img_size, **against, **common})
                    cells.append(cell.keeping_scores() if options.keeps_scores(source) else cell)
        # A benchmark times random weights whatever the entry's, but its rows join the entry's
        # accuracy rows: pretrained weights' rows name the architecture (as timm's benchmark files
        # do, joined by architecture and size), other weights' carry their row name, and their
        # cells are their own.
        pretrained = entry.weights == "pretrained"
        bench_rows = dict(weights=entry.weights, name=architecture(name) if pretrained else entry.row_name)
        bench_weights = {} if pretrained else {"weights": entry.weights_id, **named}
        for kind in (k for k in BENCH_KINDS if k in options.benches):
            for stack in plan.stacks:
                cells.append(Cell(kind=kind, model=name, backend=stack.name, device=stack.device,
                                  ray_resources=stack.ray_resources, **bench_rows, identity={
                    "kind": kind, "model": name, **bench_weights, "backend": stack.name,
                    "img_size": options.img_size, "bench": asdict(options.bench), **common}))
    return cells


def make_job(plan, cells: list[Cell], sources: Mapping[str, str]) -> Job:
    """The job of `cells` in `plan`, with `sources` the listings already in the store."""
    options = plan.options
    return Job(cells=tuple(cells), stacks=tuple(s.name for s in plan.stacks), sources=dict(sources),
               store=str(options.store_dir.resolve()), batch_size=options.batch_size, workers=options.workers,
               img_size=options.img_size, trust_checkpoint=options.trust_checkpoint,
               bench=options.bench, input_cache=options.input_cache,
               input_cache_dir=str(options.input_cache_dir.resolve()) if options.input_cache_dir else None,
               input_cache_size=options.input_cache_size)
