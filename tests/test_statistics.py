"""Telling a real difference from noise: intervals, paired tests, calibration, effective
robustness, each against an independent computation written here."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rbench import statistics
from rbench.report.results import robustness_table
from rbench.plugins.metrics import calibration, intervals

from .conftest import invoke_apart, predictions_of, write_jpegs

Z = 1.959963984540054  # the 97.5% normal quantile




# --- Wilson intervals -----------------------------------------------------------------------

def wilson_by_quadratic(k: int, n: int) -> tuple[float, float]:
    """The Wilson interval as the roots in p of (k/n - p)^2 = z^2 p (1 - p) / n."""
    phat = k / n
    a = 1 + Z * Z / n
    b = -(2 * phat + Z * Z / n)
    c = phat * phat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (40000, 50000), (7, 7500), (8123, 10000)])
def test_wilson_equals_the_roots_of_the_score_equation(k, n):
    low, high = statistics.wilson_interval(k, n)
    expected = wilson_by_quadratic(k, n)
    assert low == pytest.approx(max(0.0, expected[0]), abs=1e-12)
    assert high == pytest.approx(min(1.0, expected[1]), abs=1e-12)
    assert statistics.Z95 == pytest.approx(Z, abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 100, 50000])
def test_wilson_ends_exactly_at_0_and_100_percent(n):
    """No float residue at the ends: 0 of n starts at 0 exactly, n of n ends at 1 exactly."""
    assert statistics.wilson_interval(0, n)[0] == 0.0
    assert statistics.wilson_interval(n, n)[1] == 1.0


def test_the_intervals_metric_writes_no_float_residue():
    logits = torch.eye(10)[:8] * 5  # image i predicts class i first
    logits[:, 9] = -10.0  # and class 9 last
    right = intervals.compute(predictions_of(logits, list(range(8))), None)  # 8 of 8 in top-1 and top-5
    wrong = intervals.compute(predictions_of(logits, [9] * 8), None)  # 0 of 8 in either
    assert (right["top1_high"], right["top5_high"], wrong["top1_low"], wrong["top5_low"]) == (100.0, 100.0, 0.0, 0.0)
    assert right["top1_low"] == pytest.approx(100 * wilson_by_quadratic(8, 8)[0], abs=1e-9)
    assert wrong["top1_high"] == pytest.approx(100 * wilson_by_quadratic(0, 8)[1], abs=1e-9)
    for value in (*right.values(), *wrong.values()):
        assert value == round(value, 10)


def test_the_intervals_metric_gives_wilson_in_percent_for_plain_and_label_set_views():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(40, 10)), dtype=torch.float32)
    labels = rng.integers(0, 10, 40).tolist()
    predictions = predictions_of(logits, labels)
    top = logits.topk(5, dim=1).indices
    for k in (1, 5):
        hits = sum(int(label in top[i, :k].tolist()) for i, label in enumerate(labels))
        low, high = wilson_by_quadratic(hits, 40)
        row = intervals.compute(predictions, None)
        assert row[f"top{k}_low"] == pytest.approx(100 * max(0.0, low), abs=1e-9)
        assert row[f"top{k}_high"] == pytest.approx(100 * min(1.0, high), abs=1e-9)
    # Label sets: a hit when any top-k class is in the set; an empty set is not scored.
    sets = [(int(top[i, 0]), 3) if i % 3 == 0 else () if i % 7 == 0 else (int(labels[i]),) for i in range(40)]
    row = intervals.compute(predictions_of(logits, sets), None)
    scored = [i for i, s in enumerate(sets) if s]
    hits = sum(int(bool(set(sets[i]) & {int(top[i, 0])})) for i in scored)
    low, high = wilson_by_quadratic(hits, len(scored))
    assert row["top1_low"] == pytest.approx(100 * max(0.0, low), abs=1e-9)
    assert row["top1_high"] == pytest.approx(100 * min(1.0, high), abs=1e-9)


def test_wilson_covers_the_true_accuracy_at_the_nominal_rate():
    rng = np.random.default_rng(2015)
    reps, n, p = 1000, 500, 0.8
    covered = 0
    for k in rng.binomial(n, p, reps):
        low, high = statistics.wilson_interval(int(k), n)
        covered += low <= p <= high
    # The count of covering intervals is Binomial(1000, 0.95): 4 standard deviations either side.
    sd = math.sqrt(reps * 0.95 * 0.05)
    assert abs(covered - 0.95 * reps) <= 4 * sd, covered


# --- McNemar and the paired difference ------------------------------------------------------

def exact_two_sided(b: int, c: int) -> float:
    """The exact binomial test of b successes in b + c fair trials: the total probability of
    every outcome no more likely than the one observed (Fractions, no shortcut)."""
    n = b + c
    pmf = [Fraction(math.comb(n, i), 2**n) for i in range(n + 1)]
    return float(sum(q for q in pmf if q <= pmf[b]))


def pairs(both: int, only_a: int, only_b: int, neither: int, seed: int = 0):
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    order = np.random.default_rng(seed).permutation(len(a))
    return np.array(a, bool)[order], np.array(b, bool)[order]


@pytest.mark.parametrize("b,c", [(7, 2), (2, 7), (0, 5), (12, 12), (30, 11), (1, 0), (1800, 1650), (2600, 2450)])
def test_mcnemar_equals_the_exact_binomial(b, c):
    ha, hb = pairs(50, b, c, 20)
    result = statistics.paired_difference(ha, hb)
    assert (result.only_a, result.only_b, result.both, result.neither) == (b, c, 50, 20)
    assert result.p_value == pytest.approx(min(1.0, exact_two_sided(b, c)), rel=1e-9, abs=1e-300)


def test_identical_models_give_p_one_and_an_empty_difference():
    ha, _ = pairs(60, 10, 0, 30)
    result = statistics.paired_difference(ha, ha.copy())
    assert result.p_value == 1.0 and result.diff == 0.0 and result.low == result.high == 0.0
    assert "no significant difference" in result.verdict("a", "b")


def test_the_paired_interval_is_wald_on_the_per_image_differences():
    ha, hb = pairs(300, 45, 20, 135, seed=3)
    result = statistics.paired_difference(ha, hb)
    d = ha.astype(float) - hb.astype(float)
    se = d.std(ddof=0) / math.sqrt(d.size)
    assert result.diff == pytest.approx(100 * d.mean())
    assert result.low == pytest.approx(100 * (d.mean() - Z * se))
    assert result.high == pytest.approx(100 * (d.mean() + Z * se))
    assert result.p_value < 0.05 and result.verdict("a", "b").startswith("a is more accurate than b")


# --- calibration ----------------------------------------------------------------------------

def test_ece_nll_and_brier_on_a_hand_made_set():
    probs = [[0.90, 0.05, 0.03, 0.02],   # label 0: right, confidence 0.90
             [0.04, 0.90, 0.03, 0.03],   # label 0: wrong, confidence 0.90
             [0.62, 0.20, 0.10, 0.08],   # label 0: right, confidence 0.62
             [0.25, 0.35, 0.20, 0.20]]   # label 3: wrong, confidence 0.35
    labels = [0, 0, 0, 3]
    logits = torch.tensor(probs).log()
    row = calibration.compute(predictions_of(logits, labels), None)
    # 15 bins of width 1/15: 0.90 -> (13/15, 14/15], 0.62 -> (9/15, 10/15], 0.35 -> (5/15, 6/15].
    # ECE = (|1 - 0.9 - 0.9| + |1 - 0.62| + |0 - 0.35|) / 4 = (0.8 + 0.38 + 0.35) / 4.
    assert row["ece"] == pytest.approx(0.3825, abs=1e-6)
    # The same from a loop over the bins, written out.
    conf = [max(p) for p in probs]
    hit = [p.index(max(p)) == y for p, y in zip(probs, labels)]
    ece = 0.0
    for b in range(15):
        members = [i for i, c in enumerate(conf) if b / 15 < c <= (b + 1) / 15 or (b == 0 and c == 0)]
        if members:
            ece += len(members) / 4 * abs(sum(hit[i] for i in members) / len(members)
                                          - sum(conf[i] for i in members) / len(members))
    assert row["ece"] == pytest.approx(ece, abs=1e-6)
    nll = -(math.log(0.90) + math.log(0.04) + math.log(0.62) + math.log(0.20)) / 4
    assert row["nll"] == pytest.approx(nll, rel=1e-5)
    brier = sum(sum((p - (c == y)) ** 2 for c, p in enumerate(ps)) for ps, y in zip(probs, labels)) / 4
    assert row["brier"] == pytest.approx(brier, rel=1e-5)


def test_label_sets_have_an_ece_but_no_nll_or_brier():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    row = calibration.compute(predictions_of(probs.log(), [(0, 2), (1,)]), None)
    # Confidence 0.7 hit (bin 10), 0.6 miss (0.6 lies in (8/15, 9/15]): (0.3 + 0.6) / 2.
    assert row["ece"] == pytest.approx(0.45, abs=1e-6)
    assert row["nll"] is None and row["brier"] is None


# --- effective robustness -------------------------------------------------------------------

def logit(p):
    return math.log(p / (1 - p))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


SLOPE, INTERCEPT = 0.83, -0.41


def on_line(base_top1: float) -> float:
    return 100 * sigmoid(SLOPE * logit(base_top1 / 100) + INTERCEPT)


def test_effective_robustness_recovers_the_line_and_a_model_two_points_above():
    bases = [35.0 + 4.5 * i for i in range(12)]
    rows = [{"model": f"m{i}", "img_size": 224, "top1": on_line(x)} for i, x in enumerate(bases)]
    base_rows = [{"model": f"m{i}", "img_size": 224, "top1": x} for i, x in enumerate(bases)]
    # Two models at the same base accuracy, one 2 points above the line and one as far below
    # it in logit space: together they leave the least-squares line where it is.
    x = 66.0
    up = logit((on_line(x) + 2) / 100) - logit(on_line(x) / 100)
    rows += [{"model": "above", "img_size": 224, "top1": 100 * sigmoid(logit(on_line(x) / 100) + up)},
             {"model": "below", "img_size": 224, "top1": 100 * sigmoid(logit(on_line(x) / 100) - up)}]
    base_rows += [{"model": "above", "img_size": 224, "top1": x}, {"model": "below", "img_size": 224, "top1": x}]
    frame, note = robustness_table("shifted", "base", rows, base_rows)
    assert note is None
    found = {r["model"]: r for r in frame.iter_rows(named=True)}
    assert found["above"]["effective_robustness"] == pytest.approx(2.0, abs=1e-9)
    assert found["above"]["predicted_top1"] == pytest.approx(on_line(x), abs=1e-9)
    assert found["m3"]["slope"] == pytest.approx(SLOPE, abs=1e-9)
    assert found["m3"]["intercept"] == pytest.approx(INTERCEPT, abs=1e-9)
    assert all(abs(found[f"m{i}"]["effective_robustness"]) < 1e-9 for i in range(12))
    assert found["m3"]["models"] == 14 and frame["model"][0] == "above"

    fit = statistics.fit_line([logit(b / 100) for b in bases], [logit(on_line(b) / 100) for b in bases])
    assert (fit.slope, fit.intercept, fit.r2) == pytest.approx((SLOPE, INTERCEPT, 1.0), abs=1e-12)

    too_few, note = robustness_table("shifted", "base", rows[:9], base_rows[:9])
    assert too_few is None and "9 model(s)" in note and "at least 10" in note


def write_published(path: Path, rows: list[tuple[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "top1", "top1_err", "top5", "top5_err", "param_count", "img_size", "crop_pct", "interpolation"])
        for model, top1 in rows:
            w.writerow([model, f"{top1:.3f}", f"{100 - top1:.3f}", "99.000", "1.000", "10.00", 224, "0.875", "bicubic"])


def test_report_writes_the_robustness_file_from_imported_rows_and_says_once_when_too_few(tmp_path):
    bases = [40.0 + 3.0 * i for i in range(15)]
    folder = tmp_path / "published"
    folder.mkdir()
    write_published(folder / "results-imagenet.csv", [(f"m{i}", x) for i, x in enumerate(bases)] + [("above", 70.0)])
    write_published(folder / "results-imagenetv2-matched-frequency.csv",
                    [(f"m{i}", on_line(x)) for i, x in enumerate(bases)] + [("above", on_line(70.0) + 2)])
    write_published(folder / "results-sketch.csv", [(f"m{i}", 20.0 + i) for i in range(4)])
    out = tmp_path / "out"
    result = invoke_apart("report", "--store", str(tmp_path), "--out", str(out), "--import", str(folder))
    assert result.exit_code == 0, result.output + result.stderr
    with open(out / "robustness-imagenetv2-matched-frequency.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values()))) == ["model", "img_size", "origin", "base_top1", "top1", "predicted_top1",
                                               "effective_robustness", "slope", "intercept", "r2", "models"]
    # Published values have 3 decimals, and "above" pulls the line up a little (1/16 of 2 points).
    assert float(rows["above"]["effective_robustness"]) == pytest.approx(2.0 * 15 / 16, abs=0.15)
    assert float(rows["m0"]["slope"]) == pytest.approx(SLOPE, abs=0.05)
    assert rows["above"]["origin"] == "import" and rows["m0"]["models"] == "16"
    assert not (out / "robustness-sketch.csv").exists()
    notes = [line for line in result.stderr.splitlines() if "robustness-sketch.csv" in line]
    assert len(notes) == 1 and "4 model(s)" in notes[0], result.stderr


# --- rbench compare and tied_with_best ------------------------------------------------------

def load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "stats_report.py"
    spec = importlib.util.spec_from_file_location("stats_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "store"
    tags = load_bench().make_store(root, models=6, samples=3000, v2_samples=600, seed=4)
    return root, tags


def top1_hits(store: Path, tag: str, source: str = "imagenet"):
    for path in (store / "records").glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("predictions") and record["common"]["model"] == tag and record["cell"]["source"] == source:
            frame = pl.read_parquet(store / record["predictions"]["file"])
            return np.array([top[0] == label for top, label in zip(frame["topk_class"].to_list(), frame["label"])])
    raise AssertionError(tag)


def test_compare_on_a_synthetic_store_equals_mcnemar_computed_here(synthetic_store):
    root, tags = synthetic_store
    result = invoke_apart("compare", tags[0], tags[1], "--store", str(root), "--view", "imagenet")
    assert result.exit_code == 0, result.output + result.stderr
    a, b = top1_hits(root, tags[0]), top1_hits(root, tags[1])
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = exact_two_sided(only_a, only_b)
    verdict = [line for line in result.output.splitlines() if line.startswith("imagenet: ")]
    assert len(verdict) == 1 and f"McNemar p = {min(1.0, p):.4g}" in verdict[0], result.output
    assert f"{only_a:,}" in result.output and f"{only_b:,}" in result.output


def test_report_marks_the_models_tied_with_the_best(synthetic_store, tmp_path):
    root, tags = synthetic_store
    out = tmp_path / "out"
    result = invoke_apart("report", "--store", str(root), "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    with open(out / "metrics-imagenet.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    hits = {tag: top1_hits(root, tag) for tag in tags}
    best = max(tags, key=lambda t: (hits[t].mean(), -tags.index(t)))
    for tag in tags:
        p = min(1.0, exact_two_sided(int((hits[best] & ~hits[tag]).sum()), int((hits[tag] & ~hits[best]).sum())))
        assert float(rows[tag]["p_vs_best"]) == pytest.approx(p, rel=1e-6), tag
        assert rows[tag]["tied_with_best"] == ("true" if p >= 0.05 else "false"), tag
    assert rows[best]["tied_with_best"] == "true"
    assert {r["tied_with_best"] for r in rows.values()} == {"true", "false"}  # the sizes are chosen so
    with open(out / "results-imagenet.csv", newline="") as f:
        assert next(csv.reader(f)) == ["model", "img_size", "top1", "top1_err", "top5", "top5_err", "param_count",
                                       "crop_pct", "interpolation"]


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    for c in range(3):
        write_jpegs(root / str(c), 4, seed=c)
    return root


QUICK = ["--weights", "random", "--bench", "validate", "--workers", "0", "--img-size", "32"]


def test_run_then_compare_end_to_end_and_the_one_line_errors(tmp_path, images):
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit,test_byobnet", *QUICK, "--data-dir", str(images), "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    result = invoke_apart("compare", "test_vit", "test_byobnet", "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    verdict = [line for line in result.output.splitlines() if line.startswith("imagefolder: ")]
    a, b = top1_hits(out / "store", "test_vit@random", "imagefolder"), top1_hits(out / "store", "test_byobnet@random", "imagefolder")
    p = min(1.0, exact_two_sided(int((a & ~b).sum()), int((~a & b).sum())))
    assert len(verdict) == 1 and f"McNemar p = {p:.4g}" in verdict[0], result.output
    same = invoke_apart("compare", "test_vit@random", "test_vit", "--out", str(out))
    assert same.exit_code == 0 and "McNemar p = 1 " in same.output, same.output
    with open(out / "metrics-imagefolder.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["tied_with_best"] for r in rows} <= {"true", "false"} and all(0 <= float(r["ece"]) <= 1 for r in rows)

    unknown = invoke_apart("compare", "test_vit", "resnet50", "--out", str(out))
    assert unknown.exit_code == 2
    assert unknown.stderr.count("\n") == 1 and "no validated model 'resnet50'" in unknown.stderr, unknown.stderr

    # Another model on the first 6 images only (another listing of the data): not the same images.
    result = invoke_apart("run", "-m", "test_efficientnet", *QUICK, "--data-dir", str(images), "--out", str(out),
                    "--limit", "6")
    assert result.exit_code == 0, result.output + result.stderr
    unpaired = invoke_apart("compare", "test_vit", "test_efficientnet", "--out", str(out))
    assert unpaired.exit_code == 2
    assert unpaired.stderr.count("\n") == 1 and "not run on the same images" in unpaired.stderr, unpaired.stderr
