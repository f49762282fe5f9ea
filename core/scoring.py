"""Scoring: stored predictions to result rows, one per view, by every metric.

Nothing here runs a model: a validation record names its predictions file and its source's
listing (samples and views), and every row is computed from those alone, so a metric
installed after the run scores it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .predictions import view_predictions
from .specs import MetricSpec, Source
from .store import Store


PAIRED = "_paired"  # a row's per-image top-1 hits, for paired tests; never written to a file
TOP1 = "_top1"  # a row's (scored sample indices, top-1 classes), for conformance; never written either
LEAD = "_lead"  # a row's (top-1 logit minus the runner-up's, top-1 logit), aligned with TOP1; never written


def record_model(record: dict[str, Any]) -> str:
    """The `model` column of a validation record's rows: the row name its cell carries
    (`models.row_name`). A record of an older rbench named every weights by the pretrained tag:
    its random weights are named `<model>@random` here, and its checkpoint by the file's content
    when the file is still where it was, unchanged (size and modification time), else
    `<architecture>@<file stem>-<8 hex digits of the path, size and time>`, so that it never
    takes the pretrained tag's row nor another checkpoint's."""
    import hashlib
    from pathlib import Path

    from .models import architecture, row_name

    common, info = record["common"], record.get("cell_info") or {}
    weights = common.get("weights")
    if info.get("name") or weights in (None, "pretrained") or "@" in common["model"]:
        return common["model"]
    model = info.get("model") or common["model"]
    if weights == "random":
        return row_name(model, "random")
    old = str(record.get("cell", {}).get("weights") or "")  # `<resolved path>:<size>:<mtime_ns>`
    path, size, mtime = old.rsplit(":", 2) if old.count(":") >= 2 else (old, "", "")
    try:
        found = Path(path).stat()
        if (str(found.st_size), str(found.st_mtime_ns)) == (size, mtime):
            return row_name(model, path)
    except OSError:
        pass
    return f"{architecture(model)}@{Path(path).stem or 'checkpoint'}-{hashlib.sha256(old.encode()).hexdigest()[:8]}"


def paired_hits(record: dict[str, Any], predictions) -> tuple[str, Any]:
    """`(images, hits)` of a view's predictions: a key naming exactly which images were scored
    (the source listing and the scored samples' indices) and the top-1 hit of each, in order.
    Two rows with the same key can be compared pairwise."""
    import hashlib

    import numpy as np

    hit, scored = predictions.correct(1)
    indices = np.ascontiguousarray(np.asarray(predictions.indices, dtype=np.int64)[scored])
    key = f"{record['source_listing']}:{hashlib.sha256(indices.tobytes()).hexdigest()[:20]}"
    return key, hit[scored]


def stack_fields(record: dict[str, Any], frame, predictions) -> dict[str, Any]:
    """What a row needs for `conformance-<view>.csv`: its stack (`backend`), the reference stack
    it was validated against (`reference`, only on a non-reference stack's row), each scored
    sample's top-1 class (`TOP1`) and how far its top-1 logit leads the runner-up's (`LEAD`, from
    the stored log-probabilities: a log-softmax keeps logit differences; infinite with one class),
    and over the view's samples the largest and the mean of the per-sample logit differences from
    the reference (`logit_absdiff_max`, `logit_absdiff_mean`)."""
    import numpy as np

    from .predictions import REFERENCE_FIELDS, frame_rows

    cell = record.get("cell", {})
    logp = np.asarray(predictions.topk_logp, dtype=np.float64)
    lead = logp[:, 0] - logp[:, 1] if logp.shape[1] > 1 else np.full(len(logp), np.inf)
    fields: dict[str, Any] = {"backend": cell.get("backend"),
                              TOP1: (np.asarray(predictions.indices), np.asarray(predictions.topk)[:, 0]),
                              LEAD: (lead, logp[:, 0] + np.asarray(predictions.logsumexp, dtype=np.float64))}
    if "reference" in cell:
        fields["reference"] = cell["reference"]
        if all(f in frame.columns for f in REFERENCE_FIELDS):
            rows = frame_rows(frame, predictions.indices)
            largest = frame["logit_absdiff_max"].to_numpy()[rows].astype(np.float64)
            mean = frame["logit_absdiff_mean"].to_numpy()[rows].astype(np.float64)
            fields["logit_absdiff_max"] = float(largest.max()) if len(rows) else None
            fields["logit_absdiff_mean"] = float(mean.mean()) if len(rows) else None
    return fields


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

    def source(self, record: dict[str, Any]) -> tuple[str, Source]:
        """`(listing name, Source)` of a validation record (see `Store.listing_name`)."""
        listing = self.store.listing_name(record["source_listing"], record.get("cell", {}).get("views"))
        if listing not in self._sources:
            self._sources[listing] = self.store.get_source(listing, self.registry)
        return listing, self._sources[listing]

    def entries(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The validation entries (`{"table", "view", "columns", "row"}`) of a validation record.

        Raises `DamagedPredictions` for a predictions file that is not whole, and a
        `ListingError` for a source listing that cannot be used.
        """
        listing, source = self.source(record)
        record = {**record, "source_listing": listing}  # pairs the rows of one listing, whatever named it
        frame = self.store.get_predictions(record, label_sets=False)
        common = {**record["common"], "model": record_model(record)}
        entries = []
        for view in source.views:
            predictions = view_predictions(frame, source, view)
            if len(predictions) == 0:
                self.notes.append(f"{common['model']} on {view.name}: no row, the view has no readable sample "
                                  f"in {source.root}")
                continue
            row: dict[str, Any] = {"count": len(predictions), PAIRED: paired_hits(record, predictions),
                                   **stack_fields(record, frame, predictions)}
            for metric in self.metrics:
                row.update(metric.compute(predictions, view))
            if view.score is not None:
                row.update(view.score(predictions))
            entries.append({"table": "validation", "view": view.name,
                            **({"columns": list(view.columns)} if view.columns else {}),
                            "row": {**common, **row, "partial": record.get("partial", False)}})
        return entries
