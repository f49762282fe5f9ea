"""The frozen, keyword-only dataclasses that plugins return from the hooks in `hookspecs`.

One dataclass per kind of plugin, so that a plugin file is a list of plain values:
`DatasetSpec` (a source of images with its scored views), `AddedViews` (views over a source's
stored predictions), `MetricSpec` and `BackendSpec`.
Nothing here imports torch: the callables in a spec import what they need when called.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

Label = int | tuple[int, ...]
"""A class index, or a set of acceptable class indices (ImageNet-ReaL style)."""


@dataclass(frozen=True, kw_only=True)
class ViewSpec:
    """One scored result set over a source: it becomes `results-<name>.csv`.

    A view may restrict the samples (`samples`: indices into the source), swap the labels
    (`labels`: one per selected sample, an int or a tuple of acceptable classes), or restrict
    the logits to a class subset (`classes`: the class indices the argmax runs over). Its base
    view (for the diff columns) is declared once, in `DatasetSpec.views`.

    A view can add columns of its own: `score(predictions)` gets the view's `Predictions`
    (unreadable samples left out) and returns `{column: value}`; these are added after the
    metrics' values and win over them (a view whose top-1 counts only some of its samples says
    so here). `columns` is then the file's full column order before the diff columns (None: the
    standard validation columns); every value not named there is kept but not written.

    Views are kept in the store's source listing, as data (`rbench.listings`), so that reports
    are rebuilt from the store alone: `score` must be a module-level function, or an instance of
    a module-level class whose attributes are JSON data (numbers, strings, lists, dicts with
    string keys, None), defined in the data set plugin's package (that of `DatasetSpec.load`).
    It is kept by name with its attributes and rebuilt without calling `__init__`: tuples among
    them come back as lists.
    """

    name: str
    samples: Sequence[int] | None = None
    labels: Sequence[Label] | None = None
    classes: Sequence[int] | None = None
    score: Callable[[Predictions], Mapping[str, Any]] | None = None
    columns: Sequence[str] | None = None


@dataclass(frozen=True, kw_only=True)
class Predictions:
    """What one model predicted for the samples one view scores, read from the store.

    One row per scored sample, in source order (numpy arrays):

    - `indices` `[n]`: the samples' indices in the source.
    - `labels`: each sample's label under the view (an int, or a tuple of acceptable classes).
    - `topk` `[n, k]`: the k best classes over the view's classes (`ViewSpec.classes`, else all),
      best first, as indices of the full label space; k is 5, or fewer when there are fewer classes.
    - `topk_logp` `[n, k]`: their log-probabilities (log-softmax over the view's classes).
    - `label_logp` `[n]`: the log-probability of the sample's int label (NaN for a label set,
      or a label outside the view's classes).
    - `logsumexp` `[n]`: the log-sum-exp of the logits over the view's classes (logit =
      log-probability + logsumexp).
    - `prob_sq_sum` `[n]`: the sum of the squared probabilities over the view's classes (so
      that a Brier score is exact: `prob_sq_sum - 2 exp(label_logp) + 1`).
    - `scores` `[n, C]` float32, or None: each sample's log-probabilities over every class of the
      model (log-softmax over all C classes, whatever the view's class restriction), as the file's
      `scores` column keeps them (float16 values), for a view with its own `score` (the one reader
      of them); None elsewhere, and when the file is compact (kept only with `--keep scores` or
      `Source.keep_scores`). For a score that needs the whole probability
      vector, such as a decision over groups of classes.
    """

    indices: Any
    labels: Sequence[Label]
    topk: Any
    topk_logp: Any
    label_logp: Any
    logsumexp: Any
    prob_sq_sum: Any
    scores: Any = None

    def __len__(self) -> int:
        return len(self.indices)

    def correct(self, k: int):
        """`(hit, scored)`, two boolean numpy arrays `[n]`: whether each sample's label (any of
        a label set) is among the top `k`, and whether the sample can be scored at all (False
        for an empty label set). The vectorised `hits`: `hits(k)[i]` is `hit[i]` where
        `scored[i]`, else None."""
        import numpy as np

        if k not in self._correct:
            table, scored = self._label_table
            top = np.asarray(self.topk)[:, :k]
            if table.ndim == 1:
                hit = (top == table[:, None]).any(axis=1)
            else:
                hit = (top[:, :, None] == table[:, None, :]).any(axis=(1, 2))
            hit.flags.writeable = False  # shared by every metric that asks
            self._correct[k] = (hit, scored)
        return self._correct[k]

    @functools.cached_property
    def _correct(self) -> dict:
        return {}

    @functools.cached_property
    def _label_table(self):
        """`(labels, scored)`: the int labels `[n]`, or the label sets padded with -1 `[n, m]`;
        and which samples have a label at all. Computed once per `Predictions`."""
        import itertools

        import numpy as np

        n = len(self.labels)
        try:
            labels = np.asarray(self.labels, dtype=np.int64)
        except (TypeError, ValueError):  # label sets of several lengths
            labels = None
        if labels is not None and labels.ndim == 1 and labels.shape[0] == n:  # ints; sets of one length are 2-D
            scored = np.ones(n, dtype=bool)
            scored.flags.writeable = False
            return labels, scored
        sets = [label if isinstance(label, (tuple, list)) else tuple(label)
                if isinstance(label, (set, frozenset)) else (int(label),) for label in self.labels]
        lengths = np.fromiter(map(len, sets), dtype=np.int64, count=n)
        width = max(1, int(lengths.max(initial=0)))
        table = np.full((n, width), -1, dtype=np.int64)
        flat = np.fromiter(itertools.chain.from_iterable(sets), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(n), lengths)
        columns = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        table[rows, columns] = flat
        scored = lengths > 0
        scored.flags.writeable = False
        return table, scored

    def hits(self, k: int) -> list[bool | None]:
        """Per sample: whether its label (any of a label set) is among the top `k`; None for
        an empty label set (a sample nobody can score)."""
        found: list[bool | None] = []
        for row, label in zip(self.topk[:, :k].tolist(), self.labels):
            accepted = set(label) if isinstance(label, (tuple, list, set, frozenset)) else {int(label)}
            found.append(bool(accepted.intersection(row)) if accepted else None)
        return found


@dataclass(frozen=True, kw_only=True)
class SourceBuild:
    """Files a source's samples are made into before a model can read them (ImageNet-C's
    JPEGs), made by the cells that need them, where they run, rather than when the run is
    planned: the plan lists the samples without the files.

    `folder` holds the build; `slices` are its parts, `(name, first, end)`: the subfolder
    `folder/name` that makes samples `first` to `end - 1` (every file of them, one per sample).
    A validation cell makes the slices its samples need that are not made yet, each under a
    lock (`<slice>/.build.lock`), so that two cells, on one machine or sharing the folder, never
    make one slice twice and split the slices between them; a slice is made when
    `<slice>/.complete` holds its file count, written last, so a half-made slice is never read.

    `tasks(names)` returns the work still missing for those slices (checked on disk now):
    `(task, files)` pairs, a task plain data; `make(task)` does one in a worker process and
    returns the files it wrote (0: its input was unreadable; those samples count as
    unreadable), writing each file whole (`rbench.write_bytes`) so that a stopped build leaves
    whole files only; `setup()` runs once in each worker process. `tasks` is an instance of a
    module-level class whose attributes are JSON data, `make` and `setup` module-level
    functions, all of the data set plugin's package: they are kept in the store's listing by
    name, as a view's `score` is. `group` slices are given to `tasks` together when they can be
    (slices that share work, such as one decoded image). `workers`: processes (None: the
    machine's CPUs). `files` are the name patterns of what it writes (`rbench.mark_build`),
    `about` what `build.json` says, and `label` the line said when making starts, formatted
    with `tasks`, `files` and `folder`.
    """

    folder: Path
    slices: Sequence[tuple[str, int, int]]
    tasks: Callable[[Sequence[str]], Sequence[tuple[Any, int]]]
    make: Callable[[Any], int]
    setup: Callable[[], None] | None = None
    group: int = 1
    workers: int | None = None
    files: Sequence[str] = ()
    about: Mapping[str, Any] = field(default_factory=dict)
    label: str = "making {files:,} files in {folder}"


@dataclass(frozen=True, kw_only=True)
class Source:
    """Images on disk, as a dataset plugin's `load` returns them.

    `samples` are `(path, class index)` pairs in a fixed order; `views` are what gets scored
    from one forward pass over them. `partial` marks an incomplete data set run with
    `--allow-partial` (its result rows then say how many images they counted); `note` is shown
    to the user.

    `sample_transform(index, image)`, when set, changes sample `index`'s image after the eval
    resize and centre crop (so at the model's own input size) and before the conversion to a
    tensor and the normalisation: it takes a PIL RGB image and returns a PIL image or an
    `HxWx3` uint8 array of the same size. It runs in the loader workers and is kept in the
    store's listing as a view's `score` is (a module-level function, or an instance of a
    module-level class of JSON attributes, from the data set plugin's package), and it must
    be deterministic in `index` (every model must see the same pixels). A source can list one
    file several times (virtual samples: the same image under different transforms).
    `identity` names anything else that changes its results (a library version, a seeding
    scheme): it goes into the cells' keys and the decoded-input cache's, so that results and
    pixels made otherwise are not reused.

    `build`: the files some samples are made into by the cells that read them (`SourceBuild`);
    their sizes are not in the cells' keys (they do not exist when the run is planned), so the
    build's folder name or `identity` must say everything that decides their pixels.

    `keep_scores`: its validation cells always keep each sample's full scores (log-probabilities
    over every class, as `rbench run --keep scores` asks; 2 bytes a class a sample), for a data
    set whose scoring needs the whole probability vector rather than the top-5 (a decision over
    groups of classes, such as model-vs-human's 16 categories, each the mean probability of its
    WordNet hyponyms).

    `border`: pixels cut off every side of each decoded image before the eval resize (a frame
    drawn around a data set's images, such as ObjectNet's, that its authors' evaluation removes
    before the model's transform); it is in the cells' keys and the decoded-input cache's.
    """

    name: str
    root: Path
    samples: Sequence[tuple[str, int]]
    views: Sequence[ViewSpec]
    partial: bool = False
    note: str = ""
    sample_transform: Callable[[int, Any], Any] | None = None
    identity: str = ""
    build: SourceBuild | None = None
    keep_scores: bool = False
    border: int = 0


@dataclass(frozen=True, kw_only=True)
class DataRequest:
    """What the user asked for a source.

    `path`: its folder, if any. `views`: the view names asked for by name (`-d imagenet-real`),
    or None when the source itself was named (all its views). `allow_partial`: run on an
    incomplete data set. `options`: this source's `--data-option NAME.KEY=VALUE` settings.
    """

    path: Path | None
    cache_dir: Path
    views: frozenset[str] | None = None
    allow_partial: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ReportRequest:
    """One view's rows as a report is about to write them, for `DatasetSpec.report_rows`.

    `view`: the view's name. `rows`: every row of its `results-<view>.csv` (this store's, at full
    precision, the view's own score columns included, and any `--import`ed ones), never to be
    changed in place. `options`: the data set's `--data-option` settings given to this command
    (its report options, and on `rbench run` the others too). `store`: the store reported.
    `final`: True for `rbench report`, whose rows are all there (an option that names something
    they lack is a `DataError`); False while `rbench run` may still add rows (what cannot be
    computed yet is left empty, and a note says so). `view_rows`: every view's rows of the same
    report, as this one's (before any `report_rows`), for a column that pairs a row with the same
    model's row of another view (ImageNet-O's AUPR against its ImageNet val images).
    """

    view: str
    rows: Sequence[Mapping[str, Any]]
    options: Mapping[str, str]
    store: Path
    final: bool
    view_rows: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """A data set source.

    `load(request)` lists the samples and returns a `Source`; it raises `DataError` for a
    missing or malformed folder, before any model runs. `default_folder` is where the source
    lives under `--data-root` when no `--data NAME=PATH` is given (None: needs no folder, or
    needs one given explicitly). `views` maps each view name the source can produce to its
    base view (None for a base); empty means one view named like the source. A view name can
    be asked for with `-d` as well as the source's name, and every view a source returns
    must be declared here.

    `options` declares the `--data-option NAME.KEY=VALUE` keys the source reads, each with a
    one-line description (`{"labels": "PATH: a label file for a flat val folder"}`); empty
    means it takes none. The plan rejects any other key before `load` is called, so a typo is
    an error, never silently ignored. None: not declared, every key is passed to `load`
    unchecked (declare them).

    `part_columns` maps a view whose file has a top-1 (%) column per part of it (ImageNet-C's
    corruptions) to the names those columns may have; the HTML site draws the ones a file has
    as a heat map of errors. A view not named here gets no heat map.

    `data_dir`: this is the data set whose folder `rbench run --data-dir PATH` gives (a folder
    of class subfolders). `default`: this is the data set validated when `rbench run` names none
    and gives no folder, and by `rbench check-backend`; it must need no folder. At most one
    loaded data set declares each.

    `remake(source)`: for a data set whose files `load` generates, the same on every machine (no
    download, no user's folder): makes them on a machine where the listed folder is not (a node
    of a Ray cluster that shares no disk with the driver) and returns the source with its files
    there. None: the files of its sources must be at the listed paths on every machine that runs
    its cells.

    `report_options` declares data options applied when a report is written, never when the
    source is listed: `KEY -> description`, as `options`. `rbench run` and `rbench report` both
    take them (`--data-option NAME.KEY=VALUE`); `load` never sees them, so they change no cell's
    key and no listing, and a report alone applies them to the stored predictions.
    `report_rows(request)` applies them: called with a `ReportRequest` for each view of this data
    set that a report writes, whenever one of them is given (on every report when the data set
    declares no report option), it returns `(rows, notes)`: the rows to write (new dicts; the
    same order is not needed) and one-line notes for the user.
    """

    name: str
    description: str
    load: Callable[[DataRequest], Source]
    default_folder: str | None = None
    views: Mapping[str, str | None] = field(default_factory=dict)
    options: Mapping[str, str] | None = None
    part_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    data_dir: bool = False
    default: bool = False
    remake: Callable[[Source], Source] | None = None
    report_options: Mapping[str, str] = field(default_factory=dict)
    report_rows: Callable[[ReportRequest], tuple[list[dict[str, Any]], list[str]]] | None = None

    def view_bases(self) -> Mapping[str, str | None]:
        """`views`, or `{name: None}` for a source with a single view of its own name."""
        return self.views or {self.name: None}


@dataclass(frozen=True, kw_only=True)
class AddedViews:
    """Views over an existing source, declared by a data set plugin, scored from the stored
    predictions of that source's cells: `rbench report` gives their rows with no model run.

    `source` is the `Source.name` they extend (`"imagenet"`); `views` maps each view's name to
    its base view (for the diff columns), or None, as `DatasetSpec.views` does; a name is unique
    among every data set's views and every `AddedViews`' views. `make(source)` gets the source
    as its store listing kept it (samples, labels and the views of the run) and returns the
    views, each declared in `views` (fewer when the samples do not allow one). Each is scored
    as a view of the run is (metrics, `score`, `columns`, its own `results-<view>.csv`), after
    the source's own views, for every record of the source whose run scored the whole source
    (a run that named views with `-d` gets only those). A view that restricts the classes
    (`ViewSpec.classes`) needs that restriction in the predictions file, or its full scores
    (`rbench run --keep scores`): a cell whose file has neither gets no row, and the report
    names it. `make` and the views' `score` follow `ViewSpec`'s rules (module-level functions,
    or classes of JSON attributes, of the plugin's package)."""

    name: str
    description: str
    source: str
    views: Mapping[str, str | None]
    make: Callable[[Source], Sequence[ViewSpec]]


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """A metric computed per view from a model's stored predictions (never a forward pass).

    `compute(predictions, view)` takes the view's `Predictions` and its `ViewSpec`, and returns
    a mapping with one value per name in `columns`, at full precision. The columns go into the
    view's `metrics-<view>.csv`; `top1`, `top1_err`, `top5` and `top5_err` (the `accuracy`
    metric's) also fill the timm-schema `results-<view>.csv`.

    `version` names the code of `compute`: reports keep each predictions file's scores in the
    store under the metric's name and version, and compute them again only for a version they
    have not seen. Change it whenever a change of `compute` changes a value it returns.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    compute: Callable[[Predictions, ViewSpec], Mapping[str, float]]
    version: str = "1"


def _identity(x: Any) -> Any:
    return x


def _no_reason() -> str | None:
    return None


def _nothing() -> None:
    return None


def _no_peak_memory() -> int | None:
    return None


def default_is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory: `torch.OutOfMemoryError`, or an error
    whose message says "out of memory".

    A channels_last "required rank" error and an illegal memory access are never out of memory,
    whatever else their message says: a smaller batch would not help, and after an illegal
    access the device is unusable.
    """
    import torch

    text = str(exc).lower()
    if "required rank" in text or "illegal" in text:
        return False
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text


class TelemetryReading(TypedDict, total=False):
    """One reading of a device's sensors; a key is left out where the device cannot tell it.

    - `clock_mhz`: the compute clock (a GPU's SM clock; the CPU's mean core frequency).
    - `memory_clock_mhz`: the memory clock.
    - `power_w`: the power drawn now, in watts.
    - `temperature_c`: the device's temperature, in degrees Celsius.
    - `energy_j`: a counter of the energy used so far, in joules (only differences matter; it
      must not wrap between two readings of one benchmark).
    - `throttle_reasons`: why the clocks are held below their maximum under load (power cap,
      thermal slowdown, ...), as short names; an empty tuple when the device says none.
    """

    clock_mhz: float
    memory_clock_mhz: float
    power_w: float
    temperature_c: float
    energy_j: float
    throttle_reasons: tuple[str, ...]


class Telemetry(Protocol):
    """Reads a device's sensors while it is benchmarked (see `BackendSpec.telemetry`).

    `read()` is called before the timed steps, about every half second during them, and after
    them; it must be cheap (well under a millisecond) and never raise for a sensor that is
    missing: it leaves that key out. The benchmark summarises the readings into the detailed
    row's telemetry columns.
    """

    def read(self) -> TelemetryReading: ...


class StepTimer(Protocol):
    """Times the steps of one benchmark on a device.

    `start()` and `stop()` bracket each step; after the last one, `times_ms()` waits for the
    device and returns every step's time in milliseconds, in order. A device with an
    asynchronous queue records markers in `start`/`stop` (CUDA events) rather than stopping
    the host after each step.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def times_ms(self) -> list[float]: ...


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """An accelerator backend (a base such as `cpu`, `cuda-amp`) or a modifier (`channels-last`).

    A stack is one base and any modifiers: `cuda-amp+channels-last`. The base says where and
    how the model runs and how that device is measured; every member may transform the model
    and the input batch, and clean up after a model.

    Fields of every backend:

    - `name`, `description`: what users type after `-b`, and what `rbench list backends` shows.
    - `modifier`: True for a modifier, which stacks after a base (`cpu+channels-last`).
    - `prepare_model(model)`, `prepare_input(batch)`: the model and each input batch moved,
      cast or wrapped; members apply theirs in stack order.
    - `unavailable()`: why the backend cannot run here, or None.
    - `cleanup()`: called after each benchmarked model, once it is freed, so that its leftovers
      (the allocator's cache, compiled graphs) do not slow the next one.

    Fields a modifier sets (a base may too):

    - `layout` (`nhwc`) and `suffix` (`dynamo`): parts of the benchmark file name.
    - `compiles`: its `prepare_model` compiles lazily, so the first call's time is reported as
      compile time (and never inside a step time).

    Fields of a base (a modifier's are ignored):

    - `device`: the torch device models and inputs are created on (`cpu`, `cuda`, `mps`).
    - `precision`: the file-name tag, `fp32`, `amp` (fp16 autocast), `amp_bf16`, `fp16` or
      `bf16` (model and input cast).
    - `autocast()`: the autocast context a step runs in (`contextlib.nullcontext` for none).
    - `device_tag()`: the hardware in benchmark file names (`cu130-h200`, `cpu-i7_12700h`).
    - `priority`: orders bases when choosing the best available one.
    - `pin_memory`: the data loader pins host memory (faster copies to this device).
    - `synchronize()`: waits for queued device work, so that a host clock can time it.
    - `timer()`: a new `StepTimer` for one benchmark's timed steps (CUDA events on a GPU);
      None times each step with the host clock and `synchronize()`.
    - `reset_peak_memory()`, `peak_memory()`: the device's peak allocated bytes since the last
      reset, or None where the device has no such count (the CPU).
    - `is_out_of_memory(exc)`: whether an error raised while benchmarking means the batch did
      not fit, so that a smaller batch is tried.
    - `telemetry()`: a new `Telemetry` reading this device's clocks, power, temperature,
      energy and throttling while a benchmark runs, or None where none can be read here (the
      library or driver missing); None as the field: no telemetry (empty columns).
    - `reference`: this is the base `rbench check-backend` compares a stack against: fp32 on a
      device every machine has (at most one loaded backend declares it).
    - `ray_resources`: what one cell on this backend reserves on a Ray cluster, in Ray's
      terms: `num_gpus`, `num_cpus` (default 1), `memory`, and any other key as a custom
      resource (`{"num_gpus": 1}` for the `cuda` bases, `{"my_npu": 1}` for an accelerator
      that Ray knows as a custom resource). Modifiers may add to it.

    Options (any backend): a member may be written `name:option` in a stack
    (`compile:max-autotune`). `options` maps each option the backend takes to a one-line
    description; `configure(option)` returns the spec to use for that option, or for None
    when none is written (the default, which may come from the environment). A backend that
    declares no options takes none; any other option is an error while planning. A configured
    spec names itself with its option (`compile:max-autotune`) unless the option is its default,
    and says it in its `suffix` when the option changes the results' file.
    """

    name: str
    description: str
    modifier: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    layout: str | None = None
    suffix: str | None = None
    compiles: bool = False
    priority: int = 0
    pin_memory: bool = False
    unavailable: Callable[[], str | None] = _no_reason
    device_tag: Callable[[], str] = lambda: "cpu"
    prepare_model: Callable[[Any], Any] = _identity
    prepare_input: Callable[[Any], Any] = _identity
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    synchronize: Callable[[], None] = _nothing
    timer: Callable[[], StepTimer] | None = None
    reset_peak_memory: Callable[[], None] = _nothing
    peak_memory: Callable[[], int | None] = _no_peak_memory
    is_out_of_memory: Callable[[BaseException], bool] = default_is_out_of_memory
    cleanup: Callable[[], None] = _nothing
    telemetry: Callable[[], Telemetry | None] | None = None
    reference: bool = False
    ray_resources: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    configure: Callable[[str | None], BackendSpec] | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutorOption:
    """A setting an executor takes: `rbench run --executor-option NAME=VALUE`.

    `name` is the key, `help` a one-line description, and `parse(text)` turns the text given
    into the value `Grid.options[name]` holds (raising `ValueError` or `TypeError` for text it
    cannot take, which is one line naming the option). `flag` also gives the option a
    command-line option of its own (`--ray-address`), which must not be one of `rbench run`'s.
    """

    name: str
    help: str
    parse: Callable[[str], Any] = str
    flag: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec:
    """A way to run the cells of a grid: in this process, one process per model, on a cluster.

    `execute(grid)` runs `grid.cells` (an `rbench.Grid`) and yields an `rbench.CellOutcome` for
    each cell as it ends, in any order. Cells are run with `rbench.run_cells(grid.job(cells))`,
    here or in another process or machine; each outcome it yields carries the cell's
    `rbench.CellRecord` (across processes: `CellOutcome.to_json` / `from_json`), which the
    executor yields to rbench, and rbench stores. When a worker dies or a cell runs past
    `grid.cell_timeout`, the executor yields `rbench.record_failure(...)` for that cell and goes
    on with the others. It passes each cell's start, progress and note events to
    `grid.on_event`; rbench sends `done` once the cell's record is stored.

    `options` declares the settings the executor takes (`ExecutorOption`); the plan rejects any
    other and parses each given one into `grid.options`. `default_for` makes it the executor of
    a run that gives no `--executor`: `"benchmarks"` for a run with benchmarks (timings need a
    fresh process per model), `"validation"` for a run without; at most one loaded executor
    declares each.
    """

    name: str
    description: str
    execute: Callable[[Any], Any]
    options: Sequence[ExecutorOption] = ()
    default_for: Literal["benchmarks", "validation"] | None = None


# --- the events a running cell sends (one JSON line each from a subprocess worker) ----------

class CellStarted(TypedDict):
    """The cell `key` began."""

    event: Literal["start"]
    key: str


class CellProgressed(TypedDict):
    """The cell `key` has done `done` of `total` (images, or benchmark steps): for its bar."""

    event: Literal["progress"]
    key: str
    done: int
    total: int


class CellNote(TypedDict):
    """A line worth reading about the cell `key` (a cache being built, a warning); `key` is ""
    for a note about the whole grid (a store in use, a record set aside)."""

    event: Literal["note"]
    key: str
    message: str


class CellDone(TypedDict):
    """The cell `key` ended: `status` is `ok` or how it failed, `message` the whole error."""

    event: Literal["done"]
    key: str
    status: str
    message: str


Event = CellStarted | CellProgressed | CellNote | CellDone
"""What `Grid.on_event` gets, in this order for each cell: one start, any progress and notes
(from the executor), one done (from rbench, once the cell's record is stored)."""


class GridStarted(TypedDict):
    """A grid's cells are about to run: `todo`, the cells (`rbench.Cell`) that will run, and
    `held`, how many of the grid's cells the store already holds. Sent once, in this process
    only (never by an executor), before any cell's events: the first event that
    `rbench.evaluate`'s `progress` gets."""

    event: Literal["grid"]
    todo: list[Any]
    held: int


Progress = GridStarted | Event
"""What `rbench.evaluate`'s `progress` callback gets: one `GridStarted`, then each cell's events."""
