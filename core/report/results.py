"""Reports: result rows -> polars frames -> the CSV files of timm's `results/` folder.

`Results` gathers the rows of a run or a store, grouped by the file they go to (scoring the
validation records' predictions on the way in); `write_reports` writes every file. Rows keep
full precision; rounding and formatting happen only here, when a file is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import read_utf8, write_atomic, write_bytes
from ..record import CellRecord
from .scoring import ScoredRow, ScoredView

DETAILED = "detailed"  # the folder of the detailed benchmark files, in --out

VALIDATION_COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "param_count", "crop_pct", "interpolation")
DIFF_COLUMNS = ("top1_diff", "top5_diff", "rank_diff")
INFER_COLUMNS = (
    "model", "infer_img_size", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
    "param_count", "infer_gmacs", "infer_macts",
)
TRAIN_COLUMNS = ("model", "train_samples_per_sec", "train_step_time", "train_batch_size", "train_img_size", "param_count")
# Not a timm file (timm publishes no latency): named and sorted as the others.
LATENCY_COLUMNS = (
    "model", "latency_img_size", "latency_batch_size", "latency_samples_per_sec", "latency_mean_ms",
    "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_queries", "param_count",
)
BENCH_COLUMNS = {"infer": INFER_COLUMNS, "train": TRAIN_COLUMNS, "latency": LATENCY_COLUMNS}
# The device while a benchmark ran (see `benchmark.telemetry_columns`).
TELEMETRY_COLUMNS = ("clock_mhz", "clock_mhz_min", "memory_clock_mhz", "power_w", "temperature_c",
                     "energy_per_image_mj", "throttled")
# The detailed companion file: the spec's columns, then these (never before them).
DETAIL_COLUMNS = (
    "batch_asked", "status", "step_time_p10", "step_time_p50", "step_time_p90", "steps", "peak_memory_mib",
    "compile_s", "backend", "error",
    # rbench's robust figure (batch over the median step), and the repeats of the timed loop
    "samples_per_sec_median", "repeats", "samples_per_sec_repeats", "repeat_spread_pct",
    *TELEMETRY_COLUMNS,
    "step_times_ms",  # every timed step, in order
)
METADATA_COLUMNS = ("model", "pretrain")
MODEL_METADATA_COLUMNS = (
    "model", "architecture", "pretrain", "pretrain_data", "finetune_chain", "technique", "num_classes",
    "train_img_size", "test_img_size", "crop_pct", "test_crop_pct", "interpolation", "mean", "std",
    "param_count", "gmacs", "macts", "license", "paper", "origin_url", "hub_id",
    # how the tag was trained, from published sources (rbench/worker/recipes.csv)
    "recipe", "optimizer", "loss", "epochs", "lr_schedule", "augmentation", "mixup", "cutmix", "label_smoothing",
    "drop_path", "random_erasing", "ema", "repeated_aug", "recipe_source",
    "note",
)


def current_benchmark_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """A stored benchmark row in today's columns. Rows written before `{kind}_samples_per_sec`
    and `{kind}_step_time` held timm's statistic (the mean step) held rbench's median there and
    timm's figure in `samples_per_sec_mean` and `step_time_mean`: their own numbers, moved, so a
    store rewrites its files without running a benchmark again."""
    if "step_time_mean" not in row:
        return row
    row = dict(row)
    mean_rate, mean_step = row.pop("samples_per_sec_mean", None), row.pop("step_time_mean")
    median, batch = row.get("step_time_p50"), row.get(f"{kind}_batch_size")
    row["samples_per_sec_median"] = batch / (median / 1000.0) if batch and median else None
    if kind != "latency":  # latency's columns were timm's mean-based ones already
        row[f"{kind}_samples_per_sec"], row[f"{kind}_step_time"] = mean_rate, mean_step
    return row


def sorted_validation(rows: Iterable[Mapping[str, Any]]):
    """Validation rows as a frame sorted by top1 desc, top5 desc, model asc (full precision)."""
    import polars as pl

    frame = pl.DataFrame([{c: row[c] for c in VALIDATION_COLUMNS} for row in rows],
                         schema=_validation_schema(), orient="row")
    return frame.sort(["top1", "top5", "model"], descending=[True, True, False])


def _validation_schema():
    import polars as pl

    return {
        "model": pl.String, "img_size": pl.Int64, "top1": pl.Float64, "top1_err": pl.Float64,
        "top5": pl.Float64, "top5_err": pl.Float64, "param_count": pl.Float64,
        "crop_pct": pl.Float64, "interpolation": pl.String,
    }


def _plain(value: Any) -> str | None:
    """A view's own column value: 3 decimals for numbers, empty for missing or NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _signed(value: float, digits: int = 3) -> str:
    value = round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:+.{digits}f}"


def validation_table(rows: Sequence[Mapping[str, Any]], base_rows: Sequence[Mapping[str, Any]] | None = None,
                     layout: Sequence[str] | None = None):
    """The frame of one `results-<view>.csv`, all columns formatted as the spec says.

    With `base_rows`, adds top1_diff, top5_diff (test minus base, on the written 3-decimal
    values) and rank_diff (base rank minus test rank, ranks taken on fully sorted frames).
    `layout` is a view's own column order (see `ViewSpec.columns`): standard columns keep
    their format, the view's own are written with 3 decimals (empty when missing or NaN).
    """
    import polars as pl

    frame = sorted_validation(rows)
    columns: dict[str, list[str | None]] = {
        "model": frame["model"].to_list(),
        "img_size": [str(v) for v in frame["img_size"]],
        **{c: [f"{v:.3f}" for v in frame[c]] for c in ("top1", "top1_err", "top5", "top5_err")},
        "param_count": [f"{v:,.2f}" for v in frame["param_count"]],
        "crop_pct": [f"{v:.3f}" for v in frame["crop_pct"]],
        "interpolation": frame["interpolation"].to_list(),
    }
    if layout is not None:
        by_key = {(r["model"], r["img_size"]): r for r in rows}
        ordered = [by_key[(m, z)] for m, z in zip(frame["model"], frame["img_size"])]
        columns = {c: columns[c] if c in columns else [_plain(r.get(c)) for r in ordered] for c in layout}
    if any(row.get("partial") for row in rows):
        # A partial data set's rows say how many images they counted (after the spec's columns).
        counts = {(r["model"], r["img_size"]): r.get("count") for r in rows}
        columns_after = [counts.get((m, s)) for m, s in zip(frame["model"], frame["img_size"])]
    else:
        columns_after = None
    if base_rows is not None:
        base = sorted_validation(base_rows)
        base_index = {(m, s): i for i, (m, s) in enumerate(zip(base["model"], base["img_size"]))}
        diffs: dict[str, list[str | None]] = {c: [] for c in DIFF_COLUMNS}
        for rank, (model, size, top1, top5) in enumerate(frame.select("model", "img_size", "top1", "top5").iter_rows()):
            b = base_index.get((model, size))
            if b is None:
                for c in DIFF_COLUMNS:
                    diffs[c].append(None)  # written as an empty field
                continue
            diffs["top1_diff"].append(_signed(round(top1, 3) - round(base["top1"][b], 3)))
            diffs["top5_diff"].append(_signed(round(top5, 3) - round(base["top5"][b], 3)))
            rank_diff = b - rank
            diffs["rank_diff"].append(f"{rank_diff:+d}" if rank_diff else "0")
        columns.update(diffs)
    if columns_after is not None:
        columns["images"] = [None if c is None else str(c) for c in columns_after]
    return pl.DataFrame(columns, schema={c: pl.String for c in columns})


def read_published(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """The view name and rows of a `results-<view>.csv` in timm's published format.

    Columns are found by name (timm's own files put img_size in different places); values are
    parsed back to numbers, so re-writing the rows reproduces the file.
    """
    from ..errors import DataError

    name = path.name
    if not (name.startswith("results-") and name.endswith(".csv")):
        raise DataError(f"{path} is not a results-<view>.csv file; --import takes timm's published result files")
    def parse(raw: dict[str, str]) -> dict[str, Any]:
        row = {c: raw[c] if c in ("model", "interpolation") else _parsed(c, raw[c]) for c in VALIDATION_COLUMNS}
        empty = [c for c, v in row.items() if v is None]
        if empty:
            raise ValueError(f"{empty[0]} is empty")
        return row

    rows = _read_csv(path, VALIDATION_COLUMNS, parse)
    return name[len("results-"):-len(".csv")], rows


def read_published_benchmark(path: Path) -> tuple[str, str, list[dict[str, Any]]]:
    """The kind (`infer` or `train`), stack tag and rows of a published `benchmark-<kind>-<tag>.csv`.

    Columns are found by name (timm's files order them differently, and some lack the counts);
    a column the file lacks is empty in the rows. Each row needs a model and its samples/s.
    """
    from ..errors import DataError

    name = path.name
    kind, _, tag = name[len("benchmark-"):-len(".csv")].partition("-")
    if not (name.startswith("benchmark-") and name.endswith(".csv") and kind in BENCH_COLUMNS and tag):
        raise DataError(f"{path} is not a benchmark-<infer|train>-<tag>.csv file; --import takes timm's published "
                        "benchmark files")
    columns = BENCH_COLUMNS[kind]
    rows = _read_csv(path, ("model", f"{kind}_samples_per_sec"), lambda raw: {c: _parsed(c, raw.get(c)) for c in columns})
    return kind, tag, rows


def read_published_metadata(path: Path) -> list[dict[str, Any]]:
    """The rows of a `model_metadata.csv` (rbench's) or `model_metadata-in1k.csv` (timm's `model,pretrain`).

    A row of the in-1k file is a tag with a 1000-class head, so it gets `num_classes` 1000; the
    columns a file lacks are empty.
    """
    from ..errors import DataError

    if path.name not in ("model_metadata.csv", "model_metadata-in1k.csv"):
        raise DataError(f"{path} is not a model_metadata.csv or model_metadata-in1k.csv file")

    def parse(raw: dict[str, str]) -> dict[str, Any]:
        row = {c: _parsed(c, raw.get(c)) for c in MODEL_METADATA_COLUMNS}
        for c in ("mean", "std"):
            row[c] = tuple(row[c].split(",")) if row[c] else None
        if path.name == "model_metadata-in1k.csv":
            row["num_classes"] = 1000
        return row

    return _read_csv(path, METADATA_COLUMNS, parse)


PUBLISHED_GLOBS = ("model_metadata.csv", "model_metadata-in1k.csv", "results-*.csv", "benchmark-*.csv")


def import_published(results: Results, path: Path) -> None:
    """Add the rows of one published file (results, benchmark or model metadata CSV, told
    apart by its name) to `results`, marked imported: this store's own rows win over them."""
    from ..errors import DataError

    if path.name.startswith("benchmark-"):
        kind, tag, rows = read_published_benchmark(path)
        entries = [{"table": "benchmark", "kind": kind, "tag": tag, "row": row} for row in rows]
    elif path.name.startswith("model_metadata"):
        entries = [{"table": "metadata", "row": row} for row in read_published_metadata(path)]
    elif path.name.startswith("results-"):
        view, rows = read_published(path)
        entries = [{"table": "validation", "view": view, "row": row} for row in rows]
    else:
        raise DataError(f"--import {path}: not a results-<view>.csv, benchmark-<kind>-<tag>.csv or "
                        "model_metadata[-in1k].csv file; pass one of timm's published files or a folder of them")
    for entry in entries:
        results.add(entry, imported=True)


# A field that a spreadsheet would run as a formula when it opens the CSV (`=cmd|' /C calc'!A0`).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _check_text(column: str, value: Any) -> None:
    """An imported text value that rbench writes back to its CSVs: no NUL byte, and no formula."""
    for text in value if isinstance(value, tuple) else (value,):
        if not isinstance(text, str):
            continue
        if "\0" in text:
            raise ValueError(f"{column} {text!r} holds a NUL byte")
        if text.startswith(_FORMULA_STARTS):
            raise ValueError(f"{column} {text!r} starts with {text[0]!r}, which a spreadsheet runs as a formula")


def _read_csv(path: Path, required: Sequence[str], parse: Callable[[dict[str, str]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a published CSV file (UTF-8, with or without a byte-order mark), each `parse`d
    from its fields; a `DataError` naming the `required` columns it lacks, or the line that
    cannot be read or parsed (a byte that is not UTF-8, a field over 128 KB, a number that is not
    finite or out of range, a name with a NUL byte or that a spreadsheet would run as a formula)."""
    import csv
    import io

    from ..errors import DataError

    try:
        text = read_utf8(path)
    except ValueError as exc:
        raise DataError(f"{path} {exc}; --import reads UTF-8 CSV files: save it as UTF-8, or fix or remove "
                        "that line") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; is it a timm results file?")
        for raw in reader:
            try:
                row = parse(raw)
                for column, value in row.items():
                    _check_text(column, value)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path} line {reader.line_num}: {exc}; fix or remove that line") from None
            rows.append(row)
    except csv.Error as exc:  # a field over csv.field_size_limit() (128 KB), a broken quote
        what = (f"a field over {csv.field_size_limit() // 1024} KB" if "field limit" in str(exc) else str(exc))
        # line_num counts the lines read whole: the error is in the next one
        raise DataError(f"{path} line {reader.line_num + 1}: {what}; fix or remove that line") from None
    return rows


_INTEGER_COLUMNS = ("img_size", "_batch_size", "num_classes")
_NUMBER_COLUMNS = ("_samples_per_sec", "_step_time", "param_count", "_gmacs", "_macts", "gmacs", "macts", "crop_pct")
_PERCENT_COLUMNS = ("top1", "top1_err", "top5", "top5_err")
_LARGEST_INTEGER = 2**31 - 1  # an image size, batch size or class count far past any real one


def _parsed(column: str, text: str | None) -> Any:
    """A published CSV field back to a value: None when empty, else an int or float by its
    column's name (finite; percentages from 0 to 100, the other numbers at least 0, whole numbers
    up to 2**31 - 1), else the text. A field that is none of these raises `ValueError`."""
    import math

    if text is None or text.strip() == "":
        return None
    if column.endswith(_INTEGER_COLUMNS):
        try:
            value = float(text)  # some of timm's files write batch sizes as 1024.0
        except ValueError:
            raise ValueError(f"{column} {text!r} is not a whole number") from None
        if not (value.is_integer() and 0 <= value <= _LARGEST_INTEGER):
            raise ValueError(f"{column} {text!r} is not a whole number from 0 to {_LARGEST_INTEGER:,}")
        return int(value)
    percent = column in _PERCENT_COLUMNS
    if percent or column.endswith(_NUMBER_COLUMNS):
        value = float(text.replace(",", ""))
        if not (math.isfinite(value) and 0 <= value <= (100 if percent else math.inf)):
            raise ValueError(f"{column} {text!r} is not a finite number " + ("from 0 to 100" if percent else "of at least 0"))
        return value
    return text


_DIGITS = {"_samples_per_sec": 2, "step_time": 3, "_p10": 3, "_p50": 3, "_p90": 3, "param_count": 2,
           "_gmacs": 2, "_macts": 2, "compile_s": 2, "peak_memory_mib": 1, "_ms": 3,
           "_sec_median": 2, "_pct": 2, "_mhz": 0, "_mhz_min": 0, "power_w": 1, "temperature_c": 0, "_mj": 3}
_TEXT = {"model", "status", "backend", "error", "samples_per_sec_repeats", "throttled", "step_times_ms"}
_INTEGER = ("_img_size", "_batch_size", "batch_asked", "steps", "repeats", "_queries")


def benchmark_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = INFER_COLUMNS, detailed: bool = False):
    """The frame of one benchmark CSV: rounded as timm's tables, sorted by samples/s descending.

    The plain file has `columns` and only the rows that ran; `detailed` adds `DETAIL_COLUMNS`
    and keeps failed rows (after the others).
    """
    import polars as pl

    rate = next(c for c in columns if c.endswith("_samples_per_sec"))
    columns = (*columns, *DETAIL_COLUMNS) if detailed else tuple(columns)

    def rounded(column: str, value: Any) -> Any:
        if column in _TEXT:
            return value
        for suffix, n in _DIGITS.items():
            if column.endswith(suffix) and value is not None:
                return round(value, n)
        return value

    data = [{c: rounded(c, row.get(c)) for c in columns} for row in rows if detailed or row.get(rate) is not None]
    data.sort(key=lambda r: (r[rate] is None, -(r[rate] or 0.0), r["model"]))
    schema = {c: pl.String if c in _TEXT else pl.Int64 if c.endswith(_INTEGER) else pl.Float64 for c in columns}
    return pl.DataFrame(data, schema=schema)


def metadata_table(rows: Iterable[Mapping[str, Any]]):
    """The frame of `model_metadata-in1k.csv`, one row per model, sorted by model."""
    import polars as pl

    unique = {row["model"]: {c: row[c] for c in METADATA_COLUMNS} for row in rows}
    return pl.DataFrame([unique[m] for m in sorted(unique)], schema={c: pl.String for c in METADATA_COLUMNS})


FAILURE_COLUMNS = ("model", "dataset", "backend", "bench", "status", "message")


def failures_table(rows: Iterable[Mapping[str, Any]]):
    """The frame of `failures.csv`: one row per failed cell, sorted by model, bench, dataset, backend."""
    import polars as pl

    data = sorted(({c: row.get(c) or "" for c in FAILURE_COLUMNS} for row in rows),
                  key=lambda r: (r["model"], r["bench"], r["dataset"], r["backend"]))
    return pl.DataFrame(data, schema={c: pl.String for c in FAILURE_COLUMNS})


def model_metadata_table(rows: Iterable[Mapping[str, Any]]):
    """The frame of `model_metadata.csv`, one row per tag sorted by model; empty fields where
    nothing is known. Counts are rounded as in the benchmark files: millions and billions, 2 decimals."""
    import polars as pl

    def text(column: str, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if column in ("param_count", "gmacs", "macts"):
            return f"{value:.2f}"
        if column in ("crop_pct", "test_crop_pct"):
            return f"{value:.3f}"
        if column in ("mean", "std"):
            return ",".join(str(v) for v in value)
        return str(value)

    unique = {row["model"]: row for row in rows}
    data = [{c: text(c, unique[m].get(c)) for c in MODEL_METADATA_COLUMNS} for m in sorted(unique)]
    return pl.DataFrame(data, schema={c: pl.String for c in MODEL_METADATA_COLUMNS})


TIE_COLUMNS = ("tied_with_best", "p_vs_best")


def ties_with_best(rows: Sequence[ScoredRow]) -> dict[int, tuple[bool, float]]:
    """`{id(row): (tied, p)}` for the rows of one view that can be paired with its best row.

    The best row is the one with the highest top-1 (then top-5, then model name, as the
    results file sorts). Each row scored on exactly the same images (`scoring.Paired`) is
    compared with it by McNemar's exact test: `tied` when p >= `statistics.ALPHA` (0.05, one
    test per model, no correction for multiple comparisons). The best row is tied with itself
    (p = 1). Rows without per-image hits (imported rows) or on other images are left out.
    """
    from ..statistics import ALPHA, mcnemar_exact

    paired = [s for s in rows if s.paired is not None and s.row.get("top1") is not None]
    if not paired:
        return {}
    best = min(paired, key=lambda s: (-s.row["top1"], -s.row.get("top5", 0.0), s.row["model"]))
    found: dict[int, tuple[bool, float]] = {}
    for scored in paired:
        if scored.paired.images != best.paired.images:
            continue
        only_best, only_row = best.paired.discordant(scored.paired)
        p = mcnemar_exact(only_best, only_row)
        found[id(scored)] = (p >= ALPHA, p)
    return found


def metrics_table(scored_rows: Sequence[ScoredRow], columns: Sequence[str], ties: bool = False):
    """The frame of one `metrics-<view>.csv`: model, img_size, weights (`pretrained`, `random` or
    `checkpoint:<file>`), then every metric column at full precision (empty where a metric gave
    nothing), sorted by model and img_size. With `ties` (accuracy among the metrics), then
    `tied_with_best` and `p_vs_best` (see `ties_with_best`; empty where a row cannot be paired)."""
    import polars as pl

    tied = ties_with_best(scored_rows) if ties else {}
    data = sorted(({"model": s.row["model"], "img_size": s.row["img_size"], "weights": s.row.get("weights"),
                    **{c: s.row.get(c) for c in columns},
                    **({"tied_with_best": tied.get(id(s), (None, None))[0],
                        "p_vs_best": tied.get(id(s), (None, None))[1]} if ties else {})}
                   for s in scored_rows), key=lambda r: (r["model"], r["img_size"]))
    schema = {"model": pl.String, "img_size": pl.Int64, "weights": pl.String, **{c: pl.Float64 for c in columns},
              **({"tied_with_best": pl.Boolean, "p_vs_best": pl.Float64} if ties else {})}
    return pl.DataFrame([{k: (float(v) if k in columns and v is not None else v) for k, v in r.items()} for r in data],
                        schema=schema, orient="row")


ROBUSTNESS_COLUMNS = ("model", "img_size", "origin", "base_top1", "top1", "predicted_top1", "effective_robustness",
                      "slope", "intercept", "r2", "models")


def robustness_table(view: str, base: str, rows: Sequence[Mapping[str, Any]], base_rows: Sequence[Mapping[str, Any]],
                     imported: set[tuple[str, str, int]] = frozenset()):
    """The frame of `robustness-<view>.csv`, or a note saying why there is none.

    Every model with a row (same model and img_size) on both `view` and its `base`, this
    store's and imported alike, is a point (base top-1, top-1); a line is fitted through the
    points on logit axes (`statistics.effective_robustness`, at least
    `statistics.MIN_FIT_MODELS` models). Columns: model, img_size, origin (`store` or
    `import`), base_top1, top1, predicted_top1 (the line's, back on the accuracy scale),
    effective_robustness (top1 - predicted_top1, points), then the fit's slope, intercept and
    r2 (logit space) and its number of models, the same on every row. Sorted by effective
    robustness, highest first, then model.
    """
    import polars as pl

    from ..statistics import MIN_FIT_MODELS, effective_robustness

    by_key = {(r["model"], r["img_size"]): r for r in base_rows if r.get("top1") is not None}
    pairs = [(r, by_key[(r["model"], r["img_size"])]) for r in rows
             if r.get("top1") is not None and (r["model"], r["img_size"]) in by_key]
    if len(pairs) < MIN_FIT_MODELS:
        return None, (f"{view}: no robustness-{view}.csv: {len(pairs)} model(s) have rows on both {view} and its "
                      f"base {base}; the effective-robustness line needs at least {MIN_FIT_MODELS}")
    fit, predicted, gain = effective_robustness([b["top1"] for _, b in pairs], [r["top1"] for r, _ in pairs])
    data = [{"model": r["model"], "img_size": r["img_size"],
             "origin": "import" if (view, r["model"], r["img_size"]) in imported else "store",
             "base_top1": float(b["top1"]), "top1": float(r["top1"]), "predicted_top1": float(p),
             "effective_robustness": float(g), "slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2,
             "models": fit.n}
            for (r, b), p, g in zip(pairs, predicted.tolist(), gain.tolist())]
    data.sort(key=lambda d: (-d["effective_robustness"], d["model"], d["img_size"]))
    schema = {c: pl.Float64 for c in ROBUSTNESS_COLUMNS}
    schema.update({"model": pl.String, "img_size": pl.Int64, "origin": pl.String, "models": pl.Int64})
    return pl.DataFrame(data, schema=schema, orient="row"), None


def write_csv(frame, path: Path) -> Path:
    """Write `frame` to `path` atomically (temporary file, then rename): readers never see half a file."""
    return write_atomic(path, frame.write_csv)


@dataclass
class Results:
    """Rows at full precision, grouped by the file they will be written to.

    `bases` maps each view to its base view (the diff columns), as the data set plugins declare
    it; `scorer` (a `scoring.Scorer`) turns validation records into rows.
    """

    bases: Mapping[str, str | None] = field(default_factory=dict)
    scorer: Any = None
    validation: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    columns: dict[str, list[str]] = field(default_factory=dict)  # views with their own column order
    # view -> this store's rows (each with its paired data beside it), for metrics-<view>.csv
    metric_rows: dict[str, list[ScoredRow]] = field(default_factory=lambda: defaultdict(list))
    # (benchmark kind, backend stack's file tag) -> rows, ok or failed
    benchmarks: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    metadata: list[dict[str, Any]] = field(default_factory=list)
    # view -> the rows of its non-reference stacks, for conformance-<view>.csv
    conformance_input: dict[str, list[ScoredRow]] = field(default_factory=lambda: defaultdict(list))
    failures: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # rows replaced by others of the same model and size
    robustness_notes: list[str] = field(default_factory=list)  # views with too few models, from the last write
    # view -> its rows as its data set's report options make them (`DatasetSpec.report_rows`: (rows,
    # every view's rows) -> (rows, notes)), applied when the files are made
    row_reports: Mapping[str, Callable[..., tuple[list[dict[str, Any]], list[str]]]] = \
        field(default_factory=dict)
    report_notes: list[str] = field(default_factory=list)  # what those said, at the last write
    _imported: set[tuple[str, str, int]] = field(default_factory=set)
    _imported_benchmarks: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, tag, model)
    _imported_metadata: set[str] = field(default_factory=set)  # models
    # Where each key's row is, so that adding a row never scans the others (an import of
    # 300,000 rows is linear): (view, model, img_size) -> its index in `validation[view]`, and
    # in `metric_rows[view]`; conformance keys -> index; models with a row per benchmark file,
    # and in `metadata`.
    _validation_at: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _metric_at: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _conformance_at: dict[tuple[Any, ...], int] = field(default_factory=dict)
    _benchmark_models: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    _metadata_models: set[str] = field(default_factory=set)

    @property
    def metric_columns(self) -> list[str]:
        return [c for metric in (self.scorer.metrics if self.scorer else []) for c in metric.columns]

    def add(self, entry: dict[str, Any], imported: bool = False) -> None:
        """Add one entry: `{"table": "validation"|"benchmark"|"metadata", "row": ..., ...}`.

        One row per model and image size in a view (the later is kept, and a note says so), and an
        imported row never replaces this store's own; in constant time per row."""
        table, row = entry["table"], entry["row"]
        if table == "validation":
            columns = entry.get("columns")
            self.add_scored(ScoredView(view=entry["view"], scored=ScoredRow(row),
                                       columns=tuple(columns) if columns else None), imported)
        elif table == "benchmark":
            row = row if imported else current_benchmark_row(entry["kind"], row)
            rows, key = self.benchmarks[(entry["kind"], entry["tag"])], (entry["kind"], entry["tag"], row["model"])
            models = self._benchmark_models[(entry["kind"], entry["tag"])]
            if imported:
                if key not in self._imported_benchmarks and row["model"] in models:
                    self.notes.append(f"benchmark-{entry['kind']}-{entry['tag']}.csv: the imported row of "
                                      f"{row['model']} is left out; this store's own row of that model is written")
                    return
                self._imported_benchmarks.add(key)
            elif key in self._imported_benchmarks:  # this store's row replaces the imported one
                rows[:] = [r for r in rows if r["model"] != row["model"]]
                self._imported_benchmarks.discard(key)
            models.add(row["model"])
            rows.append(row)
        elif table == "metadata":
            if imported and row["model"] in self._metadata_models:
                return  # this store's row, or a fuller imported one, is kept
            self._metadata_models.add(row["model"])
            self.metadata.append(row)
            if imported:
                self._imported_metadata.add(row["model"])
        else:
            raise ValueError(f"unknown table {table!r} in a store entry")

    def add_scored(self, scored_view: ScoredView, imported: bool = False) -> None:
        """Add a view's validation row (see `add`): a non-reference stack's row goes to
        conformance only."""
        view, scored = scored_view.view, scored_view.scored
        row = scored.row
        if row.get("reference") is not None:  # another stack's: conformance only
            rows = self.conformance_input[view]
            key = (view, row["model"], row["img_size"], row["backend"], row["reference"])
            if key in self._conformance_at:
                rows[self._conformance_at[key]] = scored
            else:
                self._conformance_at[key] = len(rows)
                rows.append(scored)
        else:
            self._add_validation(scored_view, imported)

    def _add_validation(self, scored_view: ScoredView, imported: bool) -> None:
        row = scored_view.scored.row
        view, key = scored_view.view, (scored_view.view, row["model"], row["img_size"])
        rows = self.validation.get(view, [])
        at = self._validation_at.get(key)
        same = None if at is None else rows[at]
        if same is not None and imported and key not in self._imported:
            self.notes.append(f"{view}: the imported row of {row['model']} at {row['img_size']} px is left out; "
                              "this store's own row of that model and size is written")
            return
        if same is not None:  # one row per model and size: the later one, and say so
            self.notes.append(f"{view}: two rows of {row['model']} at {row['img_size']} px (weights "
                              f"{same.get('weights', 'imported')} and {row.get('weights', 'imported')}); "
                              "the later is written")
        if imported:
            self._imported.add(key)
        else:
            self._imported.discard(key)
        # An imported row never replaces an own one (above), so metric rows are never removed:
        # an own row takes the place of the own row it replaces there.
        metric_at = self._metric_at.pop(key, None) if same is not None else None
        if not imported:
            if metric_at is None:
                metric_at = len(self.metric_rows[view])
                self.metric_rows[view].append(scored_view.scored)
            else:
                self.metric_rows[view][metric_at] = scored_view.scored
        if "top1" in row:  # the timm-schema file needs accuracy (the default metric)
            if same is not None:
                rows[at] = row  # in the replaced row's place
            else:
                self._validation_at[key] = len(rows)
                self.validation.setdefault(view, rows).append(row)
            if not imported:
                self._metric_at[key] = metric_at
        elif same is not None:  # an own row without accuracy replaces one with it: rare, never an import
            rows.pop(at)
            del self._validation_at[key]
            self._validation_at.update({k: i - 1 for k, i in self._validation_at.items() if k[0] == view and i > at})
        if scored_view.columns:
            self.columns[view] = list(scored_view.columns)

    @property
    def conformance(self) -> dict[str, list[dict[str, Any]]]:
        """view -> its `conformance-<view>.csv` rows (`conformance.conformance_rows`)."""
        from .conformance import conformance_rows

        return {view: conformance_rows(rows, self.metric_rows.get(view, []))
                for view, rows in self.conformance_input.items()}

    def add_record(self, record: CellRecord, scored: list[ScoredView] | None = None) -> None:
        """Add a cell's record: its rows (scored from its predictions, or `scored`: the views
        `scorer.views` gave for it earlier), and its failure or unreadable images if any. Raises,
        adding nothing, when its predictions cannot be read."""
        if record.predictions is None:
            scored = []
        elif scored is None:
            scored = self.scorer.views(record)
        for entry in record.entries:
            self.add(entry.to_json())
        for scored_view in scored:
            self.add_scored(scored_view)
        self.unreadable.extend(record.unreadable)
        if not record.ok:
            cell = record.cell
            # Rows of other weights than the pretrained ones carry their row name, failures too.
            named = cell.weights not in (None, "pretrained") and cell.name
            self.failures.append({"model": named or cell.model, "dataset": cell.source, "backend": cell.backend,
                                  "bench": cell.kind, "status": record.status, "message": record.message,
                                  "views": list(cell.views)})


def imported_rows(results: Results) -> dict[str, set[tuple[str, ...]]]:
    """For each file `write_reports` writes, the keys of its imported rows: `(model, img_size)`
    (as written) in the results and robustness files, `(model,)` in the others."""
    from ..worker.metadata import in1k_rows

    found: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for view, model, size in results._imported:
        found[f"results-{view}.csv"].add((model, str(size)))
        found[f"robustness-{view}.csv"].add((model, str(size)))
    for kind, tag, model in results._imported_benchmarks:
        found[f"benchmark-{kind}-{tag}.csv"].add((model,))
    imported_in1k = {r["model"] for r in in1k_rows(results.metadata)} & results._imported_metadata
    found["model_metadata.csv"].update((m,) for m in results._imported_metadata)
    found["model_metadata-in1k.csv"].update((m,) for m in imported_in1k)
    return dict(found)


def csv_bytes(frame) -> bytes:
    """The CSV text of a frame, as a report file holds it."""
    return frame.write_csv().encode()


def csv_table(data: bytes):
    """A report file's CSV text as a polars frame: what `polars.read_csv` gives for the file."""
    import io

    import polars as pl

    return pl.read_csv(io.BytesIO(data))


@dataclass(frozen=True)
class ReportFiles:
    """The files of a report: `files`, each file's path relative to `--out` and its CSV text;
    `stale`, the files it does not make that an earlier report of the same `--out` may have left
    (a robustness file of a view with too few models now, `failures.csv` once none failed)."""

    files: dict[str, bytes]
    stale: tuple[str, ...] = ()


def report_files(results: Results) -> ReportFiles:
    """Every file that the results make, as CSV text, each view's rows as its data set's report
    options make them (`results.row_reports`, whose notes go to `results.report_notes`);
    `results.robustness_notes` says which robustness files cannot be made and why."""
    from ..worker.metadata import in1k_rows

    frames: dict[str, Any] = {}
    stale: list[str] = []
    validation = dict(results.validation)
    results.report_notes = []
    view_rows = dict(results.validation)  # as scored: what each report pairs its rows with
    for view, report in results.row_reports.items():
        rows, notes = report(validation.get(view, []), view_rows)
        results.report_notes.extend(notes)
        if view in validation:
            validation[view] = rows
    for view, rows in validation.items():
        base = results.bases.get(view)
        base_rows = validation.get(base, []) if base else None
        frames[f"results-{view}.csv"] = validation_table(rows, base_rows, results.columns.get(view))
    metric_columns = results.metric_columns
    for view, rows in results.metric_rows.items():
        if metric_columns:
            frames[f"metrics-{view}.csv"] = metrics_table(rows, metric_columns, ties="top1" in metric_columns)
    # A view whose every cell failed gets its files with no row: an earlier report's rows of those
    # cells must not stay beside their failures.csv rows.
    failed_views = {v for f in results.failures for v in f.get("views", ())}
    for view in sorted(failed_views - set(results.validation) - set(results.metric_rows)):
        base = results.bases.get(view)
        if "top1" in metric_columns:
            frames[f"results-{view}.csv"] = validation_table([], results.validation.get(base) if base else None,
                                                             results.columns.get(view))
        if metric_columns:
            frames[f"metrics-{view}.csv"] = metrics_table([], metric_columns, ties="top1" in metric_columns)
    from .conformance import conformance_table

    for view, rows in results.conformance.items():
        frames[f"conformance-{view}.csv"] = conformance_table(rows)
    results.robustness_notes = []
    for view, rows in validation.items():
        base = results.bases.get(view)
        if not base or not validation.get(base):
            continue
        frame, note = robustness_table(view, base, rows, validation[base], results._imported)
        if frame is None:
            results.robustness_notes.append(note)
            stale.append(f"robustness-{view}.csv")  # an earlier report's, on other rows
        else:
            frames[f"robustness-{view}.csv"] = frame
    for (kind, tag), rows in results.benchmarks.items():
        columns = BENCH_COLUMNS[kind]
        frames[f"benchmark-{kind}-{tag}.csv"] = benchmark_table(rows, columns)
        # Same name in a subfolder: readers that glob `benchmark-infer-*.csv` see timm's files only.
        # Imported rows have no details: the detailed file holds this store's rows only.
        own = [r for r in rows if (kind, tag, r["model"]) not in results._imported_benchmarks]
        if own:
            frames[f"{DETAILED}/benchmark-{kind}-{tag}.csv"] = benchmark_table(own, columns, detailed=True)
    if results.metadata:
        frames["model_metadata-in1k.csv"] = metadata_table(in1k_rows(results.metadata))
        frames["model_metadata.csv"] = model_metadata_table(results.metadata)
    if results.failures:
        frames["failures.csv"] = failures_table(results.failures)
    else:
        stale.append("failures.csv")  # a retry fixed them all
    return ReportFiles(files={name: csv_bytes(frame) for name, frame in frames.items()}, stale=tuple(stale))


def write_reports(results: Results, out: Path) -> ReportFiles:
    """Every file that the results make (`report_files`), rewritten atomically in `out`; the
    stale ones of an earlier report removed. Returns what it wrote."""
    made = report_files(results)
    for name, data in made.files.items():
        write_bytes(out / name, data)
    for name in made.stale:
        (out / name).unlink(missing_ok=True)
    return made
