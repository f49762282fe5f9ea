"""The HTML site of a whole zoo: its size, and the time headless Chromium takes to draw it.

    python bench/html_zoo.py [--results DIR] [--models 1300] [--runs 3] [--keep DIR]

Without `--results`, writes a synthetic published results folder the size of timm's: `--models`
tags with the real view names (imagenet, imagenet-real, imagenetv2-matched-frequency, sketch,
imagenet-a, imagenet-r, imagenet-a-clean, imagenet-r-clean), eight infer and two train
benchmark files of their architectures, and model_metadata.csv / model_metadata-in1k.csv. With
`--results DIR` (timm's `results/` folder) it uses that. Then `rbench report --import` of all of
it, every row imported, with `--html`, and opens the page from disk in headless Chromium with the
network off, `--runs` times. Times are the page's own `performance.now()`, from navigation start:
to the table drawn, to the table and the plots in the window drawn (`rbench.ready`), and to every
plot drawn (`rbench.drawAll()`, which the page otherwise does as plots scroll into view).
Prints a table with the targets (under 2 s, under 15 MB) and the ratio to them.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TARGET_SECONDS = 2.0
TARGET_MB = 15.0
VIEWS = {  # view: (base, accuracy drop from ImageNet at 80% top-1, slope on logit axes)
    "imagenet-real": ("imagenet", -7.0, 1.1), "imagenetv2-matched-frequency": ("imagenet", 12.0, 1.0),
    "sketch": ("imagenet", 50.0, 1.3), "imagenet-a-clean": ("imagenet", -10.0, 1.1),
    "imagenet-r-clean": ("imagenet", -12.0, 1.1), "imagenet-a": ("imagenet-a-clean", 55.0, 2.0),
    "imagenet-r": ("imagenet-r-clean", 40.0, 1.4),
}
BENCHES = [f"infer-{p}-{layout}-pt{t}-{d}" for p, layout, t, d in (
    ("amp", "nchw", "240", "cu124-rtx4090"), ("amp", "nhwc", "240", "cu124-rtx4090"),
    ("amp", "nchw", "240", "cu124-rtx4090-dynamo"), ("amp", "nchw", "291", "cu130-5090"),
    ("amp_bf16", "nchw", "291", "cu130-pro6000maxq"), ("amp", "nchw", "210", "cu121-rtx3090"),
    ("fp32", "nchw", "240", "cpu-i9_10940x"), ("fp32", "nchw", "240", "cpu-i7_12700h-dynamo"))] + [
    "train-amp-nchw-pt112-cu113-rtx3090", "train-amp-nhwc-pt112-cu113-rtx3090"]
RESULT_HEADER = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"
PRETRAIN = ["in1k", "in21k", "in12k", "laion2b", "openai", "m38m", "jft300m"]
TECHNIQUE = ["supervised", "distilled", "self-supervised", "masked image modelling", "image-text contrastive"]


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _results_line(model: str, size: int, top1: float, top5: float, params: float) -> str:
    return (f"{model},{size},{top1:.3f},{100 - top1:.3f},{top5:.3f},{100 - top5:.3f},\"{params:,.2f}\",0.875,bicubic")


def write_synthetic_zoo(folder: Path, models: int, seed: int = 0) -> None:
    """A results folder shaped like timm's, with `models` tags of about models / 1.3 architectures."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    families = ["resnet", "convnext", "vit", "efficientnet", "regnet", "deit", "swin", "mobilenetv3", "eva02", "maxvit"]
    tags = []
    arch = 0
    while len(tags) < models:
        name = f"{rng.choice(families)}_{rng.choice(['tiny', 'small', 'base', 'large'])}_{arch}"
        size = rng.choice([224, 224, 224, 256, 288, 384])
        for t in range(rng.choice([1, 1, 1, 2, 3])):
            tags.append((f"{name}.{rng.choice(PRETRAIN)}_ft_in1k_{t}", name, size))
        arch += 1
    tags = tags[:models]
    quality = {tag: rng.uniform(-1.0, 2.3) for tag, _, _ in tags}  # logit of ImageNet top-1
    params = {a: round(math.exp(rng.uniform(0, 6.5)), 2) for _, a, _ in tags}
    top1 = {"imagenet": {t: 100 * _sigmoid(q) for t, q in quality.items()}}
    for view, (base, drop, slope) in VIEWS.items():
        shift = _logit(0.8) - _logit(0.8 - drop / 100)
        top1[view] = {t: 100 * _sigmoid(slope * (_logit(top1[base][t] / 100) - _logit(0.8)) + _logit(0.8) - shift
                                        + rng.gauss(0, 0.15)) for t, _, _ in tags}
    for view, values in top1.items():
        lines = [RESULT_HEADER] + [_results_line(t, s, values[t], min(99.99, values[t] + 12), params[a])
                                   for t, a, s in sorted(tags, key=lambda x: -values[x[0]])]
        (folder / f"results-{view}.csv").write_text("\n".join(lines) + "\n")
    architectures = sorted({(a, s) for _, a, s in tags})
    for bench in BENCHES:
        kind = bench.split("-")[0]
        scale = 10 ** rng.uniform(-1, 0.5)
        rows = []
        for a, s in architectures:
            if rng.random() < 0.03:  # some models fail or are not run on a device
                continue
            rate = scale * 2e5 / params[a] ** 0.8 * (224 / s) ** 2 * rng.uniform(0.7, 1.3)
            rows.append((a, s, rate))
        rows.sort(key=lambda r: -r[2])
        if kind == "infer":
            lines = ["model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,infer_macts"]
            lines += [f"{a},{s},{r:.2f},{256000 / r:.3f},256,{params[a]:.2f},{params[a] * 0.2 * (s / 224) ** 2:.2f},"
                      f"{params[a] * 0.5:.2f}" for a, s, r in rows]
        else:
            lines = ["model,train_samples_per_sec,train_step_time,train_batch_size,train_img_size,param_count"]
            lines += [f"{a},{r / 3:.2f},{768000 / r:.3f},256,{s},{params[a]:.2f}" for a, s, r in rows]
        (folder / f"benchmark-{bench}.csv").write_text("\n".join(lines) + "\n")
    meta = ["model,architecture,pretrain,pretrain_data,finetune_chain,technique,num_classes,train_img_size,test_img_size,"
            "crop_pct,test_crop_pct,interpolation,mean,std,param_count,gmacs,macts,license,paper,origin_url,hub_id,note"]
    in1k = ["model,pretrain"]
    for t, a, s in sorted(tags):
        pretrain = t.split(".")[1].split("_")[0]
        meta.append(f"{t},{a},{pretrain},{pretrain},{pretrain} -> in1k,{rng.choice(TECHNIQUE)},1000,{s},{s},0.875,0.875,"
                    f"bicubic,\"0.485,0.456,0.406\",\"0.229,0.224,0.225\",{params[a]:.2f},{params[a] * 0.2:.2f},"
                    f"{params[a] * 0.5:.2f},apache-2.0,,,timm/{t},")
        in1k.append(f"{t},{pretrain}")
    (folder / "model_metadata.csv").write_text("\n".join(meta) + "\n")
    (folder / "model_metadata-in1k.csv").write_text("\n".join(in1k) + "\n")


def measure(index: Path, runs: int) -> list[dict[str, float]]:
    """Open `index` `runs` times in a fresh offline context; the page's times in ms."""
    from playwright.sync_api import sync_playwright

    found = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(runs):
            context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
            blocked, errors = [], []
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                          else (blocked.append(route.request.url), route.abort()))
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(index.as_uri())
            ready = page.evaluate("window.rbench.ready")
            marks = page.evaluate("window.rbench.marks")
            every = page.evaluate("window.rbench.drawAll()")
            if blocked or errors:
                raise SystemExit(f"the page asked for {blocked} or logged errors {errors}")
            found.append({"table": marks["table"], "plotly": marks["plotly"], "ready": ready,
                          "all": every + marks["script"]})
            context.close()
        browser.close()
    return found


def plotly_alone(folder: Path, runs: int) -> float:
    """Median ms to evaluate the installed plotly.js inlined in an empty page: the floor under
    any page drawn with it, whatever its data."""
    from playwright.sync_api import sync_playwright
    from plotly.offline import get_plotlyjs

    blank = folder / "plotly-alone.html"
    blank.write_text("<!DOCTYPE html><html><body><script>" + get_plotlyjs().replace("</script", "<\\/script")
                     + "</script><script>window.evaluated = performance.now()</script></body></html>")
    found = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(runs):
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.goto(blank.as_uri())
            found.append(page.evaluate("window.evaluated"))
            context.close()
        browser.close()
    return statistics.median(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, help="timm's results/ folder (default: a synthetic zoo)")
    parser.add_argument("--models", type=int, default=1300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the zoo, CSVs and site here (kept)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="rbench-html-zoo-"))
    zoo = args.results
    if zoo is None:
        zoo = work / "zoo"
        write_synthetic_zoo(zoo, args.models)
    site = work / "site"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rbench", "report", "--out", str(work / "out"), "--import", str(zoo),
                    "--html", str(site)], check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    build = time.perf_counter() - started
    index = site / "index.html"
    models = sum(1 for _ in open(work / "out" / "results-imagenet.csv")) - 1
    files = len(list((work / "out").glob("*.csv")))
    size_mb = index.stat().st_size / 1e6
    plots_mb = sum(p.stat().st_size for p in (site / "plots").iterdir()) / 1e6
    times = measure(index, args.runs)
    median = {k: statistics.median(t[k] for t in times) / 1000 for k in times[0]}
    median["alone"] = plotly_alone(work, args.runs) / 1000
    print(f"zoo: {'synthetic, ' if args.results is None else str(zoo) + ', '}{models:,} models on ImageNet, "
          f"{files} CSV files; `rbench report --import --html` {build:.1f} s (static plots included)")
    print(f"{'measure':<58} {'value':>9} {'target':>8} {'ratio':>6}")
    print(f"{'index.html size (MB)':<58} {size_mb:>9.2f} {TARGET_MB:>8.1f} {size_mb / TARGET_MB:>6.2f}")
    print(f"{'plots/ (PNG + SVG, MB; not loaded by the page)':<58} {plots_mb:>9.2f} {'-':>8} {'-':>6}")
    for label, key, target in [("to the table drawn (s)", "table", None), ("to plotly.js evaluated (s)", "plotly", None),
                               (f"to the table and plots in view drawn (s, median of {args.runs})", "ready", TARGET_SECONDS),
                               ("to every plot drawn (s)", "all", None),
                               ("reference: plotly.js alone in an empty page, evaluated (s)", "alone", None)]:
        goal, ratio = (f"{target:.1f}", f"{median[key] / target:.2f}") if target else ("-", "-")
        print(f"{label:<58} {median[key]:>9.2f} {goal:>8} {ratio:>6}")
    print(f"site: {index}")


if __name__ == "__main__":
    main()
