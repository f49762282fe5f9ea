"""ImageNet-O: its folder checked, and AUPR against ImageNet val's images of its 200 classes, from
the stored predictions, against a brute-force count and the reference's own function."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rbench.plugins.datasets import imagenet_o

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_run, write_jpegs

MODELS = ("test_byobnet", "test_efficientnet")
GOLDEN = Path(__file__).parent / "data" / "imagenet_o_golden.json"


def _layout(root: Path, wnids, per_class: int, seed: int) -> Path:
    for k, wnid in enumerate(wnids):
        write_jpegs(root / wnid, per_class, seed=seed + k, min_side=24, max_side=40)
    return root


def imagenet_o_folder(root: Path) -> Path:
    """The published layout in miniature: the 200 wnid folders and the README beside them."""
    _layout(root, imagenet_o.WNIDS, 1, seed=1000)
    (root / "README.txt").write_text("ImageNet-O\n")
    return root


def val_folder(root: Path) -> Path:
    """ImageNet val's folders of ImageNet-O's classes (two images each) and a few others."""
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    others = [w for w in synsets if w not in set(imagenet_o.WNIDS)][:5]
    return _layout(root, [*imagenet_o.WNIDS, *others], 2, seed=0)


def run(*args: str):
    return subprocess.run([sys.executable, "-m", "rbench", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagenet-o")
    o, val, out = imagenet_o_folder(tmp / "imagenet-o"), val_folder(tmp / "val"), tmp / "out"
    result = invoke_run("-m", ",".join(MODELS), "--weights", "random", "-d", "imagenet,imagenet-o",
                        "--data", f"imagenet={val}", "--data", f"imagenet-o={o}", "--allow-partial",
                        "--keep", "imagenet=scores", "--bench", "validate", "--img-size", "32", "--workers", "0",
                        "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def _max_probs(store: Path, model: str, source: str) -> np.ndarray:
    """Brute force from the predictions files: each sample's largest softmax probability over
    ImageNet-O's 200 classes (ImageNet-O's restricted columns; val's full float16 scores)."""
    classes = sorted(imagenet_fixtures.info_lines("imagenet_synsets.txt").index(w) for w in imagenet_o.WNIDS)
    for record in (store / "records").glob("*.json"):
        data = json.loads(record.read_text())
        if (data["cell"]["model"], data["cell"]["source"]) != (model, source):
            continue
        frame = pl.read_parquet(store / data["predictions"]["file"])
        found = []
        for row in frame.iter_rows(named=True):
            if source == "imagenet-o":
                found.append(math.exp(row["imagenet-o/topk_logp"][0]))
            elif row["label"] in classes:
                logp = np.asarray(row["scores"], dtype=np.float64)[classes]
                found.append(float(np.exp(logp.max() - np.logaddexp.reduce(logp))))
        return np.asarray(found)
    raise AssertionError(f"no record of {model} on {source}")


def brute_force_aupr(outside: np.ndarray, inside: np.ndarray) -> float:
    """Average precision with ImageNet-O positive and the score -max probability: at each distinct
    threshold t, from the highest, precision and recall of `score >= t`, recall gains weighted."""
    scores, positive = np.r_[-outside, -inside], np.r_[np.ones(len(outside)), np.zeros(len(inside))]
    total, recall_before = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        chosen = scores >= t
        hits = positive[chosen].sum()
        recall = hits / len(outside)
        total += (recall - recall_before) * hits / chosen.sum()
        recall_before = recall
    return 100.0 * total


def aupr_rows(path: Path) -> dict[str, dict[str, str]]:
    return {row["model"]: row for row in csv_rows(path)}


def test_aupr_is_the_brute_force_average_precision_of_the_stored_probabilities(ran):
    """Each model's AUPR pairs its ImageNet-O predictions with its own val images of the 200
    classes (400 here), as a brute-force loop over the thresholds counts it."""
    rows = aupr_rows(ran / "results-imagenet-o.csv")
    values = {}
    for model in MODELS:
        outside = _max_probs(ran / "store", model, "imagenet-o")
        inside = _max_probs(ran / "store", model, "imagenet")
        assert (len(outside), len(inside)) == (200, 400)
        row = rows[f"{model}@random"]
        assert (row["in_count"], row["out_count"]) == ("400", "200")
        values[model] = float(row["aupr"])
        # val's probabilities come from float16 scores: rbench's float32 sums may order a near tie otherwise
        assert values[model] == pytest.approx(brute_force_aupr(outside, inside), abs=2e-3)
    assert values[MODELS[0]] != values[MODELS[1]]  # each model paired with its own val row
    assert "imagenet_o_max_probs" not in (ran / "results-imagenet-o.csv").read_text().splitlines()[0]


def test_aupr_equals_the_reference_function_on_golden_scores():
    """The reference's `calibration_tools.get_measures` (scikit-learn's average precision) on
    fixed scores, ties included, and on this fixture's per-sample scores: rbench's function gives
    the same AUPR."""
    golden = json.loads(GOLDEN.read_text())
    assert len(golden["cases"]) >= 3
    for case in golden["cases"]:
        ours = imagenet_o.average_precision(np.asarray(case["out_score"]), np.asarray(case["in_score"]))
        assert ours == pytest.approx(case["aupr"], abs=1e-12), case["name"]


def test_report_rebuilds_the_aupr_rows_from_the_store_alone(ran, tmp_path):
    report = tmp_path / "report"
    result = run("report", "--store", str(ran / "store"), "--out", str(report))
    assert result.returncode == 0, result.stderr
    assert (report / "results-imagenet-o.csv").read_text() == (ran / "results-imagenet-o.csv").read_text()


def test_a_model_without_its_val_row_gets_an_empty_aupr_and_one_note(tmp_path):
    o = imagenet_o_folder(tmp_path / "imagenet-o")
    out = tmp_path / "out"
    result = invoke_run("-m", MODELS[0], "--weights", "random", "-d", "imagenet-o", "--data", f"imagenet-o={o}",
                        "--allow-partial", "--bench", "validate", "--img-size", "32", "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    row = aupr_rows(out / "results-imagenet-o.csv")[f"{MODELS[0]}@random"]
    assert (row["aupr"], row["in_count"], row["out_count"]) == ("", "", "200")
    report = run("report", "--store", str(out / "store"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    notes = [line for line in report.stderr.splitlines() + report.stdout.splitlines() if "aupr is empty" in line]
    assert len(notes) == 1 and f"{MODELS[0]}@random" in notes[0] and "--keep imagenet=scores" in notes[0]


@pytest.mark.parametrize("damage, message", [
    ("extra", "n01440764"),
    ("missing", "partial: 199 of 2,000 images, 199 of 200 class folders, no folder n01443537"),
])
def test_a_wrong_layout_is_one_line_naming_it_before_any_model_runs(tmp_path, damage, message):
    o = imagenet_o_folder(tmp_path / "imagenet-o")
    if damage == "extra":
        write_jpegs(o / "n01440764", 1, seed=5)  # tench: an ImageNet class, not ImageNet-O's
    else:
        for path in (o / "n01443537").iterdir():
            path.unlink()
        (o / "n01443537").rmdir()
    result = run("run", "-m", MODELS[0], "--weights", "random", "-d", "imagenet-o", "--data", f"imagenet-o={o}",
                 "--bench", "validate", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(o) in lines[0], result.stderr
