"""The worker's side of a cell: the job an executor ships to a worker (`Job`), what a worker
resolves once per job (`JobContext`), and the runner of each kind of cell (validation, benchmarks,
metadata). A cell (`record.Cell`) is one model on one source and backend stack (validation), one
model on one backend stack (a benchmark), or one model's metadata; the parent plans them
(`plan.plan_cells`). A validation cell keeps predictions, not scores: its runner writes one
predictions file (or, for a worker without the store, sends its bytes back to the parent), and
scoring happens later, from the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .backends import BackendStack, BatchFailed, resolve_stack, with_backoff
from .benchmark import BENCH_KINDS, BenchSettings, run_benchmark
from ..errors import RbenchError, one_line
from .models import create_model, param_count, weights_label
from ..record import Cell, Entry
from ..specs import Source
from ..store import Store, predictions_file, source_of_listing


class CellFailure(Exception):
    """A cell that failed in a known way; `status` names how (`oom`, `build-failed`, `non-finite`,
    `unreadable`: no image of its source could be read)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class Job:
    """What an executor ships to a worker: the cells, and only what running them needs.

    `stacks` are backend stack names (the worker resolves them in its own registry); `sources`
    maps each source name to its listing in the store (`Store.put_source`), so that a worker
    never lists a data folder again. The job is plain data: `to_json` / `from_json` carry it
    to another process or machine.

    A job with no `store` is for a worker that shares no disk with the parent (a node of a Ray
    cluster): `listings` then holds each source's listing itself (its JSON data), and a
    validation cell's predictions go back in its outcome (`CellOutcome.predictions`), for the
    parent to write. `checkpoints` maps a checkpoint path the cells name to where this worker
    reads it instead (`with_checkpoint_copies`).
    """

    cells: tuple[Cell, ...]
    stacks: tuple[str, ...]
    sources: Mapping[str, str]
    store: str | None
    batch_size: int
    workers: int
    img_size: int | None
    trust_checkpoint: bool
    bench: BenchSettings
    input_cache: bool
    input_cache_dir: str | None
    input_cache_size: int
    listings: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: Mapping[str, str] = field(default_factory=dict)

    def with_cells(self, cells) -> Job:
        return replace(self, cells=tuple(cells))

    def with_checkpoint_copies(self, contents: Mapping[str, bytes]) -> Job:
        """The job reading each checkpoint of `contents` (`{path as the cells name it: its bytes}`,
        sent from the parent's machine) from a copy in this machine's temporary folder. The bytes
        are checked against the checkpoint's SHA-256 that the plan put in the cells' identities;
        a `WeightsError` when they are not that checkpoint."""
        from .models import checkpoint_copy

        expected = {c.weights: c.identity.get("weights") for c in self.cells if c.weights in contents}
        copies = {path: checkpoint_copy(path, data, expected.get(path)) for path, data in contents.items()}
        return replace(self, checkpoints={**self.checkpoints, **copies})

    def to_json(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data["cells"] = [c.to_json() for c in self.cells]
        data["stacks"], data["sources"], data["bench"] = list(self.stacks), dict(self.sources), asdict(self.bench)
        data["listings"], data["checkpoints"] = dict(self.listings), dict(self.checkpoints)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        data = dict(data)
        data["cells"] = tuple(Cell.from_json(c) for c in data["cells"])
        data["stacks"], data["bench"] = tuple(data["stacks"]), BenchSettings(**data["bench"])
        return cls(**data)


class JobContext:
    """A job's stacks and sources, resolved once per worker process."""

    def __init__(self, job: Job, registry=None):
        self.job = job
        self.registry = registry
        self.store = Store(Path(job.store)) if job.store is not None else None
        self._stacks: dict[str, BackendStack] = {}
        self._sources: dict[str, Source] = {}

    def plugins(self):
        """The registry the job's stacks and sources are resolved in (default: this process's)."""
        from ..registry import get_registry

        return self.registry or get_registry()

    def stack(self, name: str) -> BackendStack:
        if name not in self._stacks:
            self._stacks[name] = resolve_stack(name, self.plugins())
        return self._stacks[name]

    def source(self, name: str) -> Source:
        """A source's listing, from the job or read from the store; `ListingError` when it cannot
        be used. A generated source whose folder is not on this machine is made here
        (`DatasetSpec.remake`)."""
        if name not in self._sources:
            if name in self.job.listings:
                source = source_of_listing(self.job.listings[name], self.plugins(),
                                           f"the listing of source {name} sent with the job",
                                           "run again (the parent lists its data anew)")
            else:
                source = self.store.get_source(self.job.sources[name], self.plugins())
            spec = self.plugins().datasets.get(source.name)
            if getattr(spec, "remake", None) is not None and not Path(source.root).is_dir():
                source = spec.remake(source)
            self._sources[name] = source
        return self._sources[name]


# --- the runners: (context, cell, progress) -> (entries, other fields of the record) --------
# The other fields are `CellRecord`'s (a validation cell's predictions, listing, common columns,
# partial and unreadable images; a status and message when the cell kept rows but failed).

Runner = Callable[[JobContext, Cell, Any], tuple[list[Entry], dict[str, Any]]]
# The field of a runner's result that holds a predictions file's bytes, for the cell's outcome
# (a job without a store), not its record.
PREDICTIONS_DATA = "predictions_data"


def metadata_batch(cells: list[Cell], workers: int, on_event) -> tuple[list[Cell], list[dict[str, Any]]]:
    """The metadata rows of `cells`, computed together over worker processes (the whole zoo in
    minutes): they are cheap, so they never go through an executor. Their `done` events are the
    caller's to send, once each record is stored."""
    from .metadata import metadata_rows, pretrained_name

    if not cells:
        return [], []
    for cell in cells:
        on_event({"event": "start", "key": cell.key})
    by_tag = {row["model"]: row for row in metadata_rows([c.model for c in cells], workers=workers)}
    return cells, [by_tag[pretrained_name(c.model)] for c in cells]


def metadata_cell(context: JobContext, cell: Cell, progress) -> tuple[list[Entry], dict[str, Any]]:
    from .metadata import metadata_rows

    (row,) = metadata_rows([cell.model], workers=0)
    return [Entry(table="metadata", row=row)], {}


def _input_cache(job: Job):
    from .input_cache import InputCache

    return InputCache(Path(job.input_cache_dir) if job.input_cache_dir else None, job.input_cache_size) \
        if job.input_cache else None


def validate_cell(context: JobContext, cell: Cell, progress) -> tuple[list[Entry], dict[str, Any]]:
    """One model on one source: one forward pass, its predictions written to the store."""
    from .data import eval_data_config, make_loader
    from .input_cache import CacheCorrupted
    from .validate import predict

    job = context.job
    stack = context.stack(cell.backend)
    source = context.source(cell.source)
    if source.build is not None:  # its files are made here, by the first cell that needs them on this machine
        from ..builds import make_slices

        make_slices(source.build, source.name, len(source.samples), progress.note, progress)
    try:
        model = create_model(cell.model, job.checkpoints.get(cell.weights, cell.weights),
                             trust_checkpoint=job.trust_checkpoint)
    except RbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built is that cell's failure
        raise CellFailure("build-failed", one_line(exc)) from exc
    config = eval_data_config(model, job.img_size)
    common = {
        "model": cell.name,
        "img_size": config["input_size"][-1],
        "param_count": param_count(model),
        "crop_pct": config["crop_pct"],
        "interpolation": config["interpolation"],
        "weights": weights_label(cell.weights),
    }
    reference = None
    if "reference" in cell.identity:  # a non-reference stack: the reference model runs beside it
        import copy

        reference_stack = context.stack(cell.identity["reference"])
        reference = (reference_stack.prepare_model(copy.deepcopy(model)), reference_stack)
    model = stack.prepare_model(model)
    cache = _input_cache(job)

    def one_pass(batch_size: int):
        loading = dict(batch_size=batch_size, workers=job.workers, pin_memory=stack.base.pin_memory)
        while True:
            batches = (cache.loader(source, config, note=progress.note, **loading) if cache is not None
                       else make_loader(source, config, **loading))
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                progress(done, len(source.samples))

            try:
                return predict(model, batches, stack, config, source, advance, reference=reference,
                               keep_scores=cell.keeps_scores)
            except CacheCorrupted as exc:  # removed; the next pass decodes and writes it again
                progress.note(f"input cache: {exc}; rebuilding it")
                cache.remove(exc.path)

    try:
        (frame, nonfinite), _ = with_backoff(one_pass, job.batch_size, stack)
    except BatchFailed as exc:
        if not exc.out_of_memory:
            raise exc.error
        raise CellFailure("oom", f"out of memory even at batch {exc.batch_size}: {one_line(exc.error)}") from exc
    if nonfinite:
        raise CellFailure("non-finite", f"{nonfinite} non-finite logits on {source.name}")
    unreadable = [source.samples[i][0] for i in frame.filter(~frame["ok"])["index"].to_list()]
    if unreadable and len(unreadable) == len(frame):  # nothing to score: an error, not an empty report
        raise CellFailure("unreadable", f"none of the {len(frame):,} images of {source.name} could be read "
                          f"(the first: {unreadable[0]}); check the image files in {source.root}")
    fields: dict[str, Any] = {"source_listing": job.sources[cell.source], "common": common,
                              "partial": source.partial, "unreadable": tuple(unreadable)}
    if context.store is None:  # no disk shared with the parent: the file's bytes go back in the outcome
        fields["predictions"], fields[PREDICTIONS_DATA] = predictions_file(cell.key, frame)
    else:
        fields["predictions"] = context.store.put_predictions(cell.key, frame)
    return [], fields


def benchmark_cell(context: JobContext, cell: Cell, progress) -> tuple[list[Entry], dict[str, Any]]:
    """One model on one backend stack; a failed row is kept (detailed file) and marks the cell failed."""
    job = context.job
    stack = context.stack(cell.backend)
    total = job.bench.expected_steps(cell.kind)
    steps = 0

    def on_step() -> None:
        nonlocal steps
        steps += 1
        progress(min(steps, total), total)

    row = run_benchmark(cell.kind, cell.model, stack, job.bench, job.img_size, on_step=on_step)
    row["model"] = cell.name or row["model"]
    entries = [Entry(table="benchmark", kind=cell.kind, tag=stack.file_tag(), row=row)]
    if row["status"] == "failed":
        return entries, {"status": "failed", "message": row.get("error") or ""}
    return entries, {}


CELL_RUNNERS: dict[str, Runner] = {"metadata": metadata_cell, "validate": validate_cell,
                                   **{kind: benchmark_cell for kind in BENCH_KINDS}}


def job_digest(job: Job) -> str:
    """A key for a job's settings (cells aside): a worker keeps one context per job."""
    data = job.to_json()
    data.pop("cells")
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
