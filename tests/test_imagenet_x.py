"""ImageNet-X views against the imagenet-x package's own functions, on a val fixture of real names.

The fixture's files are real ImageNet val names in their wnid folders, with the labels the
package's `filename_label.csv` gives: 51 annotated images covering all 16 top factors (two of
them with no factor at all), two prototypical images and one image the package does not
annotate. A test model that can only predict the fixture's six classes runs on it through
`rbench.evaluate`; its stored predictions are then scored by the views, and the same per-sample
predictions are given to the package (`load_annotations`, `augment_model_predictions`,
`compute_factor_accuracies`, `error_ratio`). A golden file keeps the package's outputs on fixed
predictions of the same images, so that the numbers are checked without calling it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rbench
from rbench import Source, ViewSpec, statistics
from rbench.plugins.datasets import imagenet_x
from rbench.predictions import view_predictions

from . import imagenet_fixtures

pytestmark = pytest.mark.skipif(importlib.util.find_spec("imagenet_x") is None and not os.environ.get("CI"),
                                reason="needs the imagenet-x package (pip install 'rbench[imagenet-x]'); CI has it")

GOLDEN = Path(__file__).parent / "data" / "imagenet_x_golden.json"
IMG_SIZE = 64
VIEWS = {"imagenet-x": "top", "imagenet-x-multi": "multi"}

# (file name, label) as the package's filename_label.csv gives them.
VAL = (
    ("ILSVRC2012_val_00000156.JPEG", 272), ("ILSVRC2012_val_00000188.JPEG", 272),
    ("ILSVRC2012_val_00000189.JPEG", 103), ("ILSVRC2012_val_00000558.JPEG", 464),
    ("ILSVRC2012_val_00000730.JPEG", 524), ("ILSVRC2012_val_00000830.JPEG", 916),
    ("ILSVRC2012_val_00000940.JPEG", 103), ("ILSVRC2012_val_00001396.JPEG", 916),
    ("ILSVRC2012_val_00001582.JPEG", 66), ("ILSVRC2012_val_00002250.JPEG", 524),
    ("ILSVRC2012_val_00002852.JPEG", 66), ("ILSVRC2012_val_00003371.JPEG", 916),
    ("ILSVRC2012_val_00003720.JPEG", 916), ("ILSVRC2012_val_00003765.JPEG", 272),
    ("ILSVRC2012_val_00003888.JPEG", 464), ("ILSVRC2012_val_00004678.JPEG", 103),
    ("ILSVRC2012_val_00004732.JPEG", 464), ("ILSVRC2012_val_00005200.JPEG", 916),
    ("ILSVRC2012_val_00005479.JPEG", 66), ("ILSVRC2012_val_00005956.JPEG", 524),
    ("ILSVRC2012_val_00006520.JPEG", 103), ("ILSVRC2012_val_00007699.JPEG", 916),
    ("ILSVRC2012_val_00007873.JPEG", 66), ("ILSVRC2012_val_00008958.JPEG", 464),
    ("ILSVRC2012_val_00009444.JPEG", 464), ("ILSVRC2012_val_00009567.JPEG", 464),
    ("ILSVRC2012_val_00010342.JPEG", 464), ("ILSVRC2012_val_00012230.JPEG", 272),
    ("ILSVRC2012_val_00012852.JPEG", 464), ("ILSVRC2012_val_00014672.JPEG", 524),
    ("ILSVRC2012_val_00014897.JPEG", 524), ("ILSVRC2012_val_00016066.JPEG", 66),
    ("ILSVRC2012_val_00016425.JPEG", 103), ("ILSVRC2012_val_00019085.JPEG", 103),
    ("ILSVRC2012_val_00019232.JPEG", 524), ("ILSVRC2012_val_00020407.JPEG", 464),
    ("ILSVRC2012_val_00022255.JPEG", 916), ("ILSVRC2012_val_00023182.JPEG", 103),
    ("ILSVRC2012_val_00023457.JPEG", 524), ("ILSVRC2012_val_00024992.JPEG", 103),
    ("ILSVRC2012_val_00026216.JPEG", 524), ("ILSVRC2012_val_00026228.JPEG", 272),
    ("ILSVRC2012_val_00027790.JPEG", 66), ("ILSVRC2012_val_00027998.JPEG", 464),
    ("ILSVRC2012_val_00030417.JPEG", 464), ("ILSVRC2012_val_00030630.JPEG", 464),
    ("ILSVRC2012_val_00033674.JPEG", 66), ("ILSVRC2012_val_00042448.JPEG", 103),
    ("ILSVRC2012_val_00043563.JPEG", 66), ("ILSVRC2012_val_00043809.JPEG", 66),
    ("ILSVRC2012_val_00045339.JPEG", 524), ("ILSVRC2012_val_00047406.JPEG", 103),
    ("ILSVRC2012_val_00048162.JPEG", 272), ("ILSVRC2012_val_00048587.JPEG", 464),
)
PROTOTYPICAL = {"ILSVRC2012_val_00001396.JPEG", "ILSVRC2012_val_00003888.JPEG"}
NOT_ANNOTATED = {"ILSVRC2012_val_00005956.JPEG"}
NO_FACTOR = {"ILSVRC2012_val_00026228.JPEG", "ILSVRC2012_val_00007699.JPEG"}
CLASSES = sorted({label for _, label in VAL})


def write_val(root: Path) -> Path:
    """The fixture in the val layout (`<wnid>/<file name>`), a small real JPEG each."""
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    rng = np.random.default_rng(28)
    for name, label in VAL:
        h, w = rng.integers(24, 48, size=2)
        pixels = np.clip(rng.integers(0, 256, size=3) + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
        (root / synsets[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / synsets[label] / name, quality=80)
    return root


def package_outputs(which: str, predicted: dict[str, int]) -> dict[str, dict[str, float]]:
    """The package's accuracy per factor (and `average`) and error ratio per factor for these
    predictions (file name -> predicted class), as plain numbers (NaN as None)."""
    import pandas as pd
    from imagenet_x import FACTORS, augment_model_predictions, compute_factor_accuracies, error_ratio, load_annotations

    frame = pd.DataFrame({"file_name": list(predicted), "predicted_class": list(predicted.values()),
                          "predicted_probability": 1.0})
    with warnings.catch_warnings():  # pandas' deprecations inside the package, not ours to fix
        warnings.simplefilter("ignore")
        augmented = augment_model_predictions(load_annotations(which_factor=which), {"model": frame})
    accuracies = compute_factor_accuracies(augmented, FACTORS, error_type="is_correct")
    ratios = error_ratio(accuracies)

    def plain(row) -> dict[str, float | None]:
        return {k: None if math.isnan(v) else float(v) for k, v in row.items()}

    return {"accuracy": plain(accuracies.loc["model", [*FACTORS, "average"]]), "error_ratio": plain(ratios.loc["model"])}


def assert_equal_to_package(score: dict[str, float], expected: dict[str, dict[str, float]]) -> None:
    assert score["top1"] / 100 == pytest.approx(expected["accuracy"]["average"], abs=1e-12)
    for factor in imagenet_x.FACTORS:
        want_accuracy, want_ratio = expected["accuracy"][factor], expected["error_ratio"][factor]
        if want_accuracy is None:
            assert score[f"{factor}_count"] == 0 and math.isnan(score[f"{factor}_top1"]), factor
            assert math.isnan(score[f"{factor}_error_ratio"]), factor
        else:
            assert score[f"{factor}_top1"] / 100 == pytest.approx(want_accuracy, abs=1e-12), factor
            assert score[f"{factor}_error_ratio"] == pytest.approx(want_ratio, rel=1e-12), factor


def read_annotations(which: str) -> dict[str, dict]:
    """The package's annotation file and prototypes, read here as plain JSON lines and text."""
    folder = Path(importlib.util.find_spec("imagenet_x").submodule_search_locations[0]) / "annotations"
    rows = [json.loads(line) for line in (folder / f"imagenet_x_val_{which}_factor.jsonl").read_text().splitlines() if line]
    prototypes = set((folder / "prototypical_paths.csv").read_text().split()[1:])
    return {row["file_name"]: row for row in rows if row["file_name"] not in prototypes}


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    """A pinned test model's run on the fixture: its store's frame and source, and its
    per-sample predictions as `Report.predictions` gives them."""
    from rbench.registry import get_registry
    from rbench.store import Store

    root = write_val(tmp_path_factory.mktemp("imagenet") / "val")
    weights = tmp_path_factory.mktemp("weights") / "byob.safetensors"
    imagenet_fixtures.pinned_head_model(9, CLASSES, weights)
    out = tmp_path_factory.mktemp("out")
    report = rbench.evaluate("test_byobnet", datasets="imagenet", bench="validate", out=out, data={"imagenet": root},
                             weights=str(weights), allow_partial=True, img_size=IMG_SIZE, batch_size=64, workers=0,
                             executor="local")
    store = Store(out / "store")
    (record,) = [r for r in store.records() if r.cell.kind == "validate"]
    source = store.get_source(record.source_listing, get_registry())
    frame = store.get_predictions(record, label_sets=False)
    model = report.tables["results-imagenet"]["model"][0]
    return source, frame, report.predictions(model, view="imagenet")


def test_views_keep_the_annotated_images_without_the_prototypical_ones(val_run):
    source, _, _ = val_run
    views = {view.name: view for view in imagenet_x.make(source)}
    assert sorted(views) == sorted(VIEWS)
    names = [Path(path).name for path, _ in source.samples]
    expected = sorted(i for i, name in enumerate(names) if name not in PROTOTYPICAL | NOT_ANNOTATED)
    for view in views.values():
        assert list(view.samples) == expected and view.labels is None and view.classes is None
        assert NO_FACTOR <= {names[i] for i in view.samples}  # in the average, in no factor
        assert list(view.columns[:3]) == ["model", "img_size", "top1"]
        assert {f"{factor}_{field}" for factor in imagenet_x.FACTORS for field in imagenet_x.FACTOR_FIELDS} <= set(view.columns)


@pytest.mark.parametrize("view_name", sorted(VIEWS))
def test_scores_equal_the_package_functions_on_the_stored_predictions(val_run, view_name):
    source, frame, predictions = val_run
    (view,) = [v for v in imagenet_x.make(source) if v.name == view_name]
    score = view.score(view_predictions(frame, source, view))
    predicted = {Path(file).name: top1 for file, top1 in zip(predictions["file"], predictions["top1"])}
    assert len(predicted) == len(VAL)
    expected = package_outputs(VIEWS[view_name], predicted)
    # Not a degenerate fixture: the model is right on some images and wrong on others, and
    # the factors' accuracies differ.
    assert 0 < score["top1"] < 100
    assert len({v for v in expected["accuracy"].values() if v is not None}) > 3
    assert_equal_to_package(score, expected)
    # Counts and intervals by brute force over the annotations read here.
    rows = read_annotations(VIEWS[view_name])
    correct = {Path(file).name: bool(ok) for file, ok in zip(predictions["file"], predictions["correct"])}
    assert score["count"] == sum(name in rows for name in correct) == len(VAL) - 3
    for factor in imagenet_x.FACTORS:
        hits = [correct[name] for name in correct if name in rows and rows[name][factor]]
        assert score[f"{factor}_count"] == len(hits), factor
        low, high = statistics.wilson_interval(sum(hits), len(hits))
        if hits:
            assert (score[f"{factor}_top1_low"], score[f"{factor}_top1_high"]) == pytest.approx((100 * low, 100 * high), abs=1e-9)


def test_one_factors_accuracy_by_a_loop(val_run):
    source, frame, predictions = val_run
    (view,) = [v for v in imagenet_x.make(source) if v.name == "imagenet-x"]
    score = view.score(view_predictions(frame, source, view))
    rows = read_annotations("top")
    right = total = 0
    for file, top1, label in zip(predictions["file"], predictions["top1"], predictions["label"]):
        row = rows.get(Path(file).name)
        if row is not None and row["pose"] == 1:
            assert row["class"] == label
            total += 1
            right += int(top1 == row["class"])
    assert total == 7 and 0 < right < total
    assert score["pose_top1"] == pytest.approx(100 * right / total, abs=1e-12)
    assert score["pose_count"] == total


def golden_source() -> Source:
    root = Path("/val")
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    samples = [(str(root / synsets[label] / name), label) for name, label in VAL]
    return Source(name="imagenet", root=root, samples=samples, views=[ViewSpec(name="imagenet")])


def golden_predictions() -> dict[str, int]:
    """Fixed predictions of the fixture's images: right on every third, else the next class."""
    return {name: label if i % 3 == 0 else CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]
            for i, (name, label) in enumerate(VAL)}


def test_scores_equal_the_golden_package_outputs():
    """The package's outputs kept in tests/data, on fixed predictions given to a view as rbench's
    reducer stores them."""
    import torch

    from rbench.predictions import Reducer

    golden = json.loads(GOLDEN.read_text())
    assert golden["package"] == "imagenet-x 0.0.7" and golden["predictions"] == golden_predictions()
    source = golden_source()
    predicted = list(golden["predictions"].values())
    logits = torch.full((len(VAL), 1000), -5.0)
    logits[torch.arange(len(VAL)), torch.tensor(predicted)] = 5.0
    reducer = Reducer(source)
    reducer.add(logits, torch.arange(len(VAL)), torch.ones(len(VAL), dtype=torch.bool))
    frame = reducer.frame()
    views = imagenet_x.make(source)
    assert sorted(v.name for v in views) == sorted(VIEWS)
    for view in views:
        assert_equal_to_package(view.score(view_predictions(frame, source, view)), golden[VIEWS[view.name]])


def test_golden_file_is_the_packages_output():
    """Kept honest: the golden numbers are what the installed package computes."""
    pytest.importorskip("pandas")
    golden = json.loads(GOLDEN.read_text())
    for which in VIEWS.values():
        assert package_outputs(which, golden["predictions"]) == golden[which]


def test_no_views_where_the_images_are_not_the_annotated_val_set(monkeypatch):
    source = golden_source()
    # Not val file names (an ImageFolder of other pictures): nothing to match.
    renamed = Source(name="imagenet", root=source.root, views=source.views,
                     samples=[(f"/val/x/img_{i}.jpg", label) for i, (_, label) in enumerate(source.samples)])
    assert imagenet_x.make(renamed) == []
    # One annotated image under another class: the labels are not the annotated ones.
    relabelled = Source(name="imagenet", root=source.root, views=source.views,
                        samples=[(path, label + 1 if i == 0 else label) for i, (path, label) in enumerate(source.samples)])
    assert imagenet_x.make(relabelled) == []
    # The package missing: no views, and one line that says how to install it.
    monkeypatch.setattr(imagenet_x, "annotation_folder", lambda: None)
    assert imagenet_x.make(source) == []
    (line,) = imagenet_x.unavailable().splitlines()
    assert "pip install 'rbench[imagenet-x]'" in line


@pytest.mark.skipif(not hasattr(rbench, "AddedViews"), reason="the core has no added views yet")
def test_hook_declares_the_views_over_imagenet_val(monkeypatch):
    (added,) = imagenet_x.rbench_added_views()
    assert added.source == "imagenet" and dict(added.views) == {"imagenet-x": None, "imagenet-x-multi": None}
    assert added.make is imagenet_x.make and "not installed" not in added.description
    monkeypatch.setattr(imagenet_x, "annotation_folder", lambda: None)
    (missing,) = imagenet_x.rbench_added_views()
    assert "pip install 'rbench[imagenet-x]'" in missing.description
