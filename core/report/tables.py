"""A report as data: the CSV files of `--out` as polars frames (`Report.tables`), what failed
and why, and each model's per-sample predictions with the file of each sample.

`rbench.evaluate` and `rbench.load_report` return a `Report`; the command line prints one.
Each table is parsed from the very CSV text that is (or would be) written to `--out`
(`results.csv_table`), so a table always equals `polars.read_csv` of its file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RbenchError
from ..store import Store
from .results import Results, csv_bytes, csv_table, failures_table


class Tables(Mapping):
    """The files of a report as polars frames, keyed by their path relative to `--out` without
    `.csv` (`results-imagenet`, `detailed/benchmark-infer-cpu`, `failures`); each parsed from
    its CSV text on first use."""

    def __init__(self, files: Mapping[str, bytes]):
        self._text = {name.removesuffix(".csv"): data for name, data in files.items()}
        self._frames: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self._frames:
            if name not in self._text:
                raise KeyError(f"{name!r}: the report has no file {name}.csv; its tables: {', '.join(self) or 'none'}")
            self._frames[name] = csv_table(self._text[name])
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._text))

    def __len__(self) -> int:
        return len(self._text)

    def __repr__(self) -> str:
        return f"Tables({', '.join(self)})"


def failures_frame(rows) -> Any:
    """Failed cells (`Results.failures`) as the frame that `failures.csv` reads back as."""
    return csv_table(csv_bytes(failures_table(rows)))


@dataclass(frozen=True, eq=False)
class Report:
    """What a run or a store gave, as data.

    - `tables`: every CSV file of the report as a polars frame, keyed by its path relative to
      `out` without `.csv`; each equals `polars.read_csv` of that file.
    - `failures`: the failed cells (of the grid run, for `rbench.evaluate`; of the store, for
      `rbench.load_report`) with `failures.csv`'s columns: model, dataset, backend, bench,
      status, message.
    - `notes`: lines worth reading (a view with no row, two rows of one model and size, a
      robustness file that could not be made); `skipped`: the store's records left out of the
      tables, and why; `unreadable`: images that could not be decoded, left out of the metrics.
    - `skipped_cells`: cells of the grid that did not run this time (their records kept as they
      were; the same call again runs them); `new_rows`: rows that the cells run by this call
      gave; `rows`: the rows of the results, benchmark and metadata files.
    - `out`: the folder the files were written to (None: nothing written); `store`: the store
      whose records made them.
    - `results`: the store's rows at full precision (what the files hold, imported rows
      included); `grid_results`: those of the grid's cells only (None for `load_report`).
    """

    tables: Mapping[str, Any]
    failures: Any
    store: Path
    out: Path | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    skipped_cells: int = 0
    new_rows: int = 0
    rows: int = 0
    results: Results | None = field(default=None, repr=False)
    grid_results: Results | None = field(default=None, repr=False)

    def predictions(self, model: str, view: str | None = None, *, img_size: int | None = None,
                    backend: str | None = None):
        """The per-sample predictions of `model` (the `model` column of its rows, or the timm
        name or architecture it was built from) on `view` (default: its only view), read from
        the store: one row per scored sample (unreadable images left out), in source order.

        Columns: `index` (the sample's position in the data set's listing), `file` (its path
        relative to the data set's folder), `label` (its class index; a list of acceptable
        classes for a view of label sets), `top1` (the predicted class), `correct` (whether the
        top-1 is the label, or one of the set; null for an empty set), `topk` and `topk_logp`
        (the best classes over the view's classes and their log-probabilities), `label_logp`
        (the label's log-probability; NaN for a label set). `img_size` and `backend` choose
        among a model's rows at several sizes or on several backends (default: the first
        backend of its runs). Raises `UnknownNameError` for a model the store has not
        validated, `RbenchError` when the choice is not one view, size and backend.
        """
        from ..registry import get_registry

        return predictions_table(Store(self.store), model, view, img_size=img_size, backend=backend,
                                 registry=get_registry())


def _relative(path: str, root: Path) -> str:
    """`path` relative to `root` (with `/`), or as it is when it lies elsewhere."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def predictions_table(store: Store, model: str, view: str | None = None, *, img_size: int | None = None,
                      backend: str | None = None, registry=None):
    """See `Report.predictions`."""
    import numpy as np
    import polars as pl

    from ..predictions import can_score, view_predictions
    from .compare import records_of
    from .scoring import Scorer

    records = records_of(store, model, img_size, backend)
    tag = records[0].common["model"]
    backends = sorted({r.cell.backend or "" for r in records})
    if len(backends) > 1:
        raise RbenchError(f"{tag} was validated on {len(backends)} backends in {store.root} ({', '.join(backends)}); "
                          "pass backend= one of them")
    scorer = Scorer(store, [], registry)
    found: dict[str, tuple[Any, Any, Any]] = {}  # view -> (record, source, view spec); the later record wins
    for record in records:
        _, source, views = scorer.record_views(record)
        for spec in views:
            found[spec.name] = (record, source, spec)
    if view is None and len(found) != 1:
        raise RbenchError(f"{tag} has rows on {len(found)} views in {store.root} ({', '.join(sorted(found))}); "
                          "pass view= one of them")
    view = view if view is not None else next(iter(found))
    if view not in found:
        raise RbenchError(f"{tag} has no row on the view {view!r} in {store.root}; its views: "
                          f"{', '.join(sorted(found)) or 'none'}")
    record, source, spec = found[view]
    frame = store.get_predictions(record, label_sets=False)
    if not can_score(frame.columns, source, spec):
        raise RbenchError(f"{tag} has no row on the view {view!r} in {store.root}: its predictions file keeps neither "
                          "the view's class subset nor the full scores; run it again with --keep scores")
    predictions = view_predictions(frame, source, spec)
    hit, scored = predictions.correct(1)
    topk = np.asarray(predictions.topk, dtype=np.int64).reshape(len(predictions), -1)
    labels = list(predictions.labels)
    sets = any(isinstance(label, (tuple, list, set, frozenset)) for label in labels)
    label_column = (pl.Series("label", [sorted(label) if sets and not isinstance(label, int) else [label] if sets
                                        else label for label in labels],
                              dtype=pl.List(pl.Int64) if sets else pl.Int64))
    return pl.DataFrame([
        pl.Series("index", np.asarray(predictions.indices, dtype=np.int64)),
        pl.Series("file", [_relative(source.samples[i][0], source.root) for i in predictions.indices], dtype=pl.String),
        label_column,
        pl.Series("top1", topk[:, 0] if topk.shape[1] else np.zeros(len(topk), dtype=np.int64)),
        pl.Series("correct", [bool(h) if s else None for h, s in zip(hit, scored)], dtype=pl.Boolean),
        pl.Series("topk", topk.tolist(), dtype=pl.List(pl.Int64)),
        pl.Series("topk_logp", np.asarray(predictions.topk_logp, dtype=np.float32).reshape(len(predictions), -1).tolist(),
                  dtype=pl.List(pl.Float32)),
        pl.Series("label_logp", np.asarray(predictions.label_logp, dtype=np.float32)),
    ])
