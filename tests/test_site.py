"""`--html`: the plots' data against the CSV files, the page in a real browser, broken inputs,
and `--import` of published benchmark and metadata files."""

from __future__ import annotations

import json
import math
import random
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from .conftest import csv_rows, invoke_apart

pytest.importorskip("plotly", reason="--html needs plotly (pip install 'rbench[html]')")
pytest.importorskip("matplotlib", reason="--html needs matplotlib (pip install 'rbench[html]')")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RESULT_COLUMNS = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"
BENCH = "benchmark-infer-amp-nhwc-pt240-cu124-rtx4090.csv"


def brute_force_front(points):
    """On the front iff no other point has >= in both coordinates and > in one."""
    return [not any(ox >= x and oy >= y and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
            for i, (x, y) in enumerate(points)]


def test_pareto_front_equals_brute_force_with_ties():
    from rbench.report.plots import pareto_front

    generator = random.Random(16)
    for _ in range(200):
        points = [(generator.randint(0, 6), generator.randint(0, 6)) for _ in range(generator.randint(1, 25))]
        assert pareto_front(*zip(*points)) == brute_force_front(points), points


def write_zoo(folder: Path) -> dict:
    """A small published results folder: ImageNet and V2 results for 14 tags of 12 architectures,
    one infer benchmark file of architectures (timm's own column order, without infer_macts), and
    timm's two-column metadata file. What each file leaves out is returned."""
    folder.mkdir(parents=True)
    generator = random.Random(3)
    models = [(f"net{i}.tag{i % 3}", 224) for i in range(12)] + [("net3.big_384", 384), ("net5.ft_288", 288)]
    top1 = {m: round(generator.uniform(55, 88), 3) for m, _ in models}
    lines = [RESULT_COLUMNS]
    for model, size in sorted(models, key=lambda m: -top1[m[0]]):
        t1 = top1[model]
        lines.append(f"{model},{size},{t1:.3f},{100 - t1:.3f},{min(99.9, t1 + 10):.3f},{100 - min(99.9, t1 + 10):.3f},"
                     f"{generator.uniform(3, 90):.2f},0.875,bicubic")
    (folder / "results-imagenet.csv").write_text("\n".join(lines) + "\n")
    lines = [RESULT_COLUMNS]
    for model, size in sorted(models, key=lambda m: -top1[m[0]]):
        t1 = round(top1[model] - 12 + generator.uniform(-2, 2), 3)
        lines.append(f"{model},{size},{t1:.3f},{100 - t1:.3f},80.000,20.000,10.00,0.875,bicubic")
    (folder / "results-imagenetv2-matched-frequency.csv").write_text("\n".join(lines) + "\n")
    # net11 has no benchmark row; net3.big_384 and net5.ft_288 ran at another size than the file's.
    lines = ["model,infer_img_size,infer_batch_size,infer_samples_per_sec,infer_step_time,infer_gmacs,param_count"]
    for i in range(11):
        rate = [900.0, 1500.0, 700.0, 1500.0, 3000.0, 250.0, 1200.0, 5000.0, 4000.0, 100.0, 2500.0][i]
        lines.append(f"net{i},224,256.0,{rate:.2f},{256000 / rate:.3f},{0.5 + i:.2f},{5 + i:.2f}")
    (folder / BENCH).write_text("\n".join(lines) + "\n")
    (folder / "model_metadata-in1k.csv").write_text(
        "model,pretrain\n" + "".join(f"net{i}.tag{i % 3},{'in21k' if i % 2 else 'in1k'}\n" for i in range(12)))
    return {"no_bench": ["net11.tag2", "net3.big_384", "net5.ft_288"]}


def page_data(index: Path) -> dict:
    text = index.read_text()
    start = text.index('<script id="rbench-data" type="application/json">') + len(
        '<script id="rbench-data" type="application/json">')
    return json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))


def plot_points(plot: dict, models: list[str]) -> dict[str, tuple[float, float, int, int]]:
    p = plot["points"]
    return {models[m]: (x, y, imp, front) for m, x, y, imp, front in zip(p["model"], p["x"], p["y"], p["imported"], p["front"])}


@pytest.fixture(scope="module")
def zoo_site(tmp_path_factory):
    """`rbench report` of an empty store with the zoo imported, and `--html`."""
    root = tmp_path_factory.mktemp("site")
    missing = write_zoo(root / "zoo")
    result = invoke_apart("report", "--out", str(root / "out"), "--import", str(root / "zoo"), "--html", str(root / "site"))
    assert result.exit_code == 0, result.output + result.stderr
    return root, missing


def logit(percent):
    p = min(max(percent / 100, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def test_plot_data_equals_the_csv_files(zoo_site):
    root, missing = zoo_site
    out, data = root / "out", page_data(root / "site" / "index.html")
    plots = {p["id"]: p for p in data["plots"]}
    accuracy = csv_rows(out / "results-imagenet.csv")
    bench = {r["model"]: r for r in csv_rows(out / BENCH)}

    # Throughput: a tag's architecture row at the same size (timm's benchmark files name architectures).
    expected = {}
    for row in accuracy:
        found = bench.get(row["model"].split(".")[0])
        if found and found["infer_img_size"] == row["img_size"]:
            expected[row["model"]] = (float(found["infer_samples_per_sec"]), float(row["top1"]))
    throughput = plots[f"throughput-{BENCH[:-4]}"]
    points = plot_points(throughput, data["models"])
    assert {m: (x, y) for m, (x, y, _, _) in points.items()} == expected
    names = list(expected)
    front = dict(zip(names, brute_force_front([expected[n] for n in names])))
    assert {m: bool(f) for m, (_, _, _, f) in points.items()} == front
    assert all(imp == 1 for _, _, imp, _ in points.values())  # all of it imported
    assert any(f"{len(missing['no_bench'])} model(s) of results-imagenet.csv have no row in {BENCH}" in n
               for n in throughput["notes"]), throughput["notes"]
    line = throughput["lines"][0]
    assert line["x"] == sorted(x for x, _ in (expected[n] for n in names if front[n]))

    # GMACs from the benchmark file (the in-1k metadata file has none), params from the results file.
    gmacs = plot_points(plots["gmacs"], data["models"])
    assert {m: x for m, (x, *_) in gmacs.items()} == {
        m: float(bench[m.split(".")[0]]["infer_gmacs"]) for m in expected}
    params = plot_points(plots["params"], data["models"])
    assert {m: (x, y) for m, (x, y, _, _) in params.items()} == {
        r["model"]: (float(r["param_count"]), float(r["top1"])) for r in accuracy}

    # The shift: the robustness file's points on logit axes, and its line.
    robustness = csv_rows(out / "robustness-imagenetv2-matched-frequency.csv")
    shift = plots["shift-imagenetv2-matched-frequency"]
    points = plot_points(shift, data["models"])
    assert set(points) == {r["model"] for r in robustness}
    for r in robustness:
        x, y, *_ = points[r["model"]]
        assert x == pytest.approx(logit(float(r["base_top1"])), abs=1e-5)
        assert y == pytest.approx(logit(float(r["top1"])), abs=1e-5)
    slope, intercept = float(robustness[0]["slope"]), float(robustness[0]["intercept"])
    (line,) = shift["lines"]
    assert line["y"] == pytest.approx([slope * x + intercept for x in line["x"]])
    # Static copies of every plot.
    for plot in data["plots"]:
        for ext in ("png", "svg"):
            assert (root / "site" / "plots" / f"{plot['id']}.{ext}").stat().st_size > 1000


def test_heat_map_is_the_error_of_each_own_column(tmp_path):
    from rbench.report.site import write_site

    out = tmp_path / "out"
    out.mkdir()
    corruptions = ["gaussian_noise", "fog", "pixelate"]
    header = RESULT_COLUMNS.replace(",param_count", ",mce,relative_mce,param_count") + "," + ",".join(corruptions)
    rows = {"a.x": ["40.000", "71.250", "12.5"], "b.x": ["", "60.000", "30.000"], "c.x": ["", "", ""]}
    (out / "results-imagenet-c.csv").write_text(header + "\n" + "".join(
        f"{m},224,50.000,50.000,70.000,30.000,60.000,70.000,1.00,0.875,bicubic,{','.join(v)}\n" for m, v in rows.items()))
    from rbench.registry import get_registry
    from rbench.parent.run import view_part_columns

    # Another view with columns of its own (ImageNet-P's flip rates) is not a per-part top-1: no heat map.
    (out / "results-imagenet-p.csv").write_text("model,img_size,mfr,flip_prob\na.x,224,55.0,0.02\n")
    index, _ = write_site(out, tmp_path / "site", imported={}, bases={"imagenet-c": "imagenet"},
                          part_columns=view_part_columns(get_registry()))
    (heat,) = [p for p in page_data(index)["plots"] if p["kind"] == "heatmap"]
    assert heat["heat"]["columns"] == corruptions and heat["heat"]["rows"] == ["a.x", "b.x"]
    assert heat["heat"]["z"] == [[60.0, 28.75, 87.5], [None, 40.0, 70.0]]
    assert heat["notes"] == ["1 model(s) of results-imagenet-c.csv have none of its own columns: c.x"]


def test_import_of_benchmark_and_metadata_files(zoo_site):
    root, _ = zoo_site
    out = root / "out"
    rows = csv_rows(out / BENCH)
    # timm's column order and its `256.0` batch sizes, back in rbench's order; the missing
    # infer_macts column empty; sorted by samples/s.
    assert list(rows[0]) == ["model", "infer_img_size", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
                             "param_count", "infer_gmacs", "infer_macts"]
    assert [r["model"] for r in rows] == ["net7", "net8", "net4", "net10", "net1", "net3", "net6", "net0", "net2",
                                          "net5", "net9"]
    assert {r["infer_batch_size"] for r in rows} == {"256"} and {r["infer_macts"] for r in rows} == {""}
    assert not (out / "detailed" / BENCH).exists()  # imported rows have no details
    assert csv_rows(out / "model_metadata-in1k.csv") == sorted(csv_rows(root / "zoo" / "model_metadata-in1k.csv"),
                                                              key=lambda r: r["model"])
    # Imported again, the written file reproduces itself.
    again = invoke_apart("report", "--out", str(root / "again"), "--import", str(out / BENCH))
    assert again.exit_code == 0, again.stderr
    assert (root / "again" / BENCH).read_bytes() == (out / BENCH).read_bytes()


def test_a_broken_benchmark_import_is_one_line(tmp_path):
    bad = tmp_path / "benchmark-infer-fp32-nchw-pt240-cpu-x.csv"
    bad.write_text("model,infer_img_size\nm,224\n")
    odd = tmp_path / "benchmark-infer-fp32-nchw-pt240-cpu-y.csv"
    odd.write_text("model,infer_samples_per_sec,infer_batch_size\nm,10.0,25.5\n")
    for path, message in [(bad, "lacks the column(s) infer_samples_per_sec"), (odd, "line 2: infer_batch_size '25.5'"),
                          (tmp_path / "notes.csv", "does not exist")]:
        result = invoke_apart("report", "--out", str(tmp_path / "o"), "--import", str(path))
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert message in line


def test_html_without_plotly_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly raises ImportError
    published = tmp_path / "results-imagenet.csv"
    published.write_text(RESULT_COLUMNS + "\nm.a,224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n")
    result = invoke_apart("report", "--out", str(tmp_path / "o"), "--import", str(published), "--html", str(tmp_path / "s"))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'rbench[html]'" in line and not (tmp_path / "o" / "results-imagenet.csv").exists()


def test_html_of_nothing_is_the_one_line_error_of_report(tmp_path):
    result = invoke_apart("report", "--out", str(tmp_path / "o"), "--html", str(tmp_path / "s"))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "nothing to report" in line and not (tmp_path / "s" / "index.html").exists()


def test_html_never_replaces_or_removes_a_file_it_did_not_write(tmp_path):
    zoo = tmp_path / "zoo"
    write_zoo(zoo)
    site = tmp_path / "site"
    theirs = {site / "index.html": b"<p>my own page</p>", site / "notes.txt": b"notes",
              site / "plots" / "figure1.png": b"my figure", site / "plots" / "figure1.svg": b"<svg/>"}
    for path, data in theirs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result = invoke_apart("report", "--out", str(tmp_path / "out"), "--import", str(zoo), "--html", str(site))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"--html {site} holds files that rbench's site did not write" in line and "pass a new folder" in line
    assert {p: p.read_bytes() for p in theirs} == theirs and sorted(site.rglob("*.*")) == sorted(theirs)
    assert not list((tmp_path / "out").glob("*.csv"))  # refused before any work
    same = invoke_apart("report", "--out", str(tmp_path / "out"), "--import", str(zoo), "--html", str(tmp_path / "out"))
    assert same.exit_code == 2 and "would hold the report's CSV files" in same.stderr


def test_a_second_html_into_its_own_folder_replaces_its_own_files(tmp_path):
    zoo, fewer = tmp_path / "zoo", tmp_path / "fewer"
    write_zoo(zoo)
    shutil.copytree(zoo, fewer)
    (fewer / BENCH).unlink()
    (fewer / "results-imagenetv2-matched-frequency.csv").unlink()
    site = tmp_path / "site"
    first = invoke_apart("report", "--out", str(tmp_path / "out1"), "--import", str(zoo), "--html", str(site))
    assert first.exit_code == 0, first.output + first.stderr
    drawn = {p.name for p in (site / "plots").iterdir()}
    assert "results-imagenetv2-matched-frequency.csv" in [t["name"] for t in page_data(site / "index.html")["tables"]]
    assert any(n.startswith("throughput-") for n in drawn) and any(n.startswith("shift-") for n in drawn)

    second = invoke_apart("report", "--out", str(tmp_path / "out2"), "--import", str(fewer), "--html", str(site))
    assert second.exit_code == 0, second.output + second.stderr
    # the page and plots are the second report's; the first's plots that it no longer has are gone
    shown = [t["name"] for t in page_data(site / "index.html")["tables"]]
    assert "results-imagenet.csv" in shown and "results-imagenetv2-matched-frequency.csv" not in shown
    assert not any(name.startswith("benchmark-") for name in shown)
    now = {p.name for p in (site / "plots").iterdir()}
    assert now and now < drawn and not any(n.startswith(("throughput-", "shift-")) for n in now)
    manifest = json.loads((site / ".rbench-site.json").read_text())["files"]
    assert sorted(manifest) == sorted(["index.html", *(f"plots/{n}" for n in now)])

    # a file of the site changed since it wrote it is someone's now: left as it is, and a refusal
    edited = site / "plots" / sorted(now)[0]
    edited.write_bytes(b"edited by hand")
    third = invoke_apart("report", "--out", str(tmp_path / "out3"), "--import", str(fewer), "--html", str(site))
    assert third.exit_code == 2 and str(edited) in third.stderr
    assert edited.read_bytes() == b"edited by hand"


def test_broken_inputs_still_make_a_page_that_says_what_is_missing(tmp_path):
    from rbench.report.site import write_site

    out = tmp_path / "out"
    out.mkdir()
    # A results file without top1, a benchmark file of other models, a V2 file without its base.
    (out / "results-imagenet.csv").write_text("model,img_size,top5\na.x,224,90.0\n")
    (out / BENCH).write_text("model,infer_img_size,infer_samples_per_sec\nother,224,10.0\n")
    (out / "results-sketch.csv").write_text(RESULT_COLUMNS + "\na.x,224,30.000,70.000,50.000,50.000,1.00,0.875,bicubic\n")
    index, notes = write_site(out, tmp_path / "site", imported={}, bases={"sketch": "imagenet"})
    data = page_data(index)
    plots = {p["id"]: p for p in data["plots"]}
    assert plots[f"throughput-{BENCH[:-4]}"]["notes"] == ["nothing to plot: results-imagenet.csv has no top1 column"]
    assert plots["shift-sketch"]["notes"][0] == "nothing to plot: results-imagenet.csv has no top1 column"
    assert plots["gmacs"]["notes"][0].startswith("nothing to plot: no model_metadata.csv with gmacs")
    assert [t["name"] for t in data["tables"]] == ["results-imagenet.csv", "results-sketch.csv", BENCH]

    empty = tmp_path / "empty"
    empty.mkdir()
    index, notes = write_site(empty, tmp_path / "site-empty", imported={}, bases={})
    assert notes[0] == f"no result files in {empty}: nothing to show"
    assert page_data(index)["plots"] == []


# --- the page in a real browser -------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser test needs the playwright package (pip install playwright)")
    executable = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not executable:
        pytest.skip("the browser test needs Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_offline(browser, index: Path):
    """The page from disk with the network off: every non-file request aborted and recorded,
    console errors collected. Waits until the table and the plots in view are drawn."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    requests, errors = [], []

    def route(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(index.as_uri())
    page.evaluate("window.rbench.ready")
    return page, requests, errors


def column_values(page, column: str) -> list[str]:
    return page.eval_on_selector_all(f'#results-table tbody td[data-col="{column}"]', "cells => cells.map(c => c.textContent)")


def shoot(page, tmp_path: Path, name: str) -> None:
    import os

    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("RBENCH_SCREENSHOT_DIR"):
        folder = Path(os.environ["RBENCH_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, folder / name)


def test_page_in_headless_chromium(browser, zoo_site, tmp_path):
    root, _ = zoo_site
    out = root / "out"
    page, requests, errors = open_offline(browser, root / "site" / "index.html")
    accuracy = csv_rows(out / "results-imagenet.csv")
    # The first table is results-imagenet.csv, every row, in the file's order.
    assert column_values(page, "model") == [r["model"] for r in accuracy]
    # Sorting by top1: a click orders high to low, another low to high.
    page.click('#results-table th[data-col="top1"]')
    values = [float(v) for v in column_values(page, "top1")]
    assert values == sorted((float(r["top1"]) for r in accuracy), reverse=True)
    page.click('#results-table th[data-col="top1"]')
    assert [float(v) for v in column_values(page, "top1")] == sorted(values)
    # A glob leaves the rows whose whole name matches; a plain word is a substring.
    for query in ("net1*", "*.tag[01]", "big"):
        page.fill("#filter", query)
        pattern = query if any(c in query for c in "*?[") else f"*{query}*"
        assert sorted(column_values(page, "model")) == sorted(r["model"] for r in accuracy
                                                              if fnmatchcase(r["model"], pattern)), query
    page.fill("#filter", "")
    # Metadata joined by model: the pretrain column of model_metadata-in1k.csv.
    page.check('input[data-join="pretrain"]')
    pretrain = {r["model"]: r["pretrain"] for r in csv_rows(out / "model_metadata-in1k.csv")}
    joined = dict(zip(column_values(page, "model"), column_values(page, "pretrain")))
    assert joined == {r["model"]: pretrain.get(r["model"], "") for r in accuracy}
    # Each plot drawn with its points: counted from the plotly graph divs.
    page.evaluate("window.rbench.drawAll()")
    counted = page.evaluate("""() => Object.fromEntries(window.rbench.data.plots.map(p => {
        const div = document.getElementById(p.id);
        const traces = div.data || [];
        const points = traces.filter(t => t.meta === "points").reduce((n, t) => n + t.x.length, 0);
        const cells = traces.filter(t => t.type === "heatmap").reduce((n, t) => n + t.z.length, 0);
        return [p.id, points + cells];
    }))""")
    bench = {r["model"] for r in csv_rows(out / BENCH)}
    with_bench = [r for r in accuracy if r["model"].split(".")[0] in bench and r["img_size"] == "224"]
    v2 = csv_rows(out / "robustness-imagenetv2-matched-frequency.csv")
    assert counted == {f"throughput-{BENCH[:-4]}": len(with_bench), "gmacs": len(with_bench), "params": len(accuracy),
                       "shift-imagenetv2-matched-frequency": len(v2)}
    shoot(page, tmp_path, "rbench-site.png")
    assert requests == [] and errors == []
    page.context.close()


def test_broken_page_renders_with_its_notes(browser, tmp_path):
    from rbench.report.site import write_site

    out = tmp_path / "out"
    out.mkdir()
    (out / "results-imagenet.csv").write_text("model,img_size,top5\na.x,224,90.0\n")
    (out / BENCH).write_text("model,infer_img_size,infer_samples_per_sec\nother,224,10.0\n")
    index, _ = write_site(out, tmp_path / "site", imported={}, bases={})
    page, requests, errors = open_offline(browser, index)
    page.evaluate("window.rbench.drawAll()")
    text = page.inner_text("#plots")
    assert "results-imagenet.csv has no top1 column" in text
    assert column_values(page, "model") == ["a.x"]
    shoot(page, tmp_path, "rbench-site-broken.png")
    assert requests == [] and errors == []
    page.context.close()


def test_run_html_and_own_rows_beside_imported_ones(browser, tmp_path):
    """`rbench run --html` on the embedded suite, then `rbench report --import` of published
    rows on the same view: the store's models are their own trace, in their own colour."""
    run = invoke_apart("run", "--bench", "validate", "--out", str(tmp_path / "run"), "--html", str(tmp_path / "run-site"))
    assert run.exit_code == 0, run.output + run.stderr
    own = csv_rows(tmp_path / "run" / "results-synthetic.csv")
    assert page_data(tmp_path / "run-site" / "index.html")["tables"][0]["rows"] == [list(r.values()) for r in own]
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    published = [f"zoo{i}.a,160,{10 + i:.3f},{90 - i:.3f},{50 + i:.3f},{50 - i:.3f},{1 + i:.2f},0.875,bicubic" for i in range(12)]
    (zoo / "results-synthetic.csv").write_text("\n".join([RESULT_COLUMNS, *published[::-1]]) + "\n")
    report = invoke_apart("report", "--store", str(tmp_path / "run" / "store"), "--out", str(tmp_path / "out"),
                          "--import", str(zoo), "--html", str(tmp_path / "site"))
    assert report.exit_code == 0, report.output + report.stderr
    page, requests, errors = open_offline(browser, tmp_path / "site" / "index.html")
    page.evaluate("window.rbench.drawAll()")
    traces = page.evaluate("""() => document.getElementById("params").data
        .filter(t => t.meta === "points").map(t => [t.name, t.marker.color, t.x.length])""")
    assert traces == [["imported (12)", "#9aa5b1", 12], ["yours (3)", "#d62728", 3]]
    marked = page.eval_on_selector_all("#results-table tbody tr", "rows => rows.map(r => r.classList.contains('imported'))")
    models = column_values(page, "model")
    assert [m for m, imported in zip(models, marked) if not imported] == [r["model"] for r in own]
    shoot(page, tmp_path, "rbench-site-own.png")
    assert requests == [] and errors == []
    page.context.close()


HOSTILE = ["<!--<script>", '</script><script>document.body.innerHTML = ""</script>', '<a href="https://example.com/">link</a>',
           '<span style="color:red">red</span>', "x$\\frac{1}{$y", "a&amp;b", "<b>bold</b><br>two", '"quoted", comma',
           "1e5", "\u2028line\u2029separators"]


def write_hostile_zoo(folder: Path) -> list[str]:
    """A published folder whose model names are markup, mathtext, entities and script ends, with
    12 ordinary ones (enough models for the effective-robustness line)."""
    import csv

    folder.mkdir(parents=True)
    models = HOSTILE + [f"net{i}.a" for i in range(12)]
    generator = random.Random(7)
    for view, shift in (("imagenet", 0.0), ("imagenetv2-matched-frequency", 12.0)):
        with open(folder / f"results-{view}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(RESULT_COLUMNS.split(","))
            for model in models:
                top1 = round(generator.uniform(50, 85) - shift, 3)
                writer.writerow([model, 224, f"{top1:.3f}", f"{100 - top1:.3f}", "90.000", "10.000", "5.00", "0.875",
                                 "bicubic"])
    with open(folder / BENCH, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "infer_img_size", "infer_samples_per_sec", "infer_gmacs"])
        writer.writerows([m, 224, f"{100 + 10 * i:.2f}", "1.50"] for i, m in enumerate(models))
    return models


def test_hostile_model_names_are_text_everywhere_in_headless_chromium(browser, tmp_path):
    """Imported names that are markup (`<!--<script>`, `</script>`, `<a href>`, `<span style>`),
    mathtext or entities: the report and its static plots are written, the page shows every row of
    every table, and the plots' labels show each name as text, with no console error."""
    import csv

    from rbench.registry import get_registry
    from rbench.parent.run import view_part_columns
    from rbench.report.site import write_site

    models = write_hostile_zoo(tmp_path / "zoo")
    out, site = tmp_path / "out", tmp_path / "site"
    result = invoke_apart("report", "--out", str(out), "--import", str(tmp_path / "zoo"), "--html", str(site))
    assert result.exit_code == 0, result.output + result.stderr
    assert {r["model"] for r in csv_rows(out / "results-imagenet.csv")} == set(models)  # the names as they were
    # ImageNet-C's per-corruption columns: a heat map whose rows are the names.
    corruptions = ["gaussian_noise", "fog"]
    with open(out / "results-imagenet-c.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_COLUMNS.replace(",param_count", ",mce,relative_mce,param_count").split(",") + corruptions)
        writer.writerows([m, 224, "50.000", "50.000", "70.000", "30.000", "60.000", "70.000", "1.00", "0.875", "bicubic",
                          "40.000", f"{i:.3f}"] for i, m in enumerate(HOSTILE))
    index, _ = write_site(out, site, imported={}, bases={"imagenetv2-matched-frequency": "imagenet"},
                          part_columns=view_part_columns(get_registry()))
    for plot in page_data(index)["plots"]:
        for ext in ("png", "svg"):
            assert (site / "plots" / f"{plot['id']}.{ext}").stat().st_size > 1000, plot["id"]
    text = index.read_text()
    blob = text[text.index('type="application/json">'):text.index("</script>")]
    assert "<" not in blob[len('type="application/json">'):]  # no string can end the script or open a comment

    page, requests, errors = open_offline(browser, index)
    assert page.evaluate("document.querySelectorAll('script').length") == 4
    tables = page.evaluate("window.rbench.data.tables.map(t => t.name)")
    assert len(tables) == 5
    for i, name in enumerate(tables):  # every row of every table, each name as it is in the file
        page.select_option("#table-select", str(i))
        assert column_values(page, "model") == [r["model"] for r in csv_rows(out / name)], name
    page.evaluate("window.rbench.drawAll()")
    labels = page.evaluate("""() => Object.fromEntries(["heat-imagenet-c", "params"].map(id => {
        const div = document.getElementById(id);
        const texts = sel => [...div.querySelectorAll(sel)].map(t => t.textContent);
        return [id, {y: texts(".ytick text"), x: texts(".xtick text"),
                     markup: div.querySelectorAll(".xtick a, .ytick a, .xtick tspan[style], .ytick tspan[style], .infolayer a").length}];
    }))""")
    heat = labels["heat-imagenet-c"]
    assert heat["markup"] == 0 and labels["params"]["markup"] == 0
    assert heat["x"] == corruptions
    assert heat["y"] and set(heat["y"]) <= set(HOSTILE), heat["y"]
    assert '<a href="https://example.com/">link</a>' in heat["y"] and '<span style="color:red">red</span>' in heat["y"]
    # The hover text of the points names each model as text, markup escaped.
    hover = page.evaluate("""() => document.getElementById("params").data[0].text""")
    assert any(h.startswith("<b>&lt;!--&lt;script&gt;</b><br>") for h in hover), hover
    shoot(page, tmp_path, "rbench-site-hostile.png")
    assert requests == [] and errors == []
    page.context.close()


def test_a_model_name_with_mathtext_draws_as_text(tmp_path):
    """`x$\\frac{1}{$y` is not valid mathtext: matplotlib read it as mathtext and --html failed
    with a traceback; every label is plain text. (The throughput plot has no point, so its note,
    which names the models, is drawn in the static plot.)"""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    names = ["x$\\frac{1}{$y", "$$", "a$b$c.x"]
    (zoo / "results-imagenet.csv").write_text(RESULT_COLUMNS + "\n" + "".join(
        f"{name},224,{80 - i:.3f},{20 + i:.3f},95.000,5.000,{1 + i:.2f},0.875,bicubic\n" for i, name in enumerate(names)))
    (zoo / BENCH).write_text("model,infer_img_size,infer_samples_per_sec\nother,224,10.0\n")
    result = invoke_apart("report", "--out", str(tmp_path / "o"), "--import", str(zoo), "--html", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output + result.stderr
    (plot,) = [p for p in page_data(tmp_path / "s" / "index.html")["plots"] if p["id"].startswith("throughput-")]
    assert all(name in plot["notes"][0] for name in names), plot["notes"]
    for ext in ("png", "svg"):
        assert (tmp_path / "s" / "plots" / f"{plot['id']}.{ext}").stat().st_size > 1000


# --- a user's own run: two stacks, checkpoints, latency, beside an imported zoo ---------------

OWN = ["tiny_vit@ckpt-0123abcd4567", "test_net.r160@random", "my-finetuned-checkpoint_epoch_0100_best_of_all"]
STACKS = {"cpu": "fp32-nchw-pt240-cpu-x", "cpu+channels-last": "fp32-nhwc-pt240-cpu-x"}
OWN_RATES = {"cpu": [100.0, 50.0, 20.0], "cpu+channels-last": [300.0, 25.0, 20.0]}  # per model of OWN
LATENCY = [(OWN[0], 12.5, 20.0, 31.25), (OWN[1], 3.0, 3.5, 9.0), (OWN[2], 40.0, 41.0, 400.0)]  # p50, p90, p99 ms
ZOO_BENCH = "benchmark-infer-amp-nchw-pt240-cu124-zoo.csv"


def write_user_run(out: Path) -> dict[str, set[tuple[str, ...]]]:
    """The CSV files of a user's run on their own image folder (view `mine`, every top-1 at 0: random
    and untrained weights) with two stacks and latency, beside an imported ImageNet zoo of 300
    models and its benchmark file; returns the imported rows' keys (`results.imported_rows`)."""
    out.mkdir(parents=True)
    generator = random.Random(11)
    zoo = [f"zoo{i}.tag" for i in range(300)]
    (out / "results-imagenet.csv").write_text(RESULT_COLUMNS + "\n" + "".join(
        f"{m},224,{(t := generator.uniform(40, 90)):.3f},{100 - t:.3f},95.000,5.000,{generator.uniform(1, 300):.2f},0.875,"
        "bicubic\n" for m in zoo))
    (out / ZOO_BENCH).write_text("model,infer_img_size,infer_samples_per_sec,infer_gmacs\n" + "".join(
        f"{m.split('.')[0]},224,{generator.uniform(10, 20000):.2f},{generator.uniform(0.1, 50):.2f}\n" for m in zoo))
    (out / "results-mine.csv").write_text(RESULT_COLUMNS + "\n" + "".join(
        f"{m},160,0.000,100.000,0.000,100.000,{0.3 + i:.2f},0.950,bicubic\n" for i, m in enumerate(OWN)))
    (out / "detailed").mkdir()
    for stack, tag in STACKS.items():
        rows = [f"{m},160,{r:.2f},{0.04 + i:.2f}\n" for i, (m, r) in enumerate(zip(OWN, OWN_RATES[stack]))]
        (out / f"benchmark-infer-{tag}.csv").write_text("model,infer_img_size,infer_samples_per_sec,infer_gmacs\n" +
                                                         "".join(rows))
        (out / "detailed" / f"benchmark-infer-{tag}.csv").write_text(
            "model,infer_img_size,infer_samples_per_sec,status,backend\n" +
            "".join(f"{m},160,{r:.2f},ok,{stack}\n" for m, r in zip(OWN, OWN_RATES[stack])))
    (out / f"benchmark-latency-{STACKS['cpu']}.csv").write_text(
        "model,latency_img_size,latency_batch_size,latency_samples_per_sec,latency_mean_ms,latency_p50_ms,latency_p90_ms,"
        "latency_p99_ms,latency_queries\n" + "".join(f"{m},160,1,{1000 / p50:.2f},{p50:.3f},{p50},{p90},{p99},100\n"
                                                     for m, p50, p90, p99 in LATENCY))
    # Two stacks against the reference: channels-last (benchmarked) and bf16 (validated only).
    (out / "conformance-mine.csv").write_text(
        "model,img_size,stack,reference,top1,reference_top1,top1_delta,top1_agreement,logit_absdiff_max,"
        "logit_absdiff_mean,images,pass\n" + "".join(
            f"{m},160,{stack},cpu,0.0,0.0,{delta},{agreement},{0.01 * (i + 1)},0.001,24,true\n"
            for stack, deltas, agreements in (("cpu+channels-last", (0.0, 0.0, 0.0), (100.0, 100.0, 95.833)),
                                              ("cpu-amp-bf16", (0.0, -4.167, 0.0), (91.667, 87.5, 100.0)))
            for i, (m, delta, agreement) in enumerate(zip(OWN, deltas, agreements))))
    return {"results-imagenet.csv": {(m, "224") for m in zoo}, ZOO_BENCH: {(m.split(".")[0],) for m in zoo}}


@pytest.fixture(scope="module")
def user_site(tmp_path_factory):
    from rbench.report.site import write_site

    root = tmp_path_factory.mktemp("user")
    imported = write_user_run(root / "out")
    index, notes = write_site(root / "out", root / "site", imported=imported, bases={"imagenet": None, "mine": None})
    return root, index, imported


def test_conformance_table_and_each_stack_against_the_reference(user_site, browser):
    root, index, _ = user_site
    data = page_data(index)
    rows = csv_rows(root / "out" / "conformance-mine.csv")
    (table,) = [t for t in data["tables"] if t["name"] == "conformance-mine.csv"]
    assert table["rows"] == [list(r.values()) for r in rows] and not any(table["imported"])
    plot = {p["id"]: p for p in data["plots"]}["conformance-mine"]
    assert plot["categories"] == OWN
    panels = {p["y_title"]: {s["name"]: s["y"] for s in p["series"]} for p in plot["panels"]}
    assert panels["top-1 delta (points)"] == {"cpu+channels-last": [0.0, 0.0, 0.0], "cpu-amp-bf16": [0.0, -4.167, 0.0]}
    assert panels["top-1 agreement (%)"] == {"cpu+channels-last": [100.0, 100.0, 95.833],
                                             "cpu-amp-bf16": [91.667, 87.5, 100.0]}
    # The stack's infer samples/s over the reference's, model by model; bf16 was not benchmarked.
    assert panels["infer speed (x reference)"] == {"cpu+channels-last": [3.0, 0.5, 1.0], "cpu-amp-bf16": [None] * 3}

    page, requests, errors = open_offline(browser, index)
    models = page.eval_on_selector_all('#conformance-results-table tbody td[data-col="model"]',
                                       "cells => cells.map(c => c.textContent)")
    stacks = page.eval_on_selector_all('#conformance-results-table tbody td[data-col="stack"]',
                                       "cells => cells.map(c => c.textContent)")
    assert list(zip(models, stacks)) == [(r["model"], r["stack"]) for r in rows]
    page.click('#conformance-results-table th[data-col="top1_agreement"]')  # sortable like the others
    agreements = page.eval_on_selector_all('#conformance-results-table tbody td[data-col="top1_agreement"]',
                                           "cells => cells.map(c => Number(c.textContent))")
    assert agreements == sorted((float(r["top1_agreement"]) for r in rows), reverse=True)
    page.evaluate("window.rbench.drawAll()")
    drawn = page.evaluate("""() => document.getElementById("conformance-mine").data
        .filter(t => t.meta === "panel").map(t => [t.name, t.yaxis, t.y])""")
    assert ["cpu+channels-last", "y3", [3.0, 0.5, 1.0]] in drawn and len(drawn) == 6
    assert page.evaluate("document.getElementById('conformance-mine').closest('section').id") == "conformance"
    assert requests == [] and errors == []
    page.context.close()


def test_latency_is_plotted_in_milliseconds_with_p90_and_p99_whiskers(user_site, browser):
    root, index, _ = user_site
    data = page_data(index)
    plots = {p["id"]: p for p in data["plots"]}
    name = f"benchmark-latency-{STACKS['cpu']}"
    assert f"throughput-{name}" not in plots  # not as samples/s
    plot = plots[f"latency-{name}"]
    by_p50 = sorted(LATENCY, key=lambda r: r[1])
    assert [data["models"][m] for m in plot["points"]["model"]] == [r[0] for r in by_p50]
    assert plot["points"]["y"] == [r[1] for r in by_p50]
    assert plot["points"]["whiskers"] == [[r[2], r[3]] for r in by_p50] and plot["whisker_names"] == ["p90", "p99"]
    assert "ms" in plot["y_title"] and plot["y_log"]  # 3 ms to 400 ms

    page, requests, errors = open_offline(browser, index)
    page.evaluate("window.rbench.drawAll()")
    traces = page.evaluate(f"""() => document.getElementById("latency-{name}").data.map(t =>
        [t.meta, t.x, t.y, t.error_y ? t.error_y.array : null, t.error_y ? t.error_y.arrayminus : null])""")
    (points,) = [t for t in traces if t[0] == "points"]
    assert points[1] == [r[0] for r in by_p50] and points[2] == [r[1] for r in by_p50]
    tops = sorted([[y + e for y, e in zip(t[2], t[3])] for t in traces if t[0] == "whisker"])
    assert tops == sorted([[r[2] for r in by_p50], [r[3] for r in by_p50]])
    assert all(minus == [0, 0, 0] for t in traces if t[0] == "whisker" for minus in [t[4]])
    axis = page.evaluate(f"document.getElementById('latency-{name}').layout.yaxis.type")
    assert axis == "log"
    assert requests == [] and errors == []
    page.context.close()


def test_own_rows_are_plotted_beside_an_imported_zoo(user_site, browser):
    """The user's own view (their image folder) gets its throughput and size plots, every own row
    on them, first on the page, drawn last (on top), beside the zoo's plots of ImageNet."""
    root, index, _ = user_site
    data = page_data(index)
    plots = {p["id"]: p for p in data["plots"]}
    own_plots = [f"throughput-mine-benchmark-infer-{tag}" for tag in STACKS.values()] + ["mine-gmacs", "mine-params"]
    for plot_id in own_plots:
        points = plot_points(plots[plot_id], data["models"])
        assert sorted(points) == sorted(OWN) and all(imp == 0 for _, _, imp, _ in points.values()), plot_id
    assert f"throughput-mine-{ZOO_BENCH[:-4]}" not in plots  # the zoo's benchmark file names none of them
    for tag in STACKS.values():  # nor do the user's benchmark files name a model of the zoo: no empty plot
        assert f"throughput-benchmark-infer-{tag}" not in plots
    zoo = plot_points(plots[f"throughput-{ZOO_BENCH[:-4]}"], data["models"])
    assert len(zoo) == 300 and all(imp == 1 for _, _, imp, _ in zoo.values())
    ids = [p["id"] for p in data["plots"]]
    assert max(ids.index(i) for i in own_plots) < ids.index(f"throughput-{ZOO_BENCH[:-4]}")

    page, requests, errors = open_offline(browser, index)
    page.evaluate("window.rbench.drawAll()")
    for plot_id in own_plots:
        traces = page.evaluate(f"""() => document.getElementById("{plot_id}").data.map(t => [t.name, t.meta, t.x.length])""")
        assert traces[-1] == ["yours (3)", "points", 3], (plot_id, traces)
    zoo_traces = page.evaluate(f"""() => document.getElementById("throughput-{ZOO_BENCH[:-4]}").data
        .filter(t => t.meta === "points").map(t => t.name)""")
    assert zoo_traces == ["imported (300)"]
    assert requests == [] and errors == []
    page.context.close()


def test_accuracy_axes_stay_within_0_and_100(user_site, browser):
    """Every own top-1 at 0 (random weights): the axis is 0 to 5 %, not -1 to 1; the zoo's is its span."""
    root, index, _ = user_site
    data = page_data(index)
    plots = {p["id"]: p for p in data["plots"]}
    for plot_id in ("mine-params", "mine-gmacs", f"throughput-mine-benchmark-infer-{STACKS['cpu']}"):
        low, high = plots[plot_id]["y_range"]
        assert low == 0 and 5 <= high <= 6, plot_id
    zoo = [float(r["top1"]) for r in csv_rows(root / "out" / "results-imagenet.csv")]
    low, high = plots["params"]["y_range"]
    assert 0 <= low <= min(zoo) and max(zoo) <= high <= 100
    page, requests, errors = open_offline(browser, index)
    page.evaluate("window.rbench.drawAll()")
    shown = page.evaluate("""() => ["mine-params", "params"].map(id => document.getElementById(id).layout.yaxis.range)""")
    assert shown == [plots["mine-params"]["y_range"], plots["params"]["y_range"]]
    assert requests == [] and errors == []
    page.context.close()


def test_static_plots_name_own_points_and_a_few_of_the_zoo(user_site):
    from rbench.report.plots import ZOO_LABELS, plot_data, static_figure, wrap_label
    from rbench.report.site import read_tables, stack_speeds

    root, _, imported = user_site
    out = root / "out"
    tables = read_tables(out, imported)
    plots = {p.id: p for p in plot_data(tables, {"imagenet": None, "mine": None}, {}, stack_speeds(out))[0]}
    figure = static_figure(plots["mine-params"])
    (ax,) = figure.axes
    texts = [t.get_text() for t in ax.texts]
    assert sorted(t.replace("\n", "") for t in texts) == sorted(OWN)
    assert all(len(line) <= 24 for t in texts for line in t.split("\n"))  # long names wrapped
    assert ax.get_ylim()[0] >= 0 and ax.get_ylim()[1] <= 100
    figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and not any("$" in t for t in ticks)  # a log axis in plain text, not raw mathtext

    zoo = plots[f"throughput-{ZOO_BENCH[:-4]}"]
    figure = static_figure(zoo)
    names = [t.get_text().replace("\n", "") for t in figure.axes[0].texts]
    front = {p.model for p in zoo.points if p.front}
    assert 1 <= len(names) <= ZOO_LABELS and set(names) <= front
    assert wrap_label(OWN[2]).replace("\n", "") == OWN[2]
