"""The plots of a report, as data: computed once from the CSV files' tables, drawn twice.

`plot_data` turns the tables that `rbench report` wrote into `Plot`s (points with their model
and origin, the Pareto front, fitted lines, heat-map cells, and notes on what is missing); the
HTML site draws them with plotly.js and `draw_static` with matplotlib, from the same numbers.

The plots are those the field reads: top-1 against samples/s per benchmark file with the Pareto
front, top-1 against GMACs and parameters, each shifted view against its base on logit axes
with the effective-robustness line (Taori et al. 2020), and a view's own columns (ImageNet-C's
per-corruption top-1) as a heat map of errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


NAMES_IN_A_NOTE = 5  # models named in a note before "and N more"


@dataclass
class Table:
    """One CSV file as read back: its name, columns and rows of text, and which rows are imported."""

    name: str
    columns: list[str]
    rows: list[dict[str, str]]
    imported: list[bool]


@dataclass
class Point:
    model: str
    x: float
    y: float
    imported: bool
    front: bool = False  # on the Pareto front (throughput plots)
    gain: float | None = None  # effective robustness, points (shift plots with a fitted line)


@dataclass
class Plot:
    """One plot: points (or heat-map cells), lines, axis titles and notes on what is missing.

    On `logit` plots x and y are logit(accuracy) and `ticks` are the accuracies (percent) to
    label; `x_log` is a logarithmic x axis.
    """

    id: str
    title: str
    x_title: str
    y_title: str
    kind: str = "scatter"  # or "heatmap"
    points: list[Point] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)  # {"name", "x", "y"}
    x_log: bool = False
    logit: bool = False
    ticks: list[float] = field(default_factory=list)
    heat: dict[str, Any] = field(default_factory=dict)  # {"rows", "columns", "z"}
    notes: list[str] = field(default_factory=list)


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """Whether each point is on the front: no other point has x' >= x and y' >= y with one of
    them strictly greater. O(n log n): sweep x from high to low."""
    order = sorted(range(len(xs)), key=lambda i: -xs[i])
    front = [False] * len(xs)
    best_above = float("-inf")  # the highest y among points of strictly greater x
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and xs[order[end]] == xs[order[start]]:
            end += 1
        group = order[start:end]
        group_best = max(ys[i] for i in group)
        for i in group:
            front[i] = ys[i] > best_above and ys[i] == group_best
        best_above = max(best_above, group_best)
        start = end
    return front


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return None if value != value else value  # NaN: nothing to plot


def _missing_note(what: str, models: Sequence[str]) -> str:
    shown = ", ".join(models[:NAMES_IN_A_NOTE])
    more = f" and {len(models) - NAMES_IN_A_NOTE} more" if len(models) > NAMES_IN_A_NOTE else ""
    return f"{len(models)} model(s) {what}: {shown}{more}"


def _lacks(table: Table, columns: Sequence[str]) -> str | None:
    missing = [c for c in columns if c not in table.columns]
    return f"{table.name} has no {', '.join(missing)} column" if missing else None


class _ByModel:
    """Rows of a table found by a results row's model: the same name, else a row of its
    architecture at the same image size that names no weights of its own (timm's benchmark
    files name architectures; metadata rows name pretrained tags, whose counts are the
    architecture's). A row of other weights (`<model>@random`, a checkpoint's name) is found
    only by its own name, so that it is never joined to another model's accuracy."""

    def __init__(self, table: Table, size_column: str | None):
        from ..worker.models import architecture

        self.table = table
        self.exact: dict[str, int] = {}
        self.sized: dict[tuple[str, str], int] = {}
        for i, row in enumerate(table.rows):
            self.exact.setdefault(row["model"], i)
            if size_column and row.get(size_column) and "@" not in row["model"]:
                self.sized.setdefault((architecture(row["model"]), row[size_column]), i)

    def find(self, model: str, img_size: str | None) -> int | None:
        from ..worker.models import architecture

        found = self.exact.get(model)
        if found is None:
            found = self.sized.get((architecture(model), img_size or ""))
        return found


def accuracy_view(tables: Mapping[str, Table], bases: Mapping[str, str | None]) -> str | None:
    """The view whose top-1 the throughput and size plots show: `imagenet`, else the first
    view without a base."""
    views = [name[len("results-"):-len(".csv")] for name in tables if name.startswith("results-")]
    if "imagenet" in views:
        return "imagenet"
    return next((v for v in sorted(views) if not bases.get(v)), None)


def _against_accuracy(plot: Plot, accuracy: Table, other: Table | None, value_column: str, size_column: str | None,
                      missing_what: str) -> list[Point]:
    """Points (value, top-1) of the accuracy table's rows, the value read from `other` (found by
    model, see `_ByModel`) or from the accuracy table itself when `other` is None."""
    lacking = _lacks(accuracy, ("model", "top1")) or (other is not None and _lacks(other, ("model", value_column)))
    if lacking:
        plot.notes.append(f"nothing to plot: {lacking}")
        return []
    index = _ByModel(other, size_column) if other is not None else None
    points, missing = [], []
    for row, imported in zip(accuracy.rows, accuracy.imported):
        top1 = _number(row.get("top1"))
        if index is None:
            value, also_imported = _number(row.get(value_column)), True
        else:
            found = index.find(row["model"], row.get("img_size"))
            value = None if found is None else _number(other.rows[found].get(value_column))
            also_imported = found is not None and other.imported[found]
        if value is None or value <= 0 or top1 is None:
            missing.append(row["model"])
            continue
        points.append(Point(model=row["model"], x=value, y=top1, imported=imported and also_imported))
    if missing:
        plot.notes.append(_missing_note(missing_what, missing))
    return points


def throughput_plot(accuracy: Table, bench: Table) -> Plot:
    """Top-1 against samples/s of one benchmark file, with the Pareto front marked."""
    kind = bench.name[len("benchmark-"):].split("-")[0]
    rate = f"{kind}_samples_per_sec"
    stem = bench.name[:-len(".csv")]
    plot = Plot(id=f"throughput-{stem}", title=f"top-1 ({accuracy.name}) against {kind} samples/s: {bench.name}",
                x_title=f"{kind} samples/s (log)", y_title="top-1 (%)", x_log=True)
    plot.points = _against_accuracy(plot, accuracy, bench, rate, f"{kind}_img_size",
                                    f"of {accuracy.name} have no row in {bench.name}")
    for point, on_front in zip(plot.points, pareto_front([p.x for p in plot.points], [p.y for p in plot.points])):
        point.front = on_front
    front = sorted((p for p in plot.points if p.front), key=lambda p: p.x)
    if front:
        plot.lines.append({"name": "Pareto front", "x": [p.x for p in front], "y": [p.y for p in front]})
    return plot


def size_plots(accuracy: Table, tables: Mapping[str, Table]) -> list[Plot]:
    """Top-1 against GMACs (from model_metadata.csv, else the first infer benchmark file with
    counts) and against parameters (the results file's own)."""
    macs = Plot(id="gmacs", title=f"top-1 ({accuracy.name}) against GMACs", x_title="GMACs per image (log)",
                y_title="top-1 (%)", x_log=True)
    sources = [(tables["model_metadata.csv"], "gmacs", "test_img_size")] if "model_metadata.csv" in tables else []
    sources += [(t, "infer_gmacs", "infer_img_size") for name, t in sorted(tables.items())
                if name.startswith("benchmark-infer-") and "infer_gmacs" in t.columns]
    source = next(((t, c, s) for t, c, s in sources if any(_number(r.get(c)) for r in t.rows)), None)
    if source is None:
        macs.notes.append("nothing to plot: no model_metadata.csv with gmacs and no benchmark-infer-*.csv with "
                          "infer_gmacs (run --bench metadata or infer, or --import them)")
    else:
        table, column, size = source
        macs.title += f" ({table.name})"
        macs.points = _against_accuracy(macs, accuracy, table, column, size, f"of {accuracy.name} have no GMACs "
                                        f"in {table.name}")
    params = Plot(id="params", title=f"top-1 ({accuracy.name}) against parameters", x_title="parameters, millions (log)",
                  y_title="top-1 (%)", x_log=True)
    params.points = _against_accuracy(params, accuracy, None, "param_count", None,
                                      f"of {accuracy.name} have no param_count")
    return [macs, params]


LOGIT_TICKS = (0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5)


def logit_percent(percent: float) -> float:
    """The logit of an accuracy in percent (`statistics.logit`, clipped the same way)."""
    from ..statistics import logit

    return float(logit(percent / 100.0))


def shift_plot(view: str, base: str, tables: Mapping[str, Table]) -> Plot:
    """A shifted view's top-1 against its base's on logit axes, with the effective-robustness
    line of `robustness-<view>.csv` when the report wrote one."""
    plot = Plot(id=f"shift-{view}", title=f"{view} against {base} (logit axes)", x_title=f"{base} top-1 (%)",
                y_title=f"{view} top-1 (%)", logit=True, ticks=list(LOGIT_TICKS))
    robustness = tables.get(f"robustness-{view}.csv")
    needed = ("model", "base_top1", "top1", "effective_robustness", "slope", "intercept", "origin")
    if robustness is not None and not _lacks(robustness, needed) and robustness.rows:
        for row in robustness.rows:
            plot.points.append(Point(model=row["model"], x=logit_percent(float(row["base_top1"])),
                                     y=logit_percent(float(row["top1"])), imported=row["origin"] == "import",
                                     gain=float(row["effective_robustness"])))
        slope, intercept = float(robustness.rows[0]["slope"]), float(robustness.rows[0]["intercept"])
        low, high = min(p.x for p in plot.points), max(p.x for p in plot.points)
        plot.lines.append({"name": f"fit: logit(y) = {slope:.3f} logit(x) {intercept:+.3f}", "x": [low, high],
                           "y": [slope * low + intercept, slope * high + intercept]})
        return plot
    shifted, based = tables[f"results-{view}.csv"], tables[f"results-{base}.csv"]
    lacking = _lacks(shifted, ("model", "img_size", "top1")) or _lacks(based, ("model", "img_size", "top1"))
    if lacking:
        plot.notes.append(f"nothing to plot: {lacking}")
        return plot
    by_key = {(r["model"], r["img_size"]): (r, imp) for r, imp in zip(based.rows, based.imported)}
    for row, imported in zip(shifted.rows, shifted.imported):
        found = by_key.get((row["model"], row["img_size"]))
        x, y = (_number(found[0].get("top1")) if found else None), _number(row.get("top1"))
        if x is None or y is None:
            continue
        plot.points.append(Point(model=row["model"], x=logit_percent(x), y=logit_percent(y),
                                 imported=imported and found[1]))
    why = ("the report wrote none" if robustness is None
           else _lacks(robustness, needed) or f"robustness-{view}.csv has no rows")
    plot.notes.append(f"no effective-robustness line: no usable robustness-{view}.csv ({why}; the fit needs at "
                      "least 10 models with rows on both views)")
    return plot


def heat_map(table: Table, part_columns: Sequence[str]) -> Plot | None:
    """The view's per-part top-1 columns that its file has (`part_columns`, as its data set
    declares them: ImageNet-C's corruptions) as errors, 100 - top-1, one row per model; None
    when it has none."""
    declared = set(part_columns)
    parts = [c for c in table.columns if c in declared]
    if not parts or "model" not in table.columns:
        return None
    view = table.name[len("results-"):-len(".csv")]
    plot = Plot(id=f"heat-{view}", title=f"{view}: top-1 error (%) per column", x_title="", y_title="model",
                kind="heatmap")
    filled = [any(_number(r.get(c)) is not None for c in parts) for r in table.rows]
    rows = [r for r, f in zip(table.rows, filled) if f]
    z = [[None if (v := _number(r.get(c))) is None else round(100.0 - v, 3) for c in parts] for r in rows]
    plot.heat = {"rows": [r["model"] for r in rows], "columns": parts, "z": z}
    empty = [r["model"] for r, f in zip(table.rows, filled) if not f]
    if empty:
        plot.notes.append(_missing_note(f"of {table.name} have none of its own columns", empty))
    return plot


def plot_data(tables: Mapping[str, Table], bases: Mapping[str, str | None],
              part_columns: Mapping[str, Sequence[str]] | None = None) -> tuple[list[Plot], list[str]]:
    """Every plot the tables make, and notes on the plots they cannot make. `bases` maps views to
    their base views (shift plots), `part_columns` views to their per-part top-1 columns (heat maps)."""
    part_columns = part_columns or {}
    plots: list[Plot] = []
    notes: list[str] = []
    view = accuracy_view(tables, bases)
    benches = sorted(n for n in tables if n.startswith("benchmark-"))
    if view is None:
        notes.append("no throughput, GMACs or parameter plots: no results-<view>.csv of a base view (such as "
                     "results-imagenet.csv)")
    else:
        accuracy = tables[f"results-{view}.csv"]
        plots.extend(throughput_plot(accuracy, tables[name]) for name in benches)
        if not benches:
            notes.append("no throughput plots: no benchmark-*.csv (run --bench infer, or --import timm's)")
        plots.extend(size_plots(accuracy, tables))
    for name in sorted(tables):
        if not name.startswith("results-"):
            continue
        shifted = name[len("results-"):-len(".csv")]
        base = bases.get(shifted)
        if base and f"results-{base}.csv" in tables:
            plots.append(shift_plot(shifted, base, tables))
    for name in sorted(tables):
        view = name[len("results-"):-len(".csv")]
        if name.startswith("results-") and view in part_columns and (plot := heat_map(tables[name], part_columns[view])):
            plots.append(plot)
    return plots, notes


def draw_static(plot: Plot, folder: Path) -> list[Path]:
    """`plot` as `<id>.png` and `<id>.svg` in `folder`, drawn with matplotlib (Agg). Every label
    is plain text: a `$` in a model or file name is not mathtext (`x$\\frac{1}{$y` would not parse)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _draw_static(plt, plot, folder)


def _draw_static(plt, plot: Plot, folder: Path) -> list[Path]:
    if plot.kind == "heatmap":
        rows = plot.heat["rows"]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(plot.heat["columns"]) + 3), min(30.0, 2 + 0.18 * len(rows))))
        import numpy as np

        z = np.array([[np.nan if v is None else v for v in r] for r in plot.heat["z"]], dtype=float).reshape(
            len(rows), len(plot.heat["columns"]))
        image = ax.imshow(z, aspect="auto", cmap="viridis_r", interpolation="nearest")
        ax.set_xticks(range(len(plot.heat["columns"])), plot.heat["columns"], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=max(2, min(8, 600 // max(1, len(rows)))))
        fig.colorbar(image, ax=ax, label="top-1 error (%)")
    else:
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for imported, colour, label in ((True, "#9aa5b1", "imported"), (False, "#d62728", "this store")):
            mine = [p for p in plot.points if p.imported == imported]
            if mine:
                ax.scatter([p.x for p in mine], [p.y for p in mine], s=10 if imported else 24, c=colour,
                           label=f"{label} ({len(mine)})", zorder=3 if not imported else 2, linewidths=0)
        for line in plot.lines:
            front = line["name"] == "Pareto front"  # its points ringed, as on the page
            ax.plot(line["x"], line["y"], color="#1f77b4", linewidth=1.2, label=line["name"], zorder=4,
                    marker="o" if front else None, markersize=7, markerfacecolor="none")
        if plot.x_log:
            ax.set_xscale("log")
        if plot.logit:
            ticks = [logit_percent(t) for t in plot.ticks]
            ax.set_xticks(ticks, [f"{t:g}" for t in plot.ticks])
            ax.set_yticks(ticks, [f"{t:g}" for t in plot.ticks])
        if plot.points:  # the corner the points leave empty: speed falls as accuracy rises; the others rise together
            ax.legend(fontsize=8, loc="lower left" if plot.id.startswith("throughput-") else "upper left")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(plot.x_title)
        ax.set_ylabel(plot.y_title)
    ax.set_title(plot.title, fontsize=9)
    if not plot.points and not plot.heat:
        import textwrap

        # Wrapped here: matplotlib's own wrap= measures words as mathtext whatever parse_math says.
        text = "\n".join(textwrap.fill(note, 90) for note in plot.notes) or "no data"
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8)
    fig.tight_layout()
    from io import BytesIO

    from ..files import write_bytes

    written = []
    for ext in ("png", "svg"):
        image = BytesIO()  # then written atomically: a link in its place is replaced, never written through
        fig.savefig(image, format=ext, dpi=150)
        written.append(write_bytes(folder / f"{plot.id}.{ext}", image.getvalue()))
    plt.close(fig)
    return written
