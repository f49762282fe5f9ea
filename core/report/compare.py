"""`rbench compare`: two models' stored predictions, paired on the same images, per view.

The statistics are `statistics.paired_difference` (McNemar's exact test, the paired Wald
interval of the top-1 difference); this module finds each model's validation records in a
store and the per-image top-1 hits of each view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import RbenchError, UnknownNameError
from ..predictions import can_score, view_predictions
from ..worker.models import architecture
from ..record import CellRecord
from .scoring import Scorer, paired_hits, record_model
from ..statistics import PairedComparison, paired_difference
from ..store import Store


class NotPaired(RbenchError):
    """Two models that were not run on the same images of a view."""


@dataclass(frozen=True)
class ViewComparison:
    view: str
    a: str
    b: str
    comparison: PairedComparison

    def verdict(self) -> str:
        return self.comparison.verdict(self.a, self.b)


def _built_as(record: CellRecord, model: str) -> set[str]:
    """The names that also find a record: the timm name it was built from, and its architecture."""
    built = record.cell.model or model
    return {built, architecture(built), architecture(model)}


def records_of(store: Store, name: str, img_size: int | None, backend: str | None = None) -> list[CellRecord]:
    """The validation records of the model whose rows are named `name` (`scoring.record_model`:
    a pretrained tag, `<model>@random`, a checkpoint's name); else of those built from the timm
    name or architecture `name`, which must then be one model (one row name) at one size.
    Those of the `backend` stack, when given; else those of reference stacks."""
    # The reference stack's records: another stack's are conformance, not another model.
    validated = [(r, record_model(r)) for r in store.records() if r.predictions is not None and r.ok
                 and (r.cell.reference is None if backend is None else r.cell.backend == backend)]
    sized = [(r, m) for r, m in validated if img_size is None or r.common.get("img_size") == img_size]
    records = [(r, m) for r, m in sized if m == name] or [(r, m) for r, m in sized if name in _built_as(r, m)]
    tags = sorted({(m, r.common.get("img_size")) for r, m in records})
    if not records:
        import difflib

        known = sorted({m for _, m in validated})
        close = difflib.get_close_matches(name, sorted({*known, *(architecture(k) for k in known)}), n=3, cutoff=0.6)
        what = (f"{name!r}" + (f" at {img_size} px" if img_size is not None else "")
                + (f" on {backend}" if backend is not None else ""))
        hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close else
                f"it holds {', '.join(known[:6])}{', ...' if len(known) > 6 else ''}" if known else "it holds none")
        raise UnknownNameError(f"no validated model {what} in the store {store.root}; {hint}")
    if len(tags) > 1:
        raise RbenchError(f"{name!r} names {len(tags)} validated models in {store.root}: "
                          + ", ".join(f"{m} at {s} px" for m, s in tags)
                          + "; give the full name (the model column of their rows) and --img-size")
    return [replace(r, common={**r.common, "model": m}) for r, m in records]


def _hits_by_view(scorer: Scorer, records: list[CellRecord], views: set[str] | None) -> dict[str, tuple[str, Any]]:
    """`{view: (images key, top-1 hits)}` over a model's records (the later record of a view wins)."""
    found: dict[str, tuple[str, Any]] = {}
    for record in records:
        listing, source, record_views = scorer.record_views(record)
        wanted = [v for v in record_views if views is None or v.name in views]
        if not wanted:
            continue
        frame = scorer.store.get_predictions(record, label_sets=False)
        for view in wanted:
            if not can_score(frame.columns, source, view):  # an added view this file cannot give
                continue
            predictions = view_predictions(frame, source, view)
            if len(predictions):
                found[view.name] = paired_hits(listing, predictions)
    return found


def compare(store: Store, a: str, b: str, view: str | None = None, img_size: int | None = None,
            registry=None) -> list[ViewComparison]:
    """`a` against `b` on `view` (default: every view both were scored on), from the store's
    predictions. Raises `UnknownNameError` for a model the store has not validated,
    `NotPaired` for models not run on the same images, `RbenchError` for no view in common, and
    `ListingError` for a source listing that cannot be used. `registry`: the plugins whose data
    sets rebuild the listings' callables (None: listings without callables)."""
    if not store.records_dir.is_dir():
        raise RbenchError(f"store {store.root} holds no records; pass the --store (or --out) of an earlier `rbench run`")
    records_a, records_b = records_of(store, a, img_size), records_of(store, b, img_size)
    tag_a, tag_b = records_a[0].common["model"], records_b[0].common["model"]
    views = None if view is None else {view}
    scorer = Scorer(store, [], registry)
    hits_a, hits_b = _hits_by_view(scorer, records_a, views), _hits_by_view(scorer, records_b, views)
    if view is not None:
        for tag, hits in ((tag_a, hits_a), (tag_b, hits_b)):
            if view not in hits:
                raise RbenchError(f"{tag} has no row on the view {view!r} in {store.root}; its views: "
                                  f"{', '.join(sorted(_hits_by_view(scorer, records_a if tag == tag_a else records_b, None))) or 'none'}")
    common = [v for v in hits_a if v in hits_b]
    if not common:
        raise NotPaired(f"{tag_a} and {tag_b} share no view in {store.root} (views {', '.join(sorted(hits_a))} and "
                        f"{', '.join(sorted(hits_b))}); a paired test needs both run on the same images")
    found = []
    for name in common:
        (key_a, ha), (key_b, hb) = hits_a[name], hits_b[name]
        if key_a != key_b:
            raise NotPaired(f"{tag_a} and {tag_b} were not run on the same images of {name} ({ha.size:,} and "
                            f"{hb.size:,} scored images, or another listing of the data); a paired test needs the "
                            "same images: run both in one `rbench run` on the same data")
        found.append(ViewComparison(view=name, a=tag_a, b=tag_b, comparison=paired_difference(ha, hb)))
    return found


COMPARISON_COLUMNS = ("view", "a", "b", "images", "top1_a", "top1_b", "diff", "low", "high", "both", "only_a",
                      "only_b", "neither", "p_value", "verdict")


def comparison_table(found: list[ViewComparison]):
    """Paired comparisons as a polars frame, one row per view: the models, the images compared,
    both top-1 and their difference A minus B (percent) with its paired 95% interval (`low`,
    `high`), the four counts of right and wrong, McNemar's exact p-value, and the verdict."""
    import polars as pl

    data = [{"view": item.view, "a": item.a, "b": item.b, "images": item.comparison.n,
             **{c: getattr(item.comparison, c) for c in COMPARISON_COLUMNS[4:-1]}, "verdict": item.verdict()}
            for item in found]
    schema = {c: pl.Float64 for c in COMPARISON_COLUMNS}
    schema.update({c: pl.String for c in ("view", "a", "b", "verdict")})
    schema.update({c: pl.Int64 for c in ("images", "both", "only_a", "only_b", "neither")})
    return pl.DataFrame(data, schema=schema, orient="row")
