"""Scoring: stored predictions to result rows, one per view, by every metric.

Nothing here runs a model: a validation record names its predictions file and its source's
listing (samples and views), and every row is computed from those alone, so a metric
installed after the run scores it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..predictions import view_predictions
from ..record import Cell, CellRecord
from ..specs import MetricSpec, Source
from ..store import Store


@dataclass(frozen=True, eq=False)
class Paired:
    """What paired comparisons need of a scored row, kept beside it (never written to a file).

    `images` names exactly which images were scored (the source listing and the scored samples'
    indices) and `hits` is the top-1 hit of each, in order: two rows with the same `images` can
    be compared pairwise (McNemar's test, `rbench compare`). For `conformance-<view>.csv`, over
    the view's samples: `indices` (sample indices), `top1` (each one's top-1 class), `lead` (its
    top-1 logit minus the runner-up's, from the stored log-probabilities: a log-softmax keeps
    logit differences; infinite with one class) and `top1_logit`.
    """

    images: str
    hits: Any
    indices: Any
    top1: Any
    lead: Any
    top1_logit: Any


@dataclass(frozen=True, eq=False)
class ScoredRow:
    """A validation row (only the values its files hold, so `polars.DataFrame(rows)` takes a
    list of them) and, beside it, its `Paired` data (None for an imported row)."""

    row: dict[str, Any]
    paired: Paired | None = None


@dataclass(frozen=True, eq=False)
class ScoredView:
    """A scored view of a validation record: the view, its own column order (`ViewSpec.columns`),
    and its row."""

    view: str
    scored: ScoredRow
    columns: tuple[str, ...] | None = None


def record_model(record: CellRecord) -> str:
    """The `model` column of a validation record's rows: the row name its cell carries
    (`models.row_name`). A record of an older rbench named every weights by the pretrained tag:
    its random weights are named `<model>@random` here, and its checkpoint by the file's content
    when the file is still where it was, unchanged (size and modification time), else
    `<architecture>@<file stem>-<8 hex digits of the path, size and time>`, so that it never
    takes the pretrained tag's row nor another checkpoint's."""
    import hashlib
    from pathlib import Path

    from ..worker.models import architecture, row_name

    common, cell = record.common, record.cell
    weights = common.get("weights")
    if cell.name or weights in (None, "pretrained") or "@" in common["model"]:
        return common["model"]
    model = cell.model or common["model"]
    if weights == "random":
        return row_name(model, "random")
    old = str(cell.identity.get("weights") or "")  # `<resolved path>:<size>:<mtime_ns>`
    path, size, mtime = old.rsplit(":", 2) if old.count(":") >= 2 else (old, "", "")
    try:
        found = Path(path).stat()
        if (str(found.st_size), str(found.st_mtime_ns)) == (size, mtime):
            return row_name(model, path)
    except OSError:
        pass
    return f"{architecture(model)}@{Path(path).stem or 'checkpoint'}-{hashlib.sha256(old.encode()).hexdigest()[:8]}"


def paired_hits(listing: str, predictions) -> tuple[str, Any]:
    """`(images, hits)` of a view's predictions on the source listing `listing`: a key naming
    exactly which images were scored (the listing and the scored samples' indices) and the top-1
    hit of each, in order. Two rows with the same key can be compared pairwise."""
    import hashlib

    import numpy as np

    hit, scored = predictions.correct(1)
    indices = np.ascontiguousarray(np.asarray(predictions.indices, dtype=np.int64)[scored])
    return f"{listing}:{hashlib.sha256(indices.tobytes()).hexdigest()[:20]}", hit[scored]


def paired(listing: str, predictions) -> Paired:
    """The `Paired` data of a view's predictions on the source listing `listing`."""
    import numpy as np

    images, hits = paired_hits(listing, predictions)
    logp = np.asarray(predictions.topk_logp, dtype=np.float64)
    lead = logp[:, 0] - logp[:, 1] if logp.shape[1] > 1 else np.full(len(logp), np.inf)
    return Paired(images=images, hits=hits, indices=np.asarray(predictions.indices),
                  top1=np.asarray(predictions.topk)[:, 0], lead=lead,
                  top1_logit=logp[:, 0] + np.asarray(predictions.logsumexp, dtype=np.float64))


def stack_columns(cell: Cell, frame, predictions) -> dict[str, Any]:
    """What a row needs for `conformance-<view>.csv`: its stack (`backend`), the reference stack
    it was validated against (`reference`, only on a non-reference stack's row), and over the
    view's samples the largest and the mean of the per-sample logit differences from the
    reference (`logit_absdiff_max`, `logit_absdiff_mean`)."""
    import numpy as np

    from ..predictions import REFERENCE_FIELDS, frame_rows

    columns: dict[str, Any] = {"backend": cell.backend}
    if cell.reference is not None:
        columns["reference"] = cell.reference
        if all(f in frame.columns for f in REFERENCE_FIELDS):
            rows = frame_rows(frame, predictions.indices)
            largest = frame["logit_absdiff_max"].to_numpy()[rows].astype(np.float64)
            mean = frame["logit_absdiff_mean"].to_numpy()[rows].astype(np.float64)
            columns["logit_absdiff_max"] = float(largest.max()) if len(rows) else None
            columns["logit_absdiff_mean"] = float(mean.mean()) if len(rows) else None
    return columns


class Scorer:
    """Turns validation records into rows. Keeps each source listing it reads, once.
    `registry`: the plugins whose data sets rebuild the listings' callables (None: listings
    without callables)."""

    def __init__(self, store: Store, metrics: Sequence[MetricSpec], registry=None):
        self.store = store
        self.metrics = list(metrics)
        self.registry = registry
        self._sources: dict[str, Source] = {}
        self.notes: list[str] = []  # views that gave no row, and why

    def source(self, record: CellRecord) -> tuple[str, Source]:
        """`(listing name, Source)` of a validation record (see `Store.listing_name`)."""
        listing = self.store.listing_name(record.source_listing, list(record.cell.views) or None)
        if listing not in self._sources:
            self._sources[listing] = self.store.get_source(listing, self.registry)
        return listing, self._sources[listing]

    def views(self, record: CellRecord) -> list[ScoredView]:
        """The scored views of a validation record, one row each.

        Raises `DamagedPredictions` for a predictions file that is not whole, and a
        `ListingError` for a source listing that cannot be used.
        """
        # The listing's own name pairs the rows of one listing, whatever name the record gives it.
        listing, source = self.source(record)
        frame = self.store.get_predictions(record, label_sets=False)
        common = {**record.common, "model": record_model(record)}
        found = []
        for view in source.views:
            predictions = view_predictions(frame, source, view)
            if len(predictions) == 0:
                self.notes.append(f"{common['model']} on {view.name}: no row, the view has no readable sample "
                                  f"in {source.root}")
                continue
            row: dict[str, Any] = {"count": len(predictions), **stack_columns(record.cell, frame, predictions)}
            for metric in self.metrics:
                row.update(metric.compute(predictions, view))
            if view.score is not None:
                row.update(view.score(predictions))
            found.append(ScoredView(view=view.name, columns=tuple(view.columns) if view.columns else None,
                                    scored=ScoredRow({**common, **row, "partial": record.partial},
                                                     paired(listing, predictions))))
        return found
