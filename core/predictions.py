"""Per-sample predictions: what a validation pass keeps, one Parquet file per cell.

Each batch of logits is reduced on the device as it comes out of the model to a few numbers
per sample (the top-k classes and their log-probabilities, the true label's log-probability,
the log-sum-exp, the sum of squared probabilities), once over all classes and once per class
restriction that a view uses (ImageNet-A's and -R's 200 classes). Only these cross back to the
host, so a cell's memory grows by about 50 bytes a sample, whatever the number of classes. A
cell that keeps scores (`--keep scores`) also keeps each sample's log-probabilities over every
class in float16: 2 bytes a class a sample, the price of answering any later view.

The file's columns (documented in docs/predictions.md):

    index           UInt32        the sample's index in the source
    ok              Boolean       False for an image that could not be read (its row is not scored)
    label           Int32         the source's label
    topk_class      Array[k]      the k best classes, best first (k = 5, or fewer classes)
    topk_logp       Array[k]      their log-probabilities (Float32)
    label_logp      Float32       log-probability of `label` (NaN when the model has no such class)
    logsumexp       Float32       log-sum-exp of the logits
    prob_sq_sum     Float32       sum over classes of the squared probabilities
    R/topk_class, R/topk_logp, R/label_logp, R/logsumexp, R/prob_sq_sum
                                  the same over restriction R's classes (R is the first view that
                                  uses it, e.g. `imagenet-a-clean`); null for samples no view of R scores
    V/labels        List[Int32]   view V's own label set per sample (ImageNet-ReaL), null elsewhere
    logit_absdiff_max, logit_absdiff_mean
                    Float32       only in a cell validated against a reference stack: the largest
                                  and the mean |logit - reference logit| over all classes, the
                                  reference model run on the same input in the same cell
    scores          Array[Float16, C]  only in a cell that keeps scores: log-softmax over all C
                                  classes, rounded to float16 (no class restriction needs columns
                                  of its own then: `view_predictions` computes it from these)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DataError, RbenchError
from .files import write_atomic
from .specs import Predictions, Source, ViewSpec

TOPK = 5
FIELDS = ("topk_class", "topk_logp", "label_logp", "logsumexp", "prob_sq_sum")
# A non-reference stack's cell only: each sample's logits against the reference stack's.
REFERENCE_FIELDS = ("logit_absdiff_max", "logit_absdiff_mean")
SCORES = "scores"  # the full log-probabilities, in a cell that keeps scores
KEEP_CHOICES = ("compact", "scores")  # what a validation cell keeps of each prediction (`--keep`)
SCORES_FLOOR = -65504.0  # float16's lowest finite value: a log-probability below it is kept as this


class DamagedPredictions(RbenchError):
    """A predictions file that is missing, truncated or of the wrong shape."""


def restrictions(source: Source) -> dict[str, tuple[int, ...]]:
    """`{name: classes}` of each distinct class restriction the source's views use, named by
    the first view that uses it."""
    found: dict[tuple[int, ...], str] = {}
    for view in source.views:
        if view.classes is not None:
            found.setdefault(tuple(int(c) for c in view.classes), view.name)
    return {name: classes for classes, name in found.items()}


def _restriction_of(source: Source, view: ViewSpec) -> str | None:
    """The name of the view's class restriction in a file of `source`: that of the source's
    first view with those classes, or the view's own for a view the source does not hold (one
    declared after the run: its restriction has columns only if one of the source's views shares it)."""
    if view.classes is None:
        return None
    classes = tuple(int(c) for c in view.classes)
    return next((name for name, c in restrictions(source).items() if c == classes), view.name)


def can_score(columns: Sequence[str], source: Source, view: ViewSpec) -> bool:
    """Whether a predictions file of these `columns`, made over `source` (as its listing keeps
    it), gives `view`'s predictions: always for a view over all classes; for a class
    restriction, when the file has its columns for every sample the view scores
    (`_restriction_covers`), or the full `scores`. `view` may be a view the source did not have
    when the file was made (one added after the run)."""
    return view.classes is None or SCORES in columns or _restriction_covers(columns, source, view)


def _restriction_covers(columns: Sequence[str], source: Source, view: ViewSpec) -> bool:
    """Whether the file's columns of `view`'s class restriction hold every sample it scores:
    they are filled only for the samples the source's views of that restriction score."""
    import numpy as np

    name = _restriction_of(source, view)
    if name is None or f"{name}/topk_class" not in columns:
        return False
    if any(v is view for v in source.views):
        return True
    covered = _members(source, [v for v in source.views if _restriction_of(source, v) == name])
    chosen = np.arange(len(source.samples)) if view.samples is None else np.asarray(list(view.samples), dtype=np.int64)
    return bool(covered[chosen].all())


def _members(source: Source, views: Sequence[ViewSpec]):
    """A boolean mask over the source's samples: those any of `views` scores."""
    import numpy as np

    mask = np.zeros(len(source.samples), dtype=bool)
    for view in views:
        if view.samples is None:
            mask[:] = True
        else:
            mask[np.asarray(list(view.samples), dtype=np.int64)] = True
    return mask


class Reducer:
    """Reduces each batch of logits to its stored predictions, on the logits' device.

    `add(logits, indices, ok)` reduces one batch; `frame()`, after the device is synchronised,
    gives the predictions file's frame. The host arrays are allocated once, for every sample of
    the source, and each batch is written into them: many small long-lived allocations between
    the passes' large temporaries would fragment the heap and grow the process by kilobytes a
    sample. On an accelerator the reductions wait on the device, a few batches at a time, and
    are copied over together, so the device is rarely waited for.
    """

    FLUSH_EVERY = 32  # batches held on the device before their copy to the host

    def __init__(self, source: Source, keep_scores: bool = False):
        import numpy as np

        self.source = source
        self.keep_scores = keep_scores
        n = len(source.samples)
        self.labels = np.asarray([label for _, label in source.samples], dtype=np.int64)
        self.restrictions = restrictions(source)
        self.masks = {name: _members(source, [v for v in source.views if _restriction_of(source, v) == name])
                      for name in self.restrictions}
        self.arrays: dict[str, Any] = {"ok": np.zeros(n, dtype=bool), "seen": np.zeros(n, dtype=bool)}
        self.pending: list[dict[str, Any]] = []
        self._device_state: dict[str, Any] = {}
        self._n = n

    def _tensors(self, device):
        import torch

        if "device" not in self._device_state or self._device_state["device"] != device:
            state: dict[str, Any] = {"device": device, "labels": torch.as_tensor(self.labels, device=device)}
            for name, classes in self.restrictions.items():
                index = torch.as_tensor(classes, dtype=torch.long, device=device)
                position = torch.full((max(max(classes) + 1, int(self.labels.max(initial=0)) + 1),), -1,
                                      dtype=torch.long, device=device)
                position[index] = torch.arange(len(classes), device=device)
                state[name] = (index, position)
            state["nonfinite"] = torch.zeros((), dtype=torch.long, device=device)
            self._device_state = state
        return self._device_state

    @staticmethod
    def _reduce(logits, labels) -> dict[str, Any]:
        import torch

        lse = torch.logsumexp(logits, dim=1)
        k = min(TOPK, logits.shape[1])
        top = logits.topk(k, dim=1)  # on the logits, so that ties break as a plain topk does
        valid = (labels >= 0) & (labels < logits.shape[1])
        picked = logits.gather(1, labels.clamp(0, logits.shape[1] - 1)[:, None])[:, 0]
        label_logp = torch.where(valid, picked - lse, torch.full_like(lse, float("nan")))
        prob_sq_sum = torch.exp(2.0 * (logits - lse[:, None])).sum(dim=1)
        return {"topk_class": top.indices, "topk_logp": top.values - lse[:, None], "label_logp": label_logp,
                "logsumexp": lse, "prob_sq_sum": prob_sq_sum}

    def add(self, logits, indices, ok, reference=None) -> None:
        """One batch: float logits `[B, C]` on the device, the samples' indices and ok flags (CPU);
        with `reference`, the reference stack's logits of the same inputs (any device), kept
        as each sample's largest and mean absolute difference (`REFERENCE_FIELDS`)."""
        import torch

        state = self._tensors(logits.device)
        logits = logits.float()
        state["nonfinite"] += (~torch.isfinite(logits)).sum()
        idx = torch.as_tensor(indices, dtype=torch.long)
        labels = state["labels"][idx.to(logits.device)]
        reduced = self._reduce(logits, labels)
        if self.keep_scores:  # float16 on the device: 2 bytes a class cross to the host
            reduced[SCORES] = (logits - reduced["logsumexp"][:, None]).clamp(min=SCORES_FLOOR).half()
        # Class indices in 16 bits where they fit: the host keeps ~50 bytes a sample.
        self._class_dtype = "int16" if logits.shape[1] <= 2**15 else "int32"
        for name in self.restrictions:
            classes, position = state[name]
            sub = self._reduce(logits[:, classes], position[labels.clamp(0, len(position) - 1)]
                               .masked_fill(labels >= len(position), -1))
            sub["topk_class"] = classes[sub["topk_class"]]  # back to the full label space
            reduced.update({f"{name}/{field}": value for field, value in sub.items()})
        if reference is not None:
            difference = (logits - reference.to(logits.device).float()).abs()
            reduced["logit_absdiff_max"], reduced["logit_absdiff_mean"] = difference.amax(dim=1), difference.mean(dim=1)
        chunk = {"index": idx.numpy(), "ok": torch.as_tensor(ok, dtype=torch.bool).numpy(), "reduced": reduced}
        if logits.device.type == "cpu":
            self._store(chunk)
        else:
            self.pending.append(chunk)
            if len(self.pending) >= self.FLUSH_EVERY:
                self.flush()

    def _store(self, chunk: dict[str, Any]) -> None:
        import numpy as np

        index = chunk["index"]
        self.arrays["ok"][index] = chunk["ok"]
        self.arrays["seen"][index] = True
        for field, value in chunk["reduced"].items():
            values = value.numpy()
            if field not in self.arrays:
                dtype = (np.dtype(self._class_dtype) if field.endswith("topk_class")
                         else np.float16 if field == SCORES else np.float32)
                self.arrays[field] = np.zeros((self._n, *values.shape[1:]), dtype=dtype)
            self.arrays[field][index] = values

    def flush(self) -> None:
        """Copy the reductions held on the device to the host arrays (waits for the device)."""
        for chunk in self.pending:
            chunk["reduced"] = {field: value.cpu() for field, value in chunk["reduced"].items()}
            self._store(chunk)
        self.pending.clear()

    def nonfinite(self) -> int:
        """How many logits were NaN or infinite (call after the device is synchronised)."""
        return int(self._device_state["nonfinite"]) if self._device_state else 0

    def frame(self):
        """The predictions file's frame, in sample order (samples never seen are not ok)."""
        import numpy as np
        import polars as pl

        self.flush()
        n = self._n
        index = np.arange(n)
        columns: dict[str, Any] = {
            "index": pl.Series("index", index, dtype=pl.UInt32),
            "ok": pl.Series("ok", self.arrays["ok"] & self.arrays["seen"], dtype=pl.Boolean),
            "label": pl.Series("label", self.labels, dtype=pl.Int32),
        }
        prefixes = {"": None, **{f"{name}/": self.masks[name] for name in self.restrictions}}
        for prefix, mask in prefixes.items():
            for field in FIELDS:
                values = self.arrays.get(prefix + field)
                if values is None:  # no batch at all
                    values = np.zeros((n, TOPK) if field.startswith("topk") else (n,),
                                      dtype=np.int32 if field == "topk_class" else np.float32)
                if field == "topk_class":
                    dtype = pl.UInt16 if values.max(initial=0) < 2**16 else pl.UInt32
                    series = pl.Series(prefix + field, values, dtype=pl.Array(dtype, values.shape[1]))
                elif field == "topk_logp":
                    series = pl.Series(prefix + field, values, dtype=pl.Array(pl.Float32, values.shape[1]))
                else:
                    series = pl.Series(prefix + field, values, dtype=pl.Float32)
                if mask is not None:
                    series = pl.select(pl.when(pl.Series(mask)).then(series).otherwise(None)
                                       .alias(prefix + field)).to_series()
                columns[prefix + field] = series
        for field in REFERENCE_FIELDS:
            if field in self.arrays:
                columns[field] = pl.Series(field, self.arrays[field], dtype=pl.Float32)
        if SCORES in self.arrays:
            values = self.arrays[SCORES]
            columns[SCORES] = pl.Series(SCORES, values, dtype=pl.Array(pl.Float16, values.shape[1]))
        for view in self.source.views:
            if view.labels is not None:
                sets: list[Any] = [None] * n
                chosen = list(view.samples) if view.samples is not None else range(n)
                for i, label in zip(chosen, view.labels):
                    sets[i] = list(label) if isinstance(label, (tuple, list, set, frozenset)) else [int(label)]
                columns[f"{view.name}/labels"] = pl.Series(f"{view.name}/labels", sets, dtype=pl.List(pl.Int32))
        return pl.DataFrame(list(columns.values()))


def encode(frame) -> bytes:
    """A predictions frame as the bytes of its Parquet file (zstd)."""
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    return buffer.getvalue()


def write(frame, path: Path) -> str:
    """Write a predictions frame as Parquet (zstd), atomically; returns the file's SHA-256."""
    data = encode(frame)
    write_atomic(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def verified_bytes(path: Path, sha256: str | None = None) -> bytes:
    """A predictions file's bytes; `DamagedPredictions` (naming the file) when it is missing or
    not the file that was written (`sha256`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DamagedPredictions(f"predictions file {path} cannot be read ({exc.strerror})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise DamagedPredictions(f"predictions file {path} is not the file that was written (truncated or changed)")
    return data


def read(path: Path, sha256: str | None = None, rows: int | None = None, label_sets: bool = True):
    """A predictions file's frame; `DamagedPredictions` (naming the file) when it is missing,
    not the file that was written (`sha256`), or not of the expected shape. Without
    `label_sets`, the `V/labels` columns are not decoded (scoring takes the label sets from the
    source listing)."""
    import io

    import polars as pl

    data = verified_bytes(path, sha256)
    try:
        if label_sets:
            frame = pl.read_parquet(io.BytesIO(data))
        else:
            names = [c for c in pl.read_parquet_schema(io.BytesIO(data)) if not c.endswith("/labels")]
            frame = pl.read_parquet(io.BytesIO(data), columns=names)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a bad file
        raise DamagedPredictions(f"predictions file {path} is not a readable Parquet file ({type(exc).__name__})") from None
    missing = [c for c in ("index", "ok", "label", *FIELDS) if c not in frame.columns]
    if missing:
        raise DamagedPredictions(f"predictions file {path} lacks the column {missing[0]!r}")
    if rows is not None and frame.height != rows:
        raise DamagedPredictions(f"predictions file {path} has {frame.height} rows, not the {rows} that were written")
    if SCORES in frame.columns:
        dtype = frame.schema[SCORES]
        width = frame.schema["topk_class"]
        if not (isinstance(dtype, pl.Array) and dtype.inner == pl.Float16 and isinstance(width, pl.Array)
                and dtype.size >= width.size):
            raise DamagedPredictions(f"predictions file {path} has a {SCORES!r} column of type {dtype}, not "
                                     "an array of float16 over every class")
    return frame


_VIEW_LABELS: dict[int, tuple[Any, Any, Any]] = {}  # id(view.labels) -> (labels, is_set, label table)


def _view_label_info(view: ViewSpec, labels: list):
    """Which of a view's own labels are sets, and their label table (`Predictions._label_table`),
    computed once per view listing: every model's predictions of the view share them."""
    import numpy as np

    cached = _VIEW_LABELS.get(id(view.labels))
    if cached is not None and cached[0] is view.labels:
        return cached[1], cached[2]
    is_set = np.fromiter((isinstance(a, (tuple, list, set, frozenset)) for a in labels), dtype=bool, count=len(labels))
    empty = Predictions(indices=np.zeros(len(labels)), labels=labels, topk=np.zeros((len(labels), 1)),
                        topk_logp=None, label_logp=None, logsumexp=None, prob_sq_sum=None)
    table = empty._label_table
    table[0].flags.writeable = False
    if len(_VIEW_LABELS) > 64:
        _VIEW_LABELS.clear()
    _VIEW_LABELS[id(view.labels)] = (view.labels, is_set, table)
    return is_set, table


def frame_rows(frame, indices):
    """The row of a predictions `frame` that holds each sample index of `indices` (-1 where none does)."""
    import numpy as np

    index = frame["index"].to_numpy().astype(np.int64)
    wanted = np.asarray(indices, dtype=np.int64)
    position = np.full(max(int(index.max(initial=-1)), int(wanted.max(initial=-1))) + 1, -1, dtype=np.int64)
    position[index] = np.arange(frame.height)
    return position[wanted]


def _restricted_from_scores(scores, logsumexp, labels, classes: Sequence[int]) -> dict[str, Any]:
    """The restriction columns (`FIELDS`) over `classes` of some samples, from their full
    float16 log-probabilities `scores` `[n, C]`, the log-sum-exp of their logits and their
    labels: as the reducer computes them from the logits, up to float16's rounding (classes
    whose float16 scores tie are ranked by class position, lowest first)."""
    import numpy as np

    index = np.asarray(classes, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    sub = np.asarray(scores, dtype=np.float32)[:, index]
    peak = sub.max(axis=1, initial=-np.inf)
    mass = peak + np.log(np.exp(sub - peak[:, None]).sum(axis=1))  # log of the probability inside the restriction
    logp = sub - mass[:, None]
    order = np.argsort(-logp, axis=1, kind="stable")[:, :min(TOPK, len(index))]
    position = np.full(max(int(index.max(initial=0)), int(labels.max(initial=0))) + 1, -1, dtype=np.int64)
    position[index] = np.arange(len(index))
    at = np.where(labels >= 0, position[np.clip(labels, 0, None)], -1)
    label_logp = np.where(at >= 0, np.take_along_axis(logp, np.clip(at, 0, None)[:, None], axis=1)[:, 0], np.nan)
    return {"topk_class": index[order], "topk_logp": np.take_along_axis(logp, order, axis=1).astype(np.float32),
            "label_logp": label_logp.astype(np.float32),
            "logsumexp": (np.asarray(logsumexp, dtype=np.float32) + mass).astype(np.float32),
            "prob_sq_sum": np.exp(2.0 * logp).sum(axis=1).astype(np.float32)}


def view_predictions(frame, source: Source, view: ViewSpec) -> Predictions:
    """The `Predictions` of `view` from a source's predictions frame (unreadable samples left
    out). A class restriction is read from its own columns when the file has them, else
    computed from the full scores (`can_score` says whether the file can give the view)."""
    import numpy as np
    import polars as pl

    n = len(source.samples)
    if view.samples is not None:
        chosen = np.asarray(list(view.samples), dtype=np.int64)
        labels = list(view.labels) if view.labels is not None else None
    else:
        chosen = np.arange(n, dtype=np.int64)
        labels = list(view.labels) if view.labels is not None else None
    ok = frame["ok"].to_numpy()
    rows = frame_rows(frame, chosen)
    keep = (rows >= 0) & ok[np.clip(rows, 0, None)]
    if labels is not None and not keep.all():
        labels = [label for label, k in zip(labels, keep) if k]
    rows, chosen = rows[keep], chosen[keep]
    if labels is None:
        labels = frame["label"].to_numpy()[rows].tolist()
    restriction = _restriction_of(source, view)
    prefix = f"{restriction}/" if restriction else ""
    from_scores = restriction is not None and not _restriction_covers(frame.columns, source, view)
    if from_scores and SCORES not in frame.columns:  # `can_score` is False
        raise DataError(f"the predictions of source {source.name} have neither the columns of view "
                        f"{view.name}'s classes nor full scores; run its cells again with --keep scores")
    # Only the view's columns, and no gather at all when the view is the whole file in order.
    # Only a view's own `score` reads them: an n x C copy for ImageNet val is ~200 MB a view.
    has_scores = SCORES in frame.columns and (view.score is not None or from_scores)
    needed = frame.select(["label", "logsumexp", SCORES] if from_scores
                          else [prefix + field for field in FIELDS] + ([SCORES] if has_scores else []))
    if len(rows) == frame.height and np.array_equal(rows, np.arange(frame.height)):
        picked = needed
    else:
        picked = needed[rows] if len(rows) else needed.clear()
    scores = None
    if has_scores:
        width = frame.schema[SCORES].size
        scores = picked[SCORES].to_numpy().reshape(picked.height, width) if picked.height else np.zeros((0, width))
    if from_scores:
        computed = _restricted_from_scores(scores, picked["logsumexp"].to_numpy(),
                                           picked["label"].to_numpy().astype(np.int64), view.classes)

    def column(field: str):
        if from_scores:
            return computed[field]
        series = picked[prefix + field]
        if isinstance(series.dtype, pl.Array):
            width = series.dtype.size if hasattr(series.dtype, "size") else series.dtype.width
            values = series.to_numpy()
            return values.reshape(len(series), width) if values.size else np.zeros((0, width))
        return series.to_numpy()

    label_logp = column("label_logp")
    table = None
    if view.labels is not None:  # known only where the view's label is the source's own
        source_labels = frame["label"].to_numpy()[rows]
        if len(labels) == len(view.labels):  # every sample of the view is scored
            is_set, table = _view_label_info(view, labels)
        else:
            is_set = np.fromiter((isinstance(a, (tuple, list, set, frozenset)) for a in labels), dtype=bool,
                                 count=len(labels))
        if is_set.all():
            same = np.zeros(len(labels), dtype=bool)
        else:
            same = np.array([not s and int(a) == int(b) for a, b, s in zip(labels, source_labels, is_set)], dtype=bool)
        label_logp = np.where(same, label_logp, np.nan).astype(np.float32)
    predictions = Predictions(indices=chosen, labels=labels, topk=column("topk_class").astype(np.int64),
                              topk_logp=column("topk_logp"), label_logp=label_logp,
                              logsumexp=column("logsumexp"), prob_sq_sum=column("prob_sq_sum"),
                              scores=None if scores is None or view.score is None else scores.astype(np.float32))
    if table is not None:
        predictions.__dict__["_label_table"] = table  # the view's, computed once (read-only arrays)
    return predictions
