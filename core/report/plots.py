"""The plots of a report, as data: computed once from the CSV files' tables, drawn twice.

`plot_data` turns the tables that `rbench report` wrote into `Plot`s (points with their model
and origin, the Pareto front, fitted lines, heat-map cells, and notes on what is missing); the
HTML site draws them with plotly.js and `draw_static` with matplotlib, from the same numbers.

The plots are those the field reads: top-1 against samples/s per benchmark file with the Pareto
front, top-1 against GMACs and parameters, each shifted view against its base on logit axes
with the effective-robustness line (Taori et al. 2020), a view's own columns (ImageNet-C's
per-corruption top-1) as a heat map of errors, batch-1 latency in milliseconds per model (p50,
with p90 and p99 whiskers), and each backend stack against the reference stack per model (top-1
delta, top-1 agreement, speed).

The user's own rows (those not imported) are on every plot where they have data: a view that
only the user has (a folder of their own images) gets its throughput and size plots too, and
the plots with own points come first. Accuracy axes stay within 0-100 %.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


NAMES_IN_A_NOTE = 5  # models named in a note before "and N more"
MIN_ACCURACY_SPAN = 5.0  # percent: the least span of an accuracy axis (all points at 0 % still read as 0-5 %)


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
    whiskers: tuple[float, ...] = ()  # values above y, one per `Plot.whisker_names` (latency's p90, p99)


@dataclass
class Plot:
    """One plot: points (or heat-map cells), lines, axis titles and notes on what is missing.

    On `logit` plots x and y are logit(accuracy) and `ticks` are the accuracies (percent) to
    label; `x_log` and `y_log` are logarithmic axes; `y_range` fixes the y axis (accuracy axes,
    see `accuracy_range`). On `x_category` plots each point's x is its model's name (the points
    in order). A "panels" plot is one row of panels per `panels` entry over the models of
    `categories`: `{"y_title", "y_log", "y_range", "reference" (a horizontal line's y, or None),
    "series": [{"name", "y": [one value or None per category]}]}`.
    """

    id: str
    title: str
    x_title: str
    y_title: str
    kind: str = "scatter"  # or "heatmap", "panels"
    points: list[Point] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)  # {"name", "x", "y"}
    x_log: bool = False
    y_log: bool = False
    y_range: list[float] | None = None
    x_category: bool = False
    whisker_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    panels: list[dict[str, Any]] = field(default_factory=list)
    logit: bool = False
    ticks: list[float] = field(default_factory=list)
    heat: dict[str, Any] = field(default_factory=dict)  # {"rows", "columns", "z"}
    notes: list[str] = field(default_factory=list)


def has_own(plot: Plot) -> bool:
    """Whether the plot shows one of the user's own rows (all of a panels plot's are)."""
    return plot.kind == "panels" and bool(plot.categories) or any(not p.imported for p in plot.points)


def accuracy_range(values: Sequence[float]) -> list[float]:
    """The y range of an accuracy axis (percent) holding `values`: within [0, 100], at least
    `MIN_ACCURACY_SPAN` wide, with a small margin; [0, 5] and a bit for points that are all at 0."""
    low, high = (min(values), max(values)) if values else (0.0, 100.0)
    low, high = max(0.0, low), min(100.0, high)
    if high - low < MIN_ACCURACY_SPAN:
        high = min(100.0, low + MIN_ACCURACY_SPAN)
        low = max(0.0, high - MIN_ACCURACY_SPAN)
    margin = 0.04 * (high - low)
    return [max(0.0, low - margin), min(100.0, high + margin)]


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


def parse_number(text: str | None) -> float | None:
    """A CSV cell as a number: None when empty, not a number, or NaN (thousands separators allowed)."""
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


def _against_accuracy(plot: Plot, accuracy: Table, sources: Sequence[tuple[Table, str, str | None]] | None,
                      value_column: str | None, missing_what: str) -> list[Point]:
    """Points (value, top-1) of the accuracy table's rows, the value read from the first of
    `sources` (`(table, column, image-size column)`) with a row of the model (see `_ByModel`) and a
    value, or from the accuracy table's own `value_column` when `sources` is None."""
    lacking = _lacks(accuracy, ("model", "top1")) or next(
        (why for table, column, _ in sources or () if (why := _lacks(table, ("model", column)))), None)
    if lacking:
        plot.notes.append(f"nothing to plot: {lacking}")
        return []
    indices = [(_ByModel(table, size), table, column) for table, column, size in sources] if sources is not None else None
    points, missing = [], []
    for row, imported in zip(accuracy.rows, accuracy.imported):
        top1 = parse_number(row.get("top1"))
        value, also_imported = None, True
        if indices is None:
            value = parse_number(row.get(value_column))
        else:
            for index, table, column in indices:
                found = index.find(row["model"], row.get("img_size"))
                value = None if found is None else parse_number(table.rows[found].get(column))
                if value is not None and value > 0:
                    also_imported = table.imported[found]
                    break
        if value is None or value <= 0 or top1 is None:
            missing.append(row["model"])
            continue
        points.append(Point(model=row["model"], x=value, y=top1, imported=imported and also_imported))
    if missing:
        plot.notes.append(_missing_note(missing_what, missing))
    return points


def _set_accuracy_range(plot: Plot) -> Plot:
    plot.y_range = accuracy_range([p.y for p in plot.points])
    return plot


def throughput_plot(accuracy: Table, bench: Table, id_prefix: str = "") -> Plot:
    """Top-1 against samples/s of one benchmark file, with the Pareto front marked."""
    kind = bench.name[len("benchmark-"):].split("-")[0]
    rate = f"{kind}_samples_per_sec"
    stem = bench.name[:-len(".csv")]
    plot = Plot(id=f"throughput-{id_prefix}{stem}", title=f"top-1 ({accuracy.name}) against {kind} samples/s: {bench.name}",
                x_title=f"{kind} samples/s (log)", y_title="top-1 (%)", x_log=True)
    plot.points = _against_accuracy(plot, accuracy, [(bench, rate, f"{kind}_img_size")], None,
                                    f"of {accuracy.name} have no row in {bench.name}")
    for point, on_front in zip(plot.points, pareto_front([p.x for p in plot.points], [p.y for p in plot.points])):
        point.front = on_front
    front = sorted((p for p in plot.points if p.front), key=lambda p: p.x)
    if front:
        plot.lines.append({"name": "Pareto front", "x": [p.x for p in front], "y": [p.y for p in front]})
    return _set_accuracy_range(plot)


def size_plots(accuracy: Table, tables: Mapping[str, Table], id_prefix: str = "") -> list[Plot]:
    """Top-1 against GMACs (from model_metadata.csv, else the first infer benchmark file with
    counts for these rows) and against parameters (the results file's own)."""
    macs = Plot(id=f"{id_prefix}gmacs", title=f"top-1 ({accuracy.name}) against GMACs", x_title="GMACs per image (log)",
                y_title="top-1 (%)", x_log=True)
    sources = [(tables["model_metadata.csv"], "gmacs", "test_img_size")] if "model_metadata.csv" in tables else []
    sources += [(t, "infer_gmacs", "infer_img_size") for name, t in sorted(tables.items())
                if name.startswith("benchmark-infer-") and "infer_gmacs" in t.columns]
    sources = [(t, c, s) for t, c, s in sources if any(parse_number(r.get(c)) for r in t.rows)]
    if not sources:
        macs.notes.append("nothing to plot: no model_metadata.csv with gmacs and no benchmark-infer-*.csv with "
                          "infer_gmacs (run --bench metadata or infer, or --import them)")
    else:
        # Each row's count from the first source that has it: the zoo's metadata names none of
        # the user's own models, whose counts are in their benchmark files.
        files = sources[0][0].name + (f" and {len(sources) - 1} more file(s)" if len(sources) > 1 else "")
        macs.title += f" ({files})"
        macs.points = _against_accuracy(macs, accuracy, sources, None, f"of {accuracy.name} have no GMACs in {files}")
    params = Plot(id=f"{id_prefix}params", title=f"top-1 ({accuracy.name}) against parameters",
                  x_title="parameters, millions (log)", y_title="top-1 (%)", x_log=True)
    params.points = _against_accuracy(params, accuracy, None, "param_count",
                                      f"of {accuracy.name} have no param_count")
    return [_set_accuracy_range(macs), _set_accuracy_range(params)]


LATENCY_WHISKERS = ("p90", "p99")


def latency_plot(bench: Table) -> Plot:
    """Each model's latency per query of a `benchmark-latency-*.csv` in milliseconds: the p50,
    with whiskers up to the p90 and p99, models ordered by p50."""
    sizes = sorted({r.get("latency_batch_size") or "?" for r in bench.rows})
    per = f"batch-{sizes[0]}" if len(sizes) == 1 else "per-query"
    stem = bench.name[:-len(".csv")]
    plot = Plot(id=f"latency-{stem}", title=f"{per} latency (ms, p50 with p90 and p99 whiskers): {bench.name}",
                x_title="model", y_title=f"{per} latency (ms)", x_category=True,
                whisker_names=list(LATENCY_WHISKERS))
    columns = ["latency_p50_ms", *(f"latency_{w}_ms" for w in LATENCY_WHISKERS)]
    lacking = _lacks(bench, ("model", columns[0]))
    if lacking:
        plot.notes.append(f"nothing to plot: {lacking}")
        return plot
    points, missing = [], []
    for row, imported in zip(bench.rows, bench.imported):
        values = [parse_number(row.get(c)) for c in columns]
        if values[0] is None or values[0] <= 0:
            missing.append(row["model"])
            continue
        # A percentile the file lacks draws no whisker: it sits at the p50.
        whiskers = tuple(max(values[0], v) if v is not None else values[0] for v in values[1:])
        points.append(Point(model=row["model"], x=0.0, y=values[0], imported=imported, whiskers=whiskers))
    points.sort(key=lambda p: p.y)
    for i, point in enumerate(points):
        point.x = float(i)
    plot.points = points
    if missing:
        plot.notes.append(_missing_note(f"of {bench.name} have no latency_p50_ms", missing))
    absent = [c for c in columns[1:] if c not in bench.columns]
    if absent:
        plot.notes.append(f"{bench.name} has no {', '.join(absent)} column: no whisker for it")
    if points and max(max(p.whiskers, default=p.y) for p in points) > 10 * min(p.y for p in points):
        plot.y_log = True  # a tenfold spread: a linear axis would flatten the fast models
    return plot


def conformance_plot(table: Table, speeds: Mapping[tuple[str, str], float] | None = None) -> Plot:
    """Each backend stack against the reference stack, per model, from `conformance-<view>.csv`:
    the top-1 delta (percentage points), the top-1 agreement (%), and the speed (the stack's infer
    samples/s over the reference's, from `speeds`: `{(model, stack): samples/s}`, as the
    benchmark files' detailed rows give them)."""
    speeds = speeds or {}
    view = table.name[len("conformance-"):-len(".csv")]
    plot = Plot(id=f"conformance-{view}", title=f"each backend stack against the reference stack per model: {table.name}",
                x_title="model", y_title="", kind="panels")
    lacking = _lacks(table, ("model", "stack", "reference", "top1_delta", "top1_agreement"))
    if lacking:
        plot.notes.append(f"nothing to plot: {lacking}")
        return plot
    models = list(dict.fromkeys(r["model"] for r in table.rows))
    stacks = list(dict.fromkeys(r["stack"] for r in table.rows))
    references = list(dict.fromkeys(r["reference"] for r in table.rows))
    plot.title = f"each backend stack against the reference stack ({', '.join(references)}) per model: {table.name}"
    at = {m: i for i, m in enumerate(models)}
    panels = {"top1_delta": {"y_title": "top-1 delta (points)", "y_log": False, "y_range": None, "reference": 0.0},
              "top1_agreement": {"y_title": "top-1 agreement (%)", "y_log": False, "y_range": None, "reference": 100.0},
              "speed": {"y_title": "infer speed (x reference)", "y_log": True, "y_range": None,
                        "reference": 1.0}}
    series = {key: {s: [None] * len(models) for s in stacks} for key in panels}
    no_speed = []
    for row in table.rows:
        i = at[row["model"]]
        for key in ("top1_delta", "top1_agreement"):
            series[key][row["stack"]][i] = parse_number(row.get(key))
        mine, theirs = speeds.get((row["model"], row["stack"])), speeds.get((row["model"], row["reference"]))
        if mine and theirs and mine > 0 and theirs > 0:
            series["speed"][row["stack"]][i] = round(mine / theirs, 4)
        else:
            no_speed.append(f"{row['model']} on {row['stack']}")
    agreement = [v for values in series["top1_agreement"].values() for v in values if v is not None]
    panels["top1_agreement"]["y_range"] = accuracy_range(agreement)
    plot.categories = models
    for key, panel in panels.items():
        if key == "speed" and len(no_speed) == len(table.rows):
            plot.notes.append("no speed panel: no benchmark-infer-*.csv rows of these stacks (run --bench infer)")
            continue
        panel["series"] = [{"name": s, "y": series[key][s]} for s in stacks]
        plot.panels.append(panel)
    if no_speed and len(no_speed) < len(table.rows):
        plot.notes.append(_missing_note("have no infer samples/s of both stacks", no_speed).replace("model(s)", "row(s)"))
    return plot


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
        x, y = (parse_number(found[0].get("top1")) if found else None), parse_number(row.get("top1"))
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
    filled = [any(parse_number(r.get(c)) is not None for c in parts) for r in table.rows]
    rows = [r for r, f in zip(table.rows, filled) if f]
    z = [[None if (v := parse_number(r.get(c))) is None else round(100.0 - v, 3) for c in parts] for r in rows]
    plot.heat = {"rows": [r["model"] for r in rows], "columns": parts, "z": z}
    empty = [r["model"] for r, f in zip(table.rows, filled) if not f]
    if empty:
        plot.notes.append(_missing_note(f"of {table.name} have none of its own columns", empty))
    return plot


def _own_views(tables: Mapping[str, Table], bases: Mapping[str, str | None], main: str | None) -> list[str]:
    """Views without a base, other than `main`, that hold the user's own rows (a folder of their
    own images beside the imported ImageNet zoo)."""
    views = []
    for name, table in sorted(tables.items()):
        view = name[len("results-"):-len(".csv")]
        if name.startswith("results-") and view != main and not bases.get(view) and not all(table.imported):
            views.append(view)
    return views


def plot_data(tables: Mapping[str, Table], bases: Mapping[str, str | None],
              part_columns: Mapping[str, Sequence[str]] | None = None,
              stack_speeds: Mapping[tuple[str, str], float] | None = None) -> tuple[list[Plot], list[str]]:
    """Every plot the tables make, and notes on the plots they cannot make. `bases` maps views to
    their base views (shift plots), `part_columns` views to their per-part top-1 columns (heat
    maps), `stack_speeds` `(model, stack)` to infer samples/s (conformance plots). The plots
    that show the user's own rows come first."""
    part_columns = part_columns or {}
    plots: list[Plot] = []
    notes: list[str] = []
    view = accuracy_view(tables, bases)
    benches = sorted(n for n in tables if n.startswith("benchmark-") and not n.startswith("benchmark-latency-"))
    for name in sorted(tables):
        if name.startswith("conformance-"):
            plots.append(conformance_plot(tables[name], stack_speeds))
    if view is None:
        notes.append("no throughput, GMACs or parameter plots: no results-<view>.csv of a base view (such as "
                     "results-imagenet.csv)")
    else:
        accuracy = tables[f"results-{view}.csv"]
        own_views = _own_views(tables, bases, view)
        for name in benches:
            plot = throughput_plot(accuracy, tables[name])
            if not plot.points and own_views and not all(tables[name].imported):
                # The user's own benchmark beside an imported zoo that it shares no model with: an
                # empty plot; its models are plotted on their own views' plots.
                notes.append(f"no plot of top-1 ({accuracy.name}) against {name}: no model has a row in both "
                             f"(its models are plotted against {', '.join(f'results-{v}.csv' for v in own_views)})")
                continue
            plots.append(plot)
        if not benches:
            notes.append("no throughput plots: no benchmark-infer-*.csv (run --bench infer, or --import timm's)")
        plots.extend(size_plots(accuracy, tables))
        for own in own_views:
            # Against the user's own benchmark files (the zoo's, on other machines, would add a plot
            # of a few of the user's models each), and only the plots where the view's rows have data.
            accuracy = tables[f"results-{own}.csv"]
            candidates = [throughput_plot(accuracy, tables[name], f"{own}-") for name in benches
                          if not all(tables[name].imported)]
            plots.extend(p for p in [*candidates, *size_plots(accuracy, tables, f"{own}-")] if p.points)
    plots.extend(latency_plot(tables[name]) for name in sorted(tables) if name.startswith("benchmark-latency-"))
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
    plots.sort(key=lambda plot: not has_own(plot))  # stable: the user's own first, each group in its order
    return plots, notes


OWN_COLOUR, IMPORTED_COLOUR, LINE_COLOUR = "#d62728", "#9aa5b1", "#1f77b4"
STACK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
ZOO_LABELS = 4  # imported points labelled in a static plot: spread along the Pareto front, else the best
LABEL_WIDTH = 24  # characters a static label's line holds before it wraps


def labelled(plot: Plot) -> list[Point]:
    """The points a static plot names: every own point, and a few of the imported ones (spread
    along the Pareto front when the plot has one, else the highest)."""
    own = [p for p in plot.points if not p.imported]
    zoo = [p for p in plot.points if p.imported]
    front = sorted((p for p in zoo if p.front), key=lambda p: p.x)
    if front:
        step = max(1, len(front) / ZOO_LABELS)
        chosen = [front[int(i * step)] for i in range(min(ZOO_LABELS, len(front)))]
    else:
        chosen = sorted(zoo, key=lambda p: -p.y)[:ZOO_LABELS]
    return own + chosen


def wrap_label(name: str, width: int = LABEL_WIDTH) -> str:
    """A model name in lines of at most `width` characters, broken after `.`, `_`, `-` or `@`
    where it can be."""
    import re

    lines, line = [], ""
    for part in re.split(r"(?<=[._@-])", name):
        while len(part) > width:  # a part longer than a line is cut
            if line:
                lines.append(line)
                line = ""
            lines.append(part[:width])
            part = part[width:]
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line] if line else lines)


def _label_points(fig, ax, points: Sequence[Point]) -> None:
    """Name each point beside it, at the first of a few short offsets whose box stays inside the
    axes and overlaps no label placed before (own points first). An own point is always named
    (outside the axes, or overlapping, where nothing else fits); an imported one is then left out."""
    fig.canvas.draw()  # the axes' final transform
    frame = ax.bbox  # labels inside the axes, clear of the ticks and the title
    placed: list[tuple[float, float, float, float]] = []
    size = 6.5
    char_w, line_h = 0.6 * size * fig.dpi / 72, 1.25 * size * fig.dpi / 72  # display pixels
    for point in sorted(points, key=lambda p: p.imported):
        text = wrap_label(point.model)
        lines = text.split("\n")
        w, h = char_w * max(len(l) for l in lines), line_h * len(lines)
        px, py = ax.transData.transform((point.x, point.y))
        gap = 5 * fig.dpi / 72
        # Beside the point, then further up or down in steps of the label's height, right before left.
        rows = [gap, -gap - h, gap + h + gap, -2 * (gap + h), -h / 2]
        candidates = [(dx, dy) for dy in rows for dx in (gap, -gap - w)]

        def fits(box, within):
            clear = not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)
            return clear and (not within or (frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1]
                                              and box[3] <= frame.y1))

        boxes = [(dx, dy, (px + dx, py + dy, px + dx + w, py + dy + h)) for dx, dy in candidates]
        chosen = next((c for c in boxes if fits(c[2], True)), None)
        if chosen is None and point.imported:
            continue
        chosen = chosen or next((c for c in boxes if fits(c[2], False)), boxes[0])
        dx, dy, box = chosen
        placed.append(box)
        far = dy > 2 * gap or dy < -gap - h  # a label a row away is tied to its point by a thin line
        ax.annotate(text, (point.x, point.y), xytext=(dx * 72 / fig.dpi, dy * 72 / fig.dpi),
                    textcoords="offset points", fontsize=size, ha="left", va="bottom", zorder=6,
                    arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "#8c959f"} if far else None,
                    color="#57606a" if point.imported else "#7a1414", annotation_clip=False,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})


def plain_number(value: float) -> str:
    """A tick's value as plain text (`0.5`, `20`, `1k`, `2.5M`): matplotlib's own log labels are
    mathtext, which the static plots do not parse."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _plain_log_axis(axis) -> None:
    """Label a log axis in plain text: every power of ten, and 2 and 5 times them where the axis
    spans under three decades (so a narrow axis still has labels)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    low, high = sorted(axis.get_view_interval())
    wide = low > 0 and math.log10(high / low) >= 3
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def static_figure(plot: Plot):
    """`plot` as a matplotlib figure (Agg). Every label is plain text: a `$` in a model or file
    name is not mathtext (`x$\\frac{1}{$y` would not parse)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _static_figure(plt, plot)


def draw_static(plot: Plot, folder: Path) -> list[Path]:
    """`plot` as `<id>.png` and `<id>.svg` in `folder` (see `static_figure`)."""
    from io import BytesIO

    import matplotlib.pyplot as plt

    from ..files import write_bytes

    fig = static_figure(plot)
    written = []
    with plt.rc_context({"text.parse_math": False, "text.usetex": False}):
        for ext in ("png", "svg"):
            image = BytesIO()  # then written atomically: a link in its place is replaced, never written through
            fig.savefig(image, format=ext, dpi=150)
            written.append(write_bytes(folder / f"{plot.id}.{ext}", image.getvalue()))
    plt.close(fig)
    return written


def _static_panels(plt, plot: Plot):
    count = max(1, len(plot.panels))
    fig, axes = plt.subplots(count, 1, sharex=True, squeeze=False,
                             figsize=(max(8.0, 0.5 * len(plot.categories) + 3), 1.2 + 2.2 * count))
    axes = [a[0] for a in axes]
    stacks = len(plot.panels[0]["series"]) if plot.panels else 0
    for ax, panel in zip(axes, plot.panels):
        for j, series in enumerate(panel["series"]):
            shift = (j - (stacks - 1) / 2) * 0.12  # the stacks side by side at each model
            xs = [i + shift for i, v in enumerate(series["y"]) if v is not None]
            ys = [v for v in series["y"] if v is not None]
            ax.scatter(xs, ys, s=30, marker="D", color=STACK_COLOURS[j % len(STACK_COLOURS)], label=series["name"],
                       zorder=3, clip_on=False)
        if panel["reference"] is not None:
            ax.axhline(panel["reference"], color="#57606a", linewidth=0.8, linestyle="--", zorder=1)
        if panel["y_log"]:
            ax.set_yscale("log")
        if panel["y_range"]:
            ax.set_ylim(*panel["y_range"])
        if panel["y_log"]:
            _plain_log_axis(ax.yaxis)
        ax.set_ylabel(panel["y_title"], fontsize=8)
        ax.grid(True, alpha=0.3)
    if plot.panels:
        axes[0].legend(fontsize=8, title="stack (the dashed line: the reference)", title_fontsize=7, loc="best")
    axes[-1].set_xticks(range(len(plot.categories)), [wrap_label(c) for c in plot.categories], rotation=30, ha="right",
                        fontsize=7)
    return fig, axes[0]


def _static_figure(plt, plot: Plot):
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
    elif plot.kind == "panels":
        fig, ax = _static_panels(plt, plot)
    else:
        wide = plot.x_category and len(plot.points) > 12
        fig, ax = plt.subplots(figsize=(max(8.0, 0.35 * len(plot.points) + 2) if wide else 8, 5.5))
        for imported, colour, label in ((True, IMPORTED_COLOUR, "imported"), (False, OWN_COLOUR, "yours")):
            mine = [p for p in plot.points if p.imported == imported]
            if not mine:
                continue
            if plot.whisker_names:  # each whisker from the point up to its value, the outer one lighter
                for k, name in reversed(list(enumerate(plot.whisker_names))):
                    ax.errorbar([p.x for p in mine], [p.y for p in mine],
                                yerr=[[0.0] * len(mine), [p.whiskers[k] - p.y for p in mine]], fmt="none",
                                ecolor=colour, alpha=0.45 if k else 0.9, elinewidth=1.0 if k else 2.0, capsize=3,
                                zorder=4 if imported else 5)
            ax.scatter([p.x for p in mine], [p.y for p in mine], s=12 if imported else 42, c=colour,
                       marker="o" if imported else "D", edgecolors="none" if imported else "black",
                       linewidths=0 if imported else 0.6, label=f"{label} ({len(mine)})",
                       zorder=2 if imported else 7, clip_on=False)
        for line in plot.lines:
            front = line["name"] == "Pareto front"  # its points ringed, as on the page
            ax.plot(line["x"], line["y"], color=LINE_COLOUR, linewidth=1.2, label=line["name"], zorder=4,
                    marker="o" if front else None, markersize=10, markerfacecolor="none")
        if plot.x_log:
            ax.set_xscale("log")
        if plot.y_log:
            ax.set_yscale("log")
        if plot.y_range:
            ax.set_ylim(*plot.y_range)
        for log, axis in ((plot.x_log, ax.xaxis), (plot.y_log, ax.yaxis)):
            if log:
                _plain_log_axis(axis)
        if plot.x_category:
            ax.set_xticks([p.x for p in plot.points], [wrap_label(p.model) for p in plot.points], rotation=30,
                          ha="right", fontsize=7)
            ax.set_xlim(-0.6, len(plot.points) - 0.4)
        if plot.logit:
            ticks = [logit_percent(t) for t in plot.ticks]
            ax.set_xticks(ticks, [f"{t:g}" for t in plot.ticks])
            ax.set_yticks(ticks, [f"{t:g}" for t in plot.ticks])
        if plot.points:  # the corner the points leave empty: speed falls as accuracy rises; the others rise together
            title = ", ".join(["p50 (point)", *(f"{w} ({'thick' if k == 0 else 'thin'})"
                                                 for k, w in enumerate(plot.whisker_names))]) if plot.whisker_names else None
            ax.legend(fontsize=8, title=title, title_fontsize=7, loc="best")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("" if plot.x_category else plot.x_title)
        ax.set_ylabel(plot.y_title)
    import textwrap

    title = textwrap.fill(plot.title, 100)  # a long file name on a second line, not off the figure
    if plot.kind == "panels":
        fig.suptitle(title, fontsize=9)
    else:
        ax.set_title(title, fontsize=9)
    if plot.kind == "scatter" and plot.points and not plot.x_category:  # a category axis names its points already
        fig.tight_layout()
        _label_points(fig, ax, labelled(plot))
    if not plot.points and not plot.heat and not plot.panels:
        # Wrapped here: matplotlib's own wrap= measures words as mathtext whatever parse_math says.
        text = "\n".join(textwrap.fill(note, 90) for note in plot.notes) or "no data"
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return fig
