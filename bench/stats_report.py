"""Time `rbench report` over a store of synthetic predictions files, with every metric: cold
(no score entries in the store), warm (nothing new) and after one new model.

    python bench/stats_report.py [--models 500] [--samples 50000] [--v2-samples 10000] [--store DIR]
    python bench/stats_report.py --zoo [--models 1600] [--scale 1.0] [--store DIR]

Makes a store as `rbench run` would leave it after validating `--models` models on ImageNet
val (`--samples` images, the real case is 50,000; views imagenet, imagenet-real with label sets
on 46,837 of them, imagenet-a-clean and imagenet-r-clean with their 200-class restrictions on
a fifth of the images each) and, with `--v2-samples`, on ImageNetV2 (10,000 images, base
imagenet): one predictions file per model and source, in the stored format
(docs/predictions.md), each model with its own accuracy (top-1 from 40% to 90%, V2 top-1 on a
logit-linear trend plus noise). `--zoo` adds the four other sources of timm's results folder:
V2 (10,000), sketch (50,889), imagenet-a (7,500) and imagenet-r (30,000 images; both on their
200 classes); `--scale` multiplies every source's size. Then runs `rbench report` on it
(accuracy, calibration, intervals, tied_with_best, the robustness files) in a fresh process:
once cold (the store's `scores/` empty), `--repeat` times warm, and once after one more model is
added; prints each time and its ratio to the cold report's.

`make_store` is also used by tests (small sizes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = 1000
TOPK = 5


def _restricted_classes(seed: int) -> list[int]:
    import numpy as np

    return sorted(np.random.default_rng(seed).choice(CLASSES, 200, replace=False).tolist())


ZOO_SIZES = {"imagenetv2-matched-frequency": 10000, "sketch": 50889, "imagenet-a": 7500, "imagenet-r": 30000}


def _sources(samples: int, v2_samples: int, seed: int, zoo: dict[str, int] | None = None):
    """The synthetic sources: ImageNet val with its four views, V2 with `v2_samples` images,
    and with `zoo` (source name -> images) those sources (V2's size among them)."""
    import numpy as np

    from rbench import Source, ViewSpec

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, samples)
    val_samples = [(f"val/{i:08d}.JPEG", int(c)) for i, c in enumerate(labels)]
    real_n = round(samples * 46837 / 50000)
    real_idx = np.sort(rng.choice(samples, real_n, replace=False))
    real_labels = []
    for i in real_idx:
        extra = rng.integers(0, CLASSES, rng.integers(0, 3))
        real_labels.append(tuple(sorted({int(labels[i]), *map(int, extra)})))
    views = [ViewSpec(name="imagenet"), ViewSpec(name="imagenet-real", samples=real_idx.tolist(), labels=real_labels)]
    for name, s in (("imagenet-a-clean", 1), ("imagenet-r-clean", 2)):
        classes = _restricted_classes(seed + s)
        members = np.flatnonzero(np.isin(labels, classes))
        views.append(ViewSpec(name=name, samples=members.tolist(), classes=classes))
    val = Source(name="imagenet", root=Path("/synthetic/imagenet/val"), samples=val_samples, views=views)
    sources = [val]
    v2_samples = zoo.get("imagenetv2-matched-frequency", 0) if zoo is not None else v2_samples
    if v2_samples:
        v2_labels = rng.integers(0, CLASSES, v2_samples)
        sources.append(Source(name="imagenetv2-matched-frequency", root=Path("/synthetic/v2"),
                              samples=[(f"v2/{i:08d}.jpeg", int(c)) for i, c in enumerate(v2_labels)],
                              views=[ViewSpec(name="imagenetv2-matched-frequency")]))
    for name, size in (zoo or {}).items():
        if name == "imagenetv2-matched-frequency":
            continue
        classes = {"imagenet-a": _restricted_classes(seed + 1), "imagenet-r": _restricted_classes(seed + 2)}.get(name)
        pool = np.arange(CLASSES) if classes is None else np.asarray(classes)
        source_labels = pool[rng.integers(0, len(pool), size)]
        sources.append(Source(name=name, root=Path(f"/synthetic/{name}"),
                              samples=[(f"{name}/{i:08d}.JPEG", int(c)) for i, c in enumerate(source_labels)],
                              views=[ViewSpec(name=name, classes=classes)]))
    return sources


def _fields(rng, labels, accuracy: float, classes=None):
    """Synthetic predictions of `labels` at about `accuracy` top-1 (top-5 higher), in the
    stored fields: top-k classes (best first) and log-probabilities, the label's
    log-probability, log-sum-exp, sum of squared probabilities."""
    import numpy as np

    n = len(labels)
    pool = np.arange(CLASSES) if classes is None else np.asarray(classes)
    top = pool[rng.integers(0, len(pool), (n, TOPK))]
    hit1 = rng.random(n) < accuracy
    hit5 = hit1 | (rng.random(n) < 0.6)
    position = np.where(hit1, 0, rng.integers(1, TOPK, n))
    rows = np.flatnonzero(hit5)
    top[rows, position[rows]] = labels[rows]
    # Probabilities: the top-1 confidence rises with correctness; the rest share what is left.
    p1 = np.clip(rng.beta(2 + 6 * hit1, 2.0), 0.05, 0.999)
    rest = (1 - p1)[:, None] * np.sort(rng.dirichlet(np.ones(TOPK + 1), n)[:, :TOPK - 1], axis=1)[:, ::-1]
    rest = np.minimum(rest, p1[:, None])
    probs = np.concatenate([p1[:, None], rest], axis=1)
    logp = np.log(probs).astype(np.float32)
    label_p = np.where(hit5, probs[np.arange(n), position], (1 - probs.sum(1)) / 50)
    label_logp = np.log(label_p).astype(np.float32)
    prob_sq_sum = (probs**2).sum(1).astype(np.float32)
    logsumexp = rng.normal(10, 2, n).astype(np.float32)
    return {"topk_class": top, "topk_logp": logp, "label_logp": label_logp, "logsumexp": logsumexp,
            "prob_sq_sum": prob_sq_sum}


def _frame(rng, source, accuracy: float, extra):
    import numpy as np
    import polars as pl

    from rbench.predictions import restrictions

    n = len(source.samples)
    labels = np.asarray([c for _, c in source.samples])
    columns = {"index": pl.Series("index", np.arange(n), dtype=pl.UInt32),
               "ok": pl.Series("ok", np.ones(n, dtype=bool)),
               "label": pl.Series("label", labels, dtype=pl.Int32)}

    def add(prefix, fields, mask=None):
        for field, values in fields.items():
            if field == "topk_class":
                series = pl.Series(prefix + field, values.astype(np.uint16), dtype=pl.Array(pl.UInt16, TOPK))
            elif field == "topk_logp":
                series = pl.Series(prefix + field, values, dtype=pl.Array(pl.Float32, TOPK))
            else:
                series = pl.Series(prefix + field, values, dtype=pl.Float32)
            if mask is not None:
                series = pl.select(pl.when(pl.Series(mask)).then(series).otherwise(None).alias(prefix + field)).to_series()
            columns[prefix + field] = series

    add("", _fields(rng, labels, accuracy))
    for name, classes in restrictions(source).items():
        mask = np.isin(labels, classes)
        sub = _fields(rng, np.where(mask, labels, classes[0]), min(0.97, accuracy + 0.08), classes)
        add(f"{name}/", sub, mask)
    columns.update(extra)
    return pl.DataFrame(list(columns.values()))


def make_store(root: Path, models: int, samples: int = 50000, v2_samples: int = 10000, seed: int = 0,
               zoo: dict[str, int] | None = None, first: int = 0) -> list[str]:
    """A store at `root` with `models` synthetic models validated on the synthetic sources
    (`_sources`); returns the model tags (`synth_000.a_in1k`, ...). `first`: the index of the
    first model, to add models to a store made with the same arguments."""
    import numpy as np
    import polars as pl

    from rbench.record import Cell, CellRecord
    from rbench.store import Store
    from rbench.statistics import inverse_logit, logit

    store = Store(root)
    sources = _sources(samples, v2_samples, seed, zoo)
    listings = {s.name: store.put_source(s, f"synthetic{seed}-{samples}") for s in sources}
    extras = {}
    for source in sources:  # the label-set columns are the same for every model
        extra = {}
        for view in source.views:
            if view.labels is not None:
                sets = [None] * len(source.samples)
                for i, label in zip(view.samples, view.labels):
                    sets[i] = list(label)
                extra[f"{view.name}/labels"] = pl.Series(f"{view.name}/labels", sets, dtype=pl.List(pl.Int32))
        extras[source.name] = extra
    rng = np.random.default_rng(seed + 100)
    tags = []
    for m in range(first + models):
        tag = f"synth_{m:03d}.a_in1k"
        accuracy = 0.40 + 0.50 * rng.random()
        shifted = float(inverse_logit(0.9 * logit(accuracy) - 0.5 + rng.normal(0, 0.1)))
        if m < first:  # made earlier: the same draws, so each model keeps its accuracy
            continue
        tags.append(tag)
        accuracies = {"imagenet": accuracy, "imagenetv2-matched-frequency": shifted}
        for source in sources:
            cell = Cell(kind="validate", model=tag, source=source.name,
                        identity={"kind": "validate", "model": tag, "source": source.name, "synthetic": seed})
            frame = _frame(np.random.default_rng([seed, m, len(source.samples)]), source,
                           accuracies.get(source.name, shifted), extras[source.name])
            store.put(CellRecord(cell=cell, predictions=store.put_predictions(cell.key, frame),
                                 source_listing=listings[source.name],
                                 common={"model": tag, "img_size": 224, "param_count": 10.0 + m, "crop_pct": 0.875,
                                         "interpolation": "bicubic", "weights": "pretrained"}))
    return tags


def _report(store: Path, out: Path) -> float:
    """Seconds of one `python -m rbench report` on `store` into `out`, process start included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rbench", "report", "--store", str(store), "--out", str(out)],
                   check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _csv_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, help="Models in the store (default 500, with --zoo 1600).")
    parser.add_argument("--samples", type=int, default=50000)
    parser.add_argument("--v2-samples", type=int, default=10000)
    parser.add_argument("--zoo", action="store_true", help="Val and the four other sources of timm's results folder.")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every source's size (with --zoo).")
    parser.add_argument("--repeat", type=int, default=3, help="Warm reports to time (the best is shown).")
    parser.add_argument("--store", type=Path, help="Keep the store here (default: a temporary folder).")
    args = parser.parse_args()
    models = args.models or (1600 if args.zoo else 500)
    samples = round(args.samples * args.scale) if args.zoo else args.samples
    zoo = {name: round(size * args.scale) for name, size in ZOO_SIZES.items()} if args.zoo else None
    with tempfile.TemporaryDirectory() as tmp:
        root = args.store or Path(tmp) / "store"
        started = time.perf_counter()
        if not (root / "records").is_dir():
            make_store(root, models, samples, args.v2_samples, zoo=zoo)
        made = time.perf_counter() - started
        files = len(list((root / "predictions").glob("*.parquet")))
        size = sum(p.stat().st_size for p in (root / "predictions").glob("*.parquet"))
        print(f"store: {len(list((root / 'records').glob('*.json')))} records, {files} predictions files, {size / 1e6:.0f} MB, made in {made:.1f} s "
              f"({os.cpu_count()} CPUs)")
        rows = []
        if (root / "scores").exists():
            print(f"cold: not timed, {root / 'scores'} already holds score entries")
            cold = None
        else:
            cold = _report(root, Path(tmp) / "cold")
            rows.append(("cold: no score entries", cold))
        warm = min(_report(root, Path(tmp) / "warm") for _ in range(args.repeat))
        rows.append((f"warm: nothing new (best of {args.repeat})", warm))
        if cold is not None and _csv_files(Path(tmp) / "cold") != _csv_files(Path(tmp) / "warm"):
            raise SystemExit("the warm report's CSV files differ from the cold one's")
        held = len(list((root / "records").glob("*.json"))) // len(_sources(samples, args.v2_samples, 0, zoo))
        make_store(root, 1, samples, args.v2_samples, zoo=zoo, first=held)
        rows.append(("one new model", _report(root, Path(tmp) / "new")))
        print(f"{'rbench report':40} {'seconds':>9} {'ratio to cold':>14}")
        for name, seconds in rows:
            ratio = f"{seconds / cold:.3f}" if cold else "-"
            print(f"{name:40} {seconds:9.2f} {ratio:>14}")
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
        print(f"files: {', '.join(sorted(p.name for p in (Path(tmp) / 'warm').glob('*.csv')))}")


if __name__ == "__main__":
    main()
