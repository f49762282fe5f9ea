"""The offline HTML site of a report (`--html DIR`): one `index.html` and `plots/`.

The site is built from the CSV files that the report wrote in `--out` (so it shows exactly their
data) and the keys of their imported rows. Everything it needs is inside `index.html`: the data
as one JSON blob, plotly.js read from the installed `plotly` package, and `site.js` / `site.css`
beside this module; nothing is fetched when it opens. `plots/` holds each plot as PNG and SVG,
drawn with matplotlib from the same `plots.Plot` data.

The folder may be shared, or hold other things: the site writes there only into an empty folder
or one of its own earlier sites. `.rbench-site.json` lists the files it wrote with their SHA-256;
the next site replaces (or, when it has no such plot any more, removes) only those, and only
while they are as it wrote them. Any other file in the folder stops `--html` with one line.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .plots import Plot, Table

HTML_HINT = "pip install 'rbench[html]'"
# The files shown as tables, in this order (each pattern's files sorted by name).
TABLE_GLOBS = ("results-*.csv", "conformance-*.csv", "robustness-*.csv", "metrics-*.csv", "benchmark-*.csv", "model_metadata.csv",
               "model_metadata-in1k.csv")
METADATA_JOIN = ("pretrain", "pretrain_data", "finetune_chain", "technique", "param_count", "gmacs")
MANIFEST = ".rbench-site.json"  # the files the site wrote: {relative path: SHA-256}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def own_files(site: Path) -> dict[str, str]:
    """`{relative path: SHA-256}` of the files that an earlier site wrote in `site` (its
    manifest) and that are still regular files as it wrote them."""
    from ..made import is_real_file

    try:
        manifest = json.loads((site / MANIFEST).read_text()) if is_real_file(site / MANIFEST) else {}
    except (OSError, ValueError):
        return {}
    own = {}
    for relative, digest in (manifest.get("files", {}) if isinstance(manifest, dict) else {}).items():
        path = site / relative
        inside = not Path(relative).is_absolute() and path.resolve().is_relative_to(site.resolve())
        if inside and is_real_file(path) and _sha256(path) == digest:
            own[relative] = digest
    return own


def foreign_files(site: Path) -> list[Path]:
    """What `site` holds that the site did not write (see `own_files`): files and links; a
    folder counts by what is in it."""
    from ..made import is_real_file, walk

    if not site.is_dir():
        return []
    own = {site / relative for relative in own_files(site)}
    if is_real_file(site / MANIFEST):
        own.add(site / MANIFEST)
    return sorted(path for path in walk(site) if path not in own)


def _check_no_foreign(site: Path) -> None:
    from ..errors import RbenchError

    foreign = foreign_files(site)
    if foreign:
        more = f", and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise RbenchError(f"--html {site} holds files that rbench's site did not write ({foreign[0]}{more}); the "
                          "site goes only into an empty folder or one of its own earlier sites, and never replaces "
                          "other files: pass a new folder")


def check_site_dir(path: Path, out: Path | None = None) -> None:
    """`--html DIR` can be written: plotly and matplotlib are installed, DIR is a writable folder
    that holds nothing but an earlier site's files, and is neither the report's `out` folder nor
    above it; else a one-line `RbenchError`, before any work."""
    from ..errors import RbenchError
    from ..files import check_writable_folder

    for module in ("plotly", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            raise RbenchError(f"--html needs {module}, which is not installed: {HTML_HINT}") from None
    if out is not None and (Path(path).resolve() == Path(out).resolve() or Path(path).resolve() in Path(out).resolve().parents):
        raise RbenchError(f"--html {path} would hold the report's CSV files (--out {out}); pass a folder of its own "
                          f"for the site, such as {Path(out) / 'site'}")
    check_writable_folder(path, "--html")
    _check_no_foreign(Path(path))


def read_tables(out: Path, imported: Mapping[str, set[tuple[str, ...]]]) -> dict[str, Table]:
    """The CSV files of `out` that the site shows, read back as text, each row marked imported
    when its key (see `results.imported_rows`) is among `imported`'s for that file."""
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


def stack_speeds(out: Path) -> dict[tuple[str, str], float]:
    """`{(model, backend stack): infer samples/s}` of the own rows of `out`'s benchmark files:
    their detailed copies (`detailed/benchmark-infer-*.csv`) name each row's stack, which the
    conformance plots set against the reference stack's."""
    from .plots import parse_number

    speeds: dict[tuple[str, str], float] = {}
    for path in sorted((out / "detailed").glob("benchmark-infer-*.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rate = parse_number(row.get("infer_samples_per_sec"))
                if row.get("model") and row.get("backend") and row.get("status", "ok") == "ok" and rate:
                    speeds.setdefault((row["model"], row["backend"]), rate)
    return speeds


def _plot_json(plot: Plot, model_index: dict[str, int]) -> dict[str, Any]:
    """A plot for the page: points as columns, models as indices into the blob's `models` (the
    same names recur in every plot), logit coordinates rounded to what a screen shows."""
    from .plots import logit_percent

    data: dict[str, Any] = {"id": plot.id, "title": plot.title, "kind": plot.kind, "x_title": plot.x_title,
                            "y_title": plot.y_title, "x_log": plot.x_log, "y_log": plot.y_log, "y_range": plot.y_range,
                            "x_category": plot.x_category, "logit": plot.logit, "notes": plot.notes}
    if plot.kind == "heatmap":
        data["heat"] = plot.heat
        return data
    if plot.kind == "panels":
        data["categories"] = plot.categories
        data["panels"] = plot.panels
        return data
    digits = 5 if plot.logit else 10
    data["points"] = {"model": [model_index.setdefault(p.model, len(model_index)) for p in plot.points],
                      "x": [round(p.x, digits) for p in plot.points], "y": [round(p.y, digits) for p in plot.points],
                      "imported": [int(p.imported) for p in plot.points],
                      "front": [int(p.front) for p in plot.points],
                      "gain": [None if p.gain is None else round(p.gain, 3) for p in plot.points]}
    if plot.whisker_names:
        data["whisker_names"] = plot.whisker_names
        data["points"]["whiskers"] = [[round(w, digits) for w in p.whiskers] for p in plot.points]
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
    """Write `site/index.html` and `site/plots/` from the CSV files in `out`, and the manifest of
    what it wrote; returns the page's path and notes on what could not be shown. `bases` and
    `part_columns` are the data set plugins' declarations (`run.view_bases`,
    `run.view_part_columns`). A file in `site` that an earlier site did not write is a one-line
    `RbenchError`, and nothing is written."""
    from plotly.offline import get_plotlyjs

    from ..files import write_bytes, write_json
    from .plots import draw_static, plot_data

    _check_no_foreign(site)
    before = own_files(site)
    tables = read_tables(out, imported)
    plots, notes = plot_data(tables, bases, part_columns, stack_speeds(out))
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
    written = [index, *(path for plot in plots for path in draw_static(plot, folder))]
    files = {os.path.relpath(path, site): _sha256(path) for path in written}
    for stale in set(before) - set(files):  # an earlier report's plots, as that site wrote them
        (site / stale).unlink(missing_ok=True)
    write_json(site / MANIFEST, {"made_by": "rbench", "files": files})
    return index, notes
