"""Scoring: stored predictions to result rows, one per view, by every metric.

Nothing here runs a model: a validation record names its predictions file and its source's
listing (samples and views), and every row is computed from those alone, so a metric
installed after the run scores it too.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PluginError
from ..predictions import can_score, view_predictions
from ..record import Cell, CellRecord
from ..specs import AddedViews, MetricSpec, Source, ViewSpec
from ..store import Store


@dataclass(frozen=True, eq=False)
class Paired:
    """What paired comparisons need of a scored row, kept beside it (never written to a file).

    `images` names exactly which images were scored (the source listing and the scored samples'
    indices) and `hits` is the top-1 hit of each, in order (kept packed, 1 bit an image): two
    rows with the same `images` can be compared pairwise (McNemar's test, `rbench compare`).
    For `conformance-<view>.csv`, over the view's samples, made by `samples()` when first asked
    for (a report reads them only for the rows that conformance pairs): `indices` (sample
    indices), `top1` (each one's top-1 class), `lead` (its top-1 logit minus the runner-up's,
    from the stored log-probabilities: a log-softmax keeps logit differences; infinite with one
    class) and `top1_logit`.
    """

    images: str
    packed_hits: bytes
    scored: int  # how many hits `packed_hits` holds
    samples: Callable[[], Mapping[str, Any]]

    @property
    def hits(self):
        import numpy as np

        return np.unpackbits(np.frombuffer(self.packed_hits, dtype=np.uint8), count=self.scored).view(bool)

    def discordant(self, other: Paired) -> tuple[int, int]:
        """`(images only this row got right, images only `other` got right)`, of two rows with
        the same `images`, counted on the packed hits."""
        import numpy as np

        mine = np.frombuffer(self.packed_hits, dtype=np.uint8)
        theirs = np.frombuffer(other.packed_hits, dtype=np.uint8)
        ones = getattr(np, "bitwise_count", None) or np.unpackbits  # bitwise_count: numpy 2
        return int(ones(mine & ~theirs).sum()), int(ones(theirs & ~mine).sum())

    @functools.cached_property
    def _samples(self) -> Mapping[str, Any]:
        return self.samples()

    @property
    def indices(self):
        return self._samples["indices"]

    @property
    def top1(self):
        return self._samples["top1"]

    @property
    def lead(self):
        return self._samples["lead"]

    @property
    def top1_logit(self):
        return self._samples["top1_logit"]


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
    images, hits = _images_and_hits(predictions)
    return f"{listing}:{images}", hits


def _images_and_hits(predictions) -> tuple[str, Any]:
    """The part of `paired_hits`'s key that names the scored samples, and their top-1 hits."""
    import hashlib

    import numpy as np

    hit, scored = predictions.correct(1)
    indices = np.ascontiguousarray(np.asarray(predictions.indices, dtype=np.int64)[scored])
    return hashlib.sha256(indices.tobytes()).hexdigest()[:20], hit[scored]


def per_sample(predictions) -> dict[str, Any]:
    """What conformance pairs of a view's predictions (see `Paired`): `indices`, `top1`, `lead`
    and `top1_logit`, numpy arrays over the view's samples."""
    import numpy as np

    logp = np.asarray(predictions.topk_logp, dtype=np.float64)
    lead = logp[:, 0] - logp[:, 1] if logp.shape[1] > 1 else np.full(len(logp), np.inf)
    return {"indices": np.asarray(predictions.indices), "top1": np.asarray(predictions.topk)[:, 0], "lead": lead,
            "top1_logit": logp[:, 0] + np.asarray(predictions.logsumexp, dtype=np.float64)}


def paired(listing: str, predictions) -> Paired:
    """The `Paired` data of a view's predictions on the source listing `listing`."""
    import numpy as np

    images, hits = paired_hits(listing, predictions)
    samples = per_sample(predictions)
    return Paired(images=images, packed_hits=np.packbits(hits).tobytes(), scored=len(hits), samples=lambda: samples)


def reference_differences(frame, predictions) -> list[float | None] | None:
    """Over a view's samples, the largest and the mean of the per-sample logit differences from
    the reference stack (`logit_absdiff_max`, `logit_absdiff_mean`); None when the predictions
    file holds none (a reference stack's cell)."""
    import numpy as np

    from ..predictions import REFERENCE_FIELDS, frame_rows

    if not all(f in frame.columns for f in REFERENCE_FIELDS):
        return None
    rows = frame_rows(frame, predictions.indices)
    largest = frame["logit_absdiff_max"].to_numpy()[rows].astype(np.float64)
    mean = frame["logit_absdiff_mean"].to_numpy()[rows].astype(np.float64)
    return [float(largest.max()) if len(rows) else None, float(mean.mean()) if len(rows) else None]


def stack_columns(cell: Cell, differences: list[float | None] | None) -> dict[str, Any]:
    """What a row needs for `conformance-<view>.csv`: its stack (`backend`), the reference stack
    it was validated against (`reference`, only on a non-reference stack's row), and the view's
    `reference_differences` (`logit_absdiff_max`, `logit_absdiff_mean`) when stored."""
    columns: dict[str, Any] = {"backend": cell.backend}
    if cell.reference is not None:
        columns["reference"] = cell.reference
        if differences is not None:
            columns["logit_absdiff_max"], columns["logit_absdiff_mean"] = differences
    return columns


FRAMES_KEPT = 4  # predictions frames a scorer keeps for conformance's per-image data
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_PART = re.compile(r"[A-Za-z0-9._]{1,64}")


def _name_part(text: str) -> str:
    """`text` as a part of a score entry's name: itself when plain, else a hash of it (an entry
    names what it holds inside too, and is used only when that matches)."""
    import hashlib

    return text if _NAME_PART.fullmatch(text) else "h" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """`values` as JSON gives them back exactly (None, bool, int, float, str; a float subclass
    as a float), or None when one is not such a value: those are computed on every report."""
    found: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            return None
        if value is None or type(value) in (bool, int, str):
            found[key] = value
        elif isinstance(value, float):
            found[key] = float(value)
        else:
            return None
    return found


class Scorer:
    """Turns validation records into rows. Keeps each source listing it reads, once.
    `registry`: the plugins whose data sets rebuild the listings' callables and add views to
    stored sources (`AddedViews`; None: listings without callables, no added views).

    A record's views are its source listing's, then the views the loaded plugins add to that
    source (`AddedViews.make` of the listing), scored the same way from the same predictions
    file. An added view whose class restriction the file cannot give (`predictions.can_score`)
    gives no row; `notes` names those cells once per view, and how to run them again.

    What a predictions file's rows hold beyond its record's columns (each view's sample count,
    scored images and their top-1 hits, logit differences and the view's own score; and each
    metric's values) is kept in the store as score entries (`Store.put_scores`), named by the
    file's SHA-256 (and the metric's name and `MetricSpec.version`), so a later report reads
    those instead of the file: `scores/<sha256>-views.json`, `scores/<sha256>-<metric>-<version>.json`.
    An entry is used only when it names the same file, source listing and rbench version (and,
    for the views, the data set plugin's distribution, whose code a view's score is), else it is
    computed again and replaced. A file whose size and modification time are those its entry
    saw is not read again; any other is read whole and its SHA-256 checked, as a report without
    entries would. The added views of one `AddedViews` have entries of their own, named and
    checked by it and its plugin's distribution (name and version), so that a new version of
    the plugin scores them again: `scores/<sha256>-added-<hash>-views.json` and
    `scores/<sha256>-added-<hash>-<metric>-<version>.json`.
    """

    def __init__(self, store: Store, metrics: Sequence[MetricSpec], registry=None):
        self.store = store
        self.metrics = list(metrics)
        self.registry = registry
        self._sources: dict[str, Source] = {}
        # record key -> its predictions frame, the last few read for conformance (which pairs
        # each row with its reference row, view by view)
        self._frames: dict[str, Any] = {}
        self._unwritten = False  # whether a score entry could not be written (said once in `notes`)
        self._notes: list[str] = []  # views that gave no row, and why
        self._added: dict[str, list[tuple[AddedViews, list[ViewSpec]]]] = {}  # listing -> its added views
        # added view -> {record key: (row name, model, source)} of the cells whose file cannot give it
        self._lacking: dict[str, dict[str, tuple[str, str, str]]] = {}

    @property
    def notes(self) -> list[str]:
        """What the rows leave out, and why: one line each (an added view's cells, one line a view)."""
        return [*self._notes, *(self._lacking_note(view, cells) for view, cells in self._lacking.items() if cells)]

    @staticmethod
    def _lacking_note(view: str, cells: Mapping[str, tuple[str, str, str]]) -> str:
        found = sorted(set(cells.values()))
        shown = ", ".join(f"{row} on {source}" for row, _, source in found[:4]) + (", ..." if len(found) > 4 else "")
        names = sorted({model for _, model, _ in found})
        models = ",".join(names) if len(names) <= 8 else f"<those {len(names)} models>"  # a zoo: one line still
        sources = ",".join(sorted({source for _, _, source in found}))
        return (f"{view}: no row for {len(found)} cell(s) ({shown}): their predictions files keep neither its "
                f"class subset nor the full scores; run them again keeping the scores: rbench run -m {models} "
                f"-d {sources} --keep scores (and the options of their run)")

    def source(self, record: CellRecord) -> tuple[str, Source]:
        """`(listing name, Source)` of a validation record (see `Store.listing_name`)."""
        listing = self.store.listing_name(record.source_listing, list(record.cell.views) or None)
        if listing not in self._sources:
            self._sources[listing] = self.store.get_source(listing, self.registry)
        return listing, self._sources[listing]

    def added_views(self, listing: str, source: Source) -> list[tuple[AddedViews, list[ViewSpec]]]:
        """The views that the loaded plugins add to a stored source (`AddedViews` of its name),
        made once per listing: `(added views, the views its make gave)`, in the registry's order.
        A `PluginError` naming the plugin for a view it does not declare."""
        if listing not in self._added:
            found = []
            table = self.registry.added_views if self.registry is not None else {}
            for added in table.values():
                if added.source != source.name:
                    continue
                views = list(added.make(source))
                wrong = next((v for v in views if not isinstance(v, ViewSpec) or v.name not in added.views), None)
                if wrong is not None:
                    what = (f"the view {wrong.name!r}, which its AddedViews.views does not declare"
                            if isinstance(wrong, ViewSpec) else f"a {type(wrong).__name__}, not a ViewSpec")
                    plugin = self._plugin("added_views", added.name)
                    raise PluginError(f"added views {added.name!r} of plugin {plugin.name} (from {plugin.distribution}) "
                                      f"returned {what} from its make; fix or uninstall the plugin")
                if views:
                    found.append((added, views))
            self._added[listing] = found
        return self._added[listing]

    def record_views(self, record: CellRecord) -> tuple[str, Source, list[ViewSpec]]:
        """`(listing name, Source, views)` of a validation record: the source as its listing
        keeps it, and its views followed by those the loaded plugins add to it."""
        listing, source = self.source(record)
        return listing, source, [*source.views, *(v for _, views in self.added_views(listing, source) for v in views)]

    def views(self, record: CellRecord) -> list[ScoredView]:
        """The scored views of a validation record, one row each: its source's, then those the
        loaded plugins add to that source (see `added_views`).

        Raises `DamagedPredictions` for a predictions file that is not whole, and a
        `ListingError` for a source listing that cannot be used.
        """
        # The listing's own name pairs the rows of one listing, whatever name the record gives it.
        listing, source = self.source(record)
        for cells in self._lacking.values():
            cells.pop(record.key, None)  # scored again below
        common = {**record.common, "model": record_model(record)}
        found = []
        groups = [(None, list(source.views)), *self.added_views(listing, source)]
        for added, views in groups:
            scored_views, metric_values = self._scores(record, listing, source, views, added)
            for view, scored in zip(views, scored_views):
                if scored.get("lacks"):
                    self._lacking.setdefault(view.name, {})[record.key] = (
                        common["model"], record.cell.model or record.common["model"], source.name)
                    continue
                if scored["count"] == 0:
                    self._notes.append(f"{common['model']} on {view.name}: no row, the view has no readable sample "
                                       f"in {source.root}")
                    continue
                found.append(self._scored_view(record, listing, common, view, scored, metric_values))
        return found

    def _scored_view(self, record: CellRecord, listing: str, common: Mapping[str, Any], view: ViewSpec,
                     scored: Mapping[str, Any], metric_values: Mapping[str, Mapping[str, Any]]) -> ScoredView:
        """The row of one view of a validation record, from its scores and the metrics' values."""
        row: dict[str, Any] = {"count": scored["count"], **stack_columns(record.cell, scored["differences"])}
        for metric in self.metrics:
            row.update(metric_values[metric.name][view.name])
        if scored["score"] is not None:
            row.update(scored["score"])
        images, (count, hits) = scored["images"], scored["hits"]
        pairing = Paired(images=f"{listing}:{images}", packed_hits=base64.b64decode(hits), scored=count,
                         samples=functools.partial(self._per_sample, record, view.name))
        return ScoredView(view=view.name, columns=tuple(view.columns) if view.columns else None,
                          scored=ScoredRow({**common, **row, "partial": record.partial}, pairing))

    def _scores(self, record: CellRecord, listing: str, source: Source, views_scored: Sequence[ViewSpec],
                added: AddedViews | None = None):
        """`(each view's scores, {metric: {view: values}})` of `views_scored`, the source's own
        views or those of `added`, of a validation record: from its score entries where they are
        whole and current, else computed from its predictions file (and kept)."""
        from .. import __version__

        sha = record.predictions.sha256
        stamp = list(self.store.predictions_stamp(record))  # before any read: a later change shows
        kept = bool(_SHA256.fullmatch(sha))  # entries are named by it
        about = {"predictions": sha, "listing": listing, "rbench": __version__}
        prefix = sha
        if added is not None:  # the plugin's code makes these views: its version names their entries
            distribution = self._distribution("added_views", added.name)
            about = {**about, "added": added.name, "dataset": distribution}
            prefix = f"{sha}-added-{_name_part(f'{added.name} {distribution}')}"
        views_about = {"dataset": self._distribution("datasets", source.name), **about, "kind": "views"}
        views_name = f"{prefix}-views"
        views = self._entry(views_name, views_about) if kept else None
        if views is not None and [v["view"] for v in views["views"]] != [v.name for v in views_scored]:
            views = None
        metric_values: dict[str, dict[str, Any]] = {}
        missing: dict[str, tuple[str, dict[str, Any]]] = {}  # metric -> (entry name, what it is about)
        for metric in self.metrics:
            name = f"{prefix}-{_name_part(metric.name)}-{_name_part(str(metric.version))}"
            metric_about = {**about, "kind": "metric", "metric": metric.name, "version": str(metric.version)}
            entry = self._entry(name, metric_about) if kept else None
            if entry is None:
                missing[metric.name] = (name, metric_about)
            else:
                metric_values[metric.name] = entry["views"]
        if views is not None and not missing:
            if views["stamp"] != stamp:  # changed since its entry saw it: as whole as it was?
                self.store.check_predictions(record)
                views["stamp"] = stamp
                self._put(views_name, views)
            return views["views"], metric_values

        frame = self.store.get_predictions(record, label_sets=False)
        computed: list[dict[str, Any]] = []
        fresh: dict[str, dict[str, Any]] = {name: {} for name in missing}
        for view in views_scored:
            if not can_score(frame.columns, source, view):  # an added view the file cannot give
                if views is None:
                    computed.append({"view": view.name, "count": 0, "lacks": True})
                continue
            predictions = view_predictions(frame, source, view)
            if views is None:
                computed.append(self._view_scores(frame, view, predictions))
            if len(predictions) == 0:
                continue
            for metric in self.metrics:
                if metric.name in missing:
                    fresh[metric.name][view.name] = dict(metric.compute(predictions, view))
        if views is None:
            views = {**views_about, "stamp": stamp, "views": computed}
            if all(v.get("score") is None or v["plain"] for v in computed):  # an empty view has neither
                self._put(views_name, views)
        elif views["stamp"] != stamp:
            views["stamp"] = stamp
            self._put(views_name, views)
        for metric, (name, metric_about) in missing.items():
            plain = {view: _plain(values) for view, values in fresh[metric].items()}
            if all(values is not None for values in plain.values()):
                self._put(name, {**metric_about, "views": plain})
                metric_values[metric] = plain
            else:
                metric_values[metric] = fresh[metric]
        return views["views"], metric_values

    def _view_scores(self, frame, view, predictions) -> dict[str, Any]:
        """What a view's rows hold from its predictions, besides the metrics' values."""
        import numpy as np

        if len(predictions) == 0:
            return {"view": view.name, "count": 0}
        images, hits = _images_and_hits(predictions)
        score = dict(view.score(predictions)) if view.score is not None else None
        plain = _plain(score) if score is not None else None
        return {"view": view.name, "count": len(predictions), "images": images,
                "hits": [len(hits), base64.b64encode(np.packbits(hits).tobytes()).decode()],
                "differences": reference_differences(frame, predictions),
                "score": plain if plain is not None else score, "plain": plain is not None}

    def _entry(self, name: str, about: Mapping[str, Any]) -> dict[str, Any] | None:
        """The score entry `name` when it is about exactly `about` (an older one is replaced)."""
        entry = self.store.get_scores(name)
        if entry is None or any(entry.get(key) != value for key, value in about.items()):
            return None
        return entry

    def _put(self, name: str, content: dict[str, Any]) -> None:
        if not _SHA256.fullmatch(content["predictions"]):  # entries are named by it
            return
        if not self.store.put_scores(name, content) and not self._unwritten:
            self._unwritten = True
            self._notes.append(f"score entries cannot be written in {self.store.root / 'scores'}; every report "
                              "scores the predictions files again")

    def _plugin(self, kind: str, name: str):
        """The loaded plugin that provides `name` of `kind` (`datasets`, `added_views`), or None."""
        plugins = self.registry.plugins.values() if self.registry is not None else ()
        return next((p for p in plugins if f"{kind}:{name}" in p.provides), None)

    def _distribution(self, kind: str, name: str) -> str | None:
        """The distribution (name and version) of the loaded plugin that provides `name` of `kind`."""
        plugin = self._plugin(kind, name)
        return plugin.distribution if plugin is not None else None

    def _per_sample(self, record: CellRecord, view_name: str) -> dict[str, Any]:
        """`per_sample` of one view of a validation record, read from its predictions file."""
        _, source, views = self.record_views(record)
        frame = self._frames.pop(record.key, None)
        if frame is None:
            frame = self.store.get_predictions(record, label_sets=False)
        self._frames[record.key] = frame  # the most recent last
        while len(self._frames) > FRAMES_KEPT:
            del self._frames[next(iter(self._frames))]
        view = next(v for v in views if v.name == view_name)
        return per_sample(view_predictions(frame, source, view))
