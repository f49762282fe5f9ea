"""Shape bias on model-vs-human's cue-conflict images (`-d cue-conflict`): the 16-class decision
and the biases against a brute-force oracle on a run, against model-vs-human's own functions
(golden values), the layout checks, the rows rebuilt from the store, and `Predictions.scores`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rbench import DataRequest, Source, ViewSpec
from rbench.predictions import Reducer, view_predictions
from rbench.plugins.datasets import cue_conflict

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_apart
from .test_imagenet import IMG_SIZE, oracle_logits

GOLDEN = Path(__file__).parent / "data" / "cue_conflict_golden.json"
# The classes the oracle run's model can predict: one or two of four categories each.
PREDICTED = {"airplane": (404,), "clock": (409, 530), "knife": (499,), "oven": (766,)}
TEXTURES = tuple(PREDICTED)
PER_FOLDER = 4


def fixture_names() -> list[tuple[str, str]]:
    """(shape folder, file name) of the fixture's images, in the published naming: each shape
    category drawn with the four textures in turn (so a shape among them meets its own texture
    once), but bird and dog only with their own (no conflict: no shape bias for them)."""
    names = []
    for s, shape in enumerate(cue_conflict.CATEGORIES):
        for j in range(PER_FOLDER):
            texture = shape if shape in ("bird", "dog") else TEXTURES[(s + j) % len(TEXTURES)]
            names.append((shape, f"{shape}{j + 1}-{texture}{j + 2}.png"))
    return names


def write_fixture(root: Path) -> Path:
    """The fixture in model-vs-human's layout: `cue-conflict/<shape>/<shape><n>-<texture><m>.png`."""
    from PIL import Image

    folder = root / "cue-conflict"
    rng = np.random.default_rng(29)
    for shape, name in fixture_names():
        (folder / shape).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(72, 72, 3), dtype=np.uint8)).save(folder / shape / name)
    return folder


def run(folder: Path, out: Path, weights: Path | str, *extra: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cue_conflict, "EXPECTED_IMAGES", len(fixture_names()))
        return invoke_apart("run", "-m", "test_byobnet", "--weights", str(weights), "-d", "cue-conflict",
                            "--data", f"cue-conflict={folder}", "--bench", "validate", "--img-size", str(IMG_SIZE),
                            "--batch-size", "16", "--workers", "0", "--out", str(out), *extra)


# --- the oracle: a brute-force loop over the model's own logits -----------------------------

def brute_force(logits: torch.Tensor, names: list[tuple[str, str]]) -> dict[str, float]:
    """The columns as model-vs-human defines them, one image and one category at a time, in
    float64, from the classes listed in model-vs-human's `human_categories.py`."""
    shape_hits = {c: 0 for c in cue_conflict.CATEGORIES}
    texture_hits = {c: 0 for c in cue_conflict.CATEGORIES}
    right16 = conflicts = top1 = top5 = 0
    for row, (shape, name) in zip(logits.double().softmax(dim=1).tolist(), names):
        texture = name.split("-")[1].split(".")[0].rstrip("0123456789")
        means = {c: sum(row[i] for i in classes) / len(classes) for c, classes in cue_conflict.CATEGORY_CLASSES.items()}
        decision = max(means, key=lambda c: means[c])
        right16 += decision == shape
        ranked = sorted(range(1000), key=lambda c: -row[c])
        top1 += ranked[0] in cue_conflict.CATEGORY_CLASSES[shape]
        top5 += any(c in cue_conflict.CATEGORY_CLASSES[shape] for c in ranked[:5])
        if shape != texture:
            conflicts += 1
            shape_hits[shape] += decision == shape
            texture_hits[shape] += decision == texture
    shape_total, texture_total = sum(shape_hits.values()), sum(texture_hits.values())
    n = len(names)
    expected = {"shape_matches": shape_total, "texture_matches": texture_total, "conflict_count": conflicts,
                "shape_bias": shape_total / (shape_total + texture_total),
                "texture_bias": texture_total / (shape_total + texture_total),
                "top1_16": 100 * right16 / n, "count": n, "top1": 100 * top1 / n, "top5": 100 * top5 / n}
    for c in cue_conflict.CATEGORIES:
        both = shape_hits[c] + texture_hits[c]
        expected[f"shape_bias_{c}"] = shape_hits[c] / both if both else math.nan
    return expected


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    """The fixture run once by a test_byobnet that predicts only `PREDICTED`'s classes (its
    head scaled up so that its decisions differ between images). Returns (folder, out, logits)."""
    base = tmp_path_factory.mktemp("cue-conflict")
    folder = write_fixture(base)
    weights = base / "model.safetensors"
    model = imagenet_fixtures.pinned_head_model(7, [c for classes in PREDICTED.values() for c in classes], weights)
    result = run(folder, base / "out", weights)
    assert result.exit_code == 0, result.output + result.stderr
    files = [folder / shape / name for shape, name in fixture_names()]
    return folder, base / "out", oracle_logits(model, files)


def assert_row_matches(row: dict[str, str], expected: dict[str, float]) -> None:
    for column, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert row[column] == "", column
        else:
            assert float(row[column]) == pytest.approx(value, abs=1e-3), column


def test_run_scores_shape_bias_as_the_brute_force_oracle(oracle_run):
    folder, out, logits = oracle_run
    (row,) = csv_rows(out / "results-cue-conflict.csv")
    expected = brute_force(logits, fixture_names())
    # The fixture exercises every part: shape and texture matches, and categories without either.
    assert expected["shape_matches"] > 0 and expected["texture_matches"] > 0
    assert 0 < sum(math.isnan(expected[f"shape_bias_{c}"]) for c in cue_conflict.CATEGORIES) < 16
    assert expected["conflict_count"] == 64 - 4 - 2 * PER_FOLDER
    assert_row_matches(row, expected)
    assert list(row)[:len(cue_conflict.COLUMNS)] == list(cue_conflict.COLUMNS)
    # The source keeps its full scores without being asked.
    (parquet,) = (out / "store" / "predictions").glob("*.parquet")
    assert "scores" in pl.read_parquet(parquet).columns


def test_report_rebuilds_the_rows_from_the_store_alone(oracle_run, tmp_path):
    folder, out, _ = oracle_run
    moved = tmp_path / "images-gone"
    shutil.move(str(folder), str(moved))  # no image left: the report reads the store only
    try:
        result = invoke_apart("report", "--store", str(out / "store"), "--out", str(tmp_path / "report"))
    finally:
        shutil.move(str(moved), str(folder))
    assert result.exit_code == 0, result.output + result.stderr
    assert csv_rows(tmp_path / "report" / "results-cue-conflict.csv") == csv_rows(out / "results-cue-conflict.csv")


# --- the layout -----------------------------------------------------------------------------

def test_a_missing_category_folder_is_one_line_before_any_model(tmp_path):
    folder = write_fixture(tmp_path)
    shutil.rmtree(folder / "oven")
    shutil.rmtree(folder / "bear")
    result = run(folder, tmp_path / "out", "random")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "lacks the category folders bear, oven" in line and str(folder) in line
    assert not (tmp_path / "out" / "store").exists() or not list((tmp_path / "out" / "store").rglob("*.parquet"))


def test_a_file_not_named_shape_texture_is_one_line(tmp_path):
    folder = write_fixture(tmp_path)
    shutil.copy(sorted((folder / "cat").iterdir())[0], folder / "cat" / "cat_photo.png")
    result = run(folder, tmp_path / "out", "random")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "cat_photo.png is not named <shape><n>-<texture><m>.png" in line


def test_a_partial_folder_needs_allow_partial(tmp_path):
    folder = write_fixture(tmp_path)
    sorted((folder / "cat").iterdir())[0].unlink()
    result = run(folder, tmp_path / "out", "random")
    assert result.exit_code == 2
    assert "is partial: 63 of 64 images" in result.stderr and "--allow-partial" in result.stderr


# --- model-vs-human's own numbers -----------------------------------------------------------

def golden_logits(n: int) -> np.ndarray:
    """Deterministic logits `[n, 1000]` (integer arithmetic, the same on every machine): a spread
    of background values, one class boosted per image (of its shape, its texture or another
    category in turn), and every dog class raised on some images, so that the mean over a
    category and its sum decide differently."""
    classes = np.arange(1000)
    logits = np.zeros((n, 1000), dtype=np.float32)
    names = fixture_names()
    for i, (shape, name) in enumerate(names):
        logits[i] = ((i * 31 + classes * 17) % 97) / 20.0
        texture = name.split("-")[1].split(".")[0].rstrip("0123456789")
        target = (shape, texture, cue_conflict.CATEGORIES[(i * 5) % 16])[i % 3]
        boosted = cue_conflict.CATEGORY_CLASSES[target]
        logits[i, boosted[i % len(boosted)]] += 7.0
        if i % 4 == 0:
            logits[i, list(cue_conflict.CATEGORY_CLASSES["dog"])] += 4.0
    return logits


def golden_predictions(tmp_path: Path) -> tuple[Source, object]:
    """The fixture's listed source (empty files in the published layout: nothing is read) and its
    view's `Predictions` for `golden_logits`, made as a run makes them: the reducer keeping full
    scores, then the view read back from its frame."""
    folder = tmp_path / "cue-conflict"
    for shape, name in fixture_names():
        (folder / shape).mkdir(parents=True, exist_ok=True)
        (folder / shape / name).write_bytes(b"")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cue_conflict, "EXPECTED_IMAGES", len(fixture_names()))
        source = cue_conflict.load(DataRequest(path=folder, cache_dir=tmp_path))
    n = len(source.samples)
    reducer = Reducer(source, keep_scores=True)
    reducer.add(torch.as_tensor(golden_logits(n)), torch.arange(n), torch.ones(n, dtype=torch.bool))
    return source, view_predictions(reducer.frame(), source, source.views[0])


def test_decision_and_biases_equal_model_vs_human_golden(tmp_path):
    """`tests/data/cue_conflict_golden.json`: model-vs-human's `ImageNetProbabilitiesTo16ClassesMapping`
    and `ShapeBias.analysis` (per category: grouped by category, as its plots do) run on the
    probability vectors rbench keeps for these images (exp of the stored float16 log-probabilities)."""
    golden = json.loads(GOLDEN.read_text())
    assert {c: list(v) for c, v in cue_conflict.CATEGORY_CLASSES.items()} == golden["category_indices"]
    source, predictions = golden_predictions(tmp_path)
    assert [Path(p).name for p, _ in source.samples] == golden["image_names"]
    decisions = cue_conflict.sixteen_class_decision(predictions.scores)
    assert [cue_conflict.CATEGORIES[d] for d in decisions] == golden["decisions"]
    row = source.views[0].score(predictions)
    n = len(source.samples)
    assert row["shape_bias"] == pytest.approx(golden["shape_bias"]["shape-bias"], abs=1e-12)
    assert row["texture_bias"] == pytest.approx(1.0 - golden["shape_bias"]["shape-bias"], abs=1e-12)
    assert row["shape_matches"] / n == pytest.approx(golden["shape_bias"]["fraction-correct-shape"], abs=1e-12)
    assert row["texture_matches"] / n == pytest.approx(golden["shape_bias"]["fraction-correct-texture"], abs=1e-12)
    assert row["top1_16"] == pytest.approx(100.0 * golden["accuracy_top1_16"], abs=1e-9)
    for category, value in golden["per_category_shape_bias"].items():
        if value is None:  # the reference divides zero by zero there
            assert math.isnan(row[f"shape_bias_{category}"]), category
        else:
            assert row[f"shape_bias_{category}"] == pytest.approx(value, abs=1e-12), category


# --- Predictions.scores ---------------------------------------------------------------------

def _no_columns(predictions):
    return {}


def test_predictions_carry_the_full_scores_only_from_a_scores_file():
    """A view with its own score (their one reader) gets the full scores; others never do."""
    logits = torch.randn(6, 1000, generator=torch.Generator().manual_seed(3)) * 5
    source = Source(name="s", root=Path("."), samples=[(f"img{i}", i) for i in range(6)],
                    views=[ViewSpec(name="v", samples=[1, 3, 4], classes=[1, 3, 4, 7], score=_no_columns)])
    frames = {}
    for keep in (False, True):
        reducer = Reducer(source, keep_scores=keep)
        reducer.add(logits, torch.arange(6), torch.ones(6, dtype=torch.bool))
        frames[keep] = reducer.frame()
    assert view_predictions(frames[False], source, source.views[0]).scores is None
    plain = ViewSpec(name="w", samples=[1, 3, 4], classes=[1, 3, 4, 7])
    assert view_predictions(frames[True], source, plain).scores is None
    scores = view_predictions(frames[True], source, source.views[0]).scores
    assert scores.dtype == np.float32 and scores.shape == (3, 1000)
    # every class's log-probability (not the view's restriction), of the view's samples, in float16
    expected = torch.log_softmax(logits.double(), dim=1)[[1, 3, 4]].numpy()
    assert np.abs(scores - expected).max() <= np.abs(expected).max() * 2.0**-11 + 1e-5
