"""The offline HTML site of a report (`--html DIR`): one `index.html` and `plots/`.

The site is built from the CSV files that the report wrote in `--out` (so it shows exactly their
data) and the keys of their imported rows. Everything it needs is inside `index.html`: the data
as one JSON blob, plotly.js read from the installed `plotly` package, and `site.js` / `site.css`
beside this module; nothing is fetched when it opens. `plots/` holds each plot as PNG and SVG,
drawn with matplotlib from the same `plots.Plot` data.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .plots import Plot, Table

HTML_HINT = "pip install 'rbench[html]'"
# The files shown as tables, in this order (each pattern's files sorted by name).
TABLE_GLOBS = ("results-*.csv", "robustness-*.csv", "metrics-*.csv", "benchmark-*.csv", "model_metadata.csv",
               "model_metadata-in1k.csv")
METADATA_JOIN = ("pretrain", "pretrain_data", "finetune_chain", "technique", "param_count", "gmacs")


def check_site_dir(path: Path) -> None:
    """`--html DIR` can be written: plotly and matplotlib are installed and DIR is a writable
    folder; else a one-line `RbenchError`, before any work."""
    from .errors import RbenchError
    from .files import check_writable_folder

    for module in ("plotly", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            raise RbenchError(f"--html needs {module}, which is not installed: {HTML_HINT}") from None
    check_writable_folder(path, "--html")


def read_tables(out: Path, imported: Mapping[str, set[tuple[str, ...]]]) -> dict[str, Table]:
    """The CSV files of `out` that the site shows, read back as text, each row marked imported
    when its key (see `report.imported_rows`) is among `imported`'s for that file."""
    tables: dict[str, Table] = {}
    for pattern in TABLE_GLOBS:
        # ImageNet's results first: the table people look at first.
        for path in sorted(out.glob(pattern), key=lambda f: (f.name != "results-imagenet.csv", f.name)):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                columns = list(reader.fieldnames or [])
                rows = list(reader)
            keys = imported.get(path.name, set())
            sized = "img_size" in columns and path.name.startswith(("results-", "robustness-"))
            if path.name.startswith("robustness-") and "origin" in columns:
                marks = [r["origin"] == "import" for r in rows]
            else:
                marks = [((r.get("model"), r.get("img_size")) if sized else (r.get("model"),)) in keys for r in rows]
            tables[path.name] = Table(name=path.name, columns=columns, rows=rows, imported=marks)
    return tables


def _plot_json(plot: Plot, model_index: dict[str, int]) -> dict[str, Any]:
    """A plot for the page: points as columns, models as indices into the blob's `models` (the
    same names recur in every plot), logit coordinates rounded to what a screen shows."""
    from .plots import logit_percent

    data: dict[str, Any] = {"id": plot.id, "title": plot.title, "kind": plot.kind, "x_title": plot.x_title,
                            "y_title": plot.y_title, "x_log": plot.x_log, "logit": plot.logit, "notes": plot.notes}
    if plot.kind == "heatmap":
        data["heat"] = plot.heat
        return data
    digits = 5 if plot.logit else 10
    data["points"] = {"model": [model_index.setdefault(p.model, len(model_index)) for p in plot.points],
                      "x": [round(p.x, digits) for p in plot.points], "y": [round(p.y, digits) for p in plot.points],
                      "imported": [int(p.imported) for p in plot.points],
                      "front": [int(p.front) for p in plot.points],
                      "gain": [None if p.gain is None else round(p.gain, 3) for p in plot.points]}
    data["lines"] = plot.lines
    if plot.logit:
        data["ticks"] = {"vals": [logit_percent(t) for t in plot.ticks], "text": [f"{t:g}" for t in plot.ticks]}
    return data


def site_data(tables: Mapping[str, Table], plots: list[Plot], notes: list[str]) -> dict[str, Any]:
    """The one JSON blob the page reads: tables (columns, rows as lists, imported marks), plots,
    the model names the plots index, and notes."""
    model_index: dict[str, int] = {}
    plot_json = [_plot_json(p, model_index) for p in plots]
    return {
        "tables": [{"name": t.name, "columns": t.columns, "rows": [[r.get(c) or "" for c in t.columns] for r in t.rows],
                    "imported": [int(i) for i in t.imported]} for t in tables.values()],
        "metadata_join": list(METADATA_JOIN),
        "models": list(model_index),
        "plots": plot_json,
        "notes": notes,
    }


def _asset(name: str) -> str:
    return (Path(__file__).with_name(name)).read_text()


def _inline_script(text: str) -> str:
    return text.replace("</script", "<\\/script")


def _json_script(data: Any) -> str:
    """`data` as JSON that no string in it can end or alter the script element it is inlined in:
    `<`, `>` and `&` are written as `\\u003c`, `\\u003e`, `\\u0026` (JSON.parse reads them
    back), so neither `</script>` nor `<!--` (which would make the parser swallow the scripts
    that follow) appears in the page. They can only stand inside JSON strings."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_site(out: Path, site: Path, imported: Mapping[str, set[tuple[str, ...]]],
               bases: Mapping[str, str | None],
               part_columns: Mapping[str, Sequence[str]] | None = None) -> tuple[Path, list[str]]:
    """Write `site/index.html` and `site/plots/` from the CSV files in `out`; returns the page's
    path and notes on what could not be shown. `bases` and `part_columns` are the data set
    plugins' declarations (`run.view_bases`, `run.view_part_columns`)."""
    from plotly.offline import get_plotlyjs

    from .files import write_bytes
    from .plots import draw_static, plot_data

    tables = read_tables(out, imported)
    plots, notes = plot_data(tables, bases, part_columns)
    if not tables:
        notes.insert(0, f"no result files in {out}: nothing to show")
    blob = _json_script(site_data(tables, plots, notes))
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>rbench results: {html.escape(out.name)}</title><style>{_asset('site.css')}</style></head>\n<body>\n"
        f"<script id=\"rbench-data\" type=\"application/json\">{blob}</script>\n"
        f"<script>{_inline_script(_asset('site.js'))}</script>\n"
        f"<script>{_inline_script(get_plotlyjs())}</script>\n"
        "<script>rbenchPlots()</script>\n</body></html>\n"
    )
    index = write_bytes(site / "index.html", page.encode())
    folder = site / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = {path for plot in plots for path in draw_static(plot, folder)}
    for stale in [*folder.glob("*.png"), *folder.glob("*.svg")]:  # an earlier report's plots
        if stale not in written:
            stale.unlink()
    return index, notes
