"""ObjectNet on a miniature of the published objectnet-1.0 layout, against an oracle that crops,
forwards and maps the predictions itself, as ObjectNet's own evaluation code
(abarbu/objectnet-template-pytorch) does; the `val-on-objectnet-classes` view of ImageNet val."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_apart, invoke_run
from .test_imagenet import IMG_SIZE, checkpoint_row

# A few of ObjectNet's 113 scored folders with their ImageNet classes, as its published mapping
# (mappings/objectnet_to_imagenet_1k.json) lists them: alarm_clock is two ImageNet classes.
FOLDERS = {"alarm_clock": {409, 530}, "banana": {954}, "backpack": {414}, "chair": {423, 559, 765}}
OTHER = "air_freshener"  # one of ObjectNet's 200 classes that do not overlap ImageNet: not scored
# What the test model can predict: the classes above and some ImageNet classes mapped to no ObjectNet class.
FAVOURED = sorted(set().union(*FOLDERS.values()) | {1, 2, 3})
PER_FOLDER = 5
BORDER = 2


def png_with_border(path, rng: np.random.Generator) -> None:
    """A PNG with a 2-pixel red frame around random content, as ObjectNet's images are framed."""
    height, width = rng.integers(40, 90, size=2)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    for frame in (pixels[:BORDER], pixels[-BORDER:], pixels[:, :BORDER], pixels[:, -BORDER:]):
        frame[...] = (255, 0, 0)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def objectnet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("objectnet") / "objectnet-1.0"
    rng = np.random.default_rng(3)
    for folder in [*FOLDERS, OTHER]:
        (root / "images" / folder).mkdir(parents=True)
        for i in range(PER_FOLDER):
            png_with_border(root / "images" / folder / f"{folder[:3]}{i:04d}.png", rng)
    (root / "mappings").mkdir()
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "byob.safetensors"
    return imagenet_fixtures.pinned_head_model(11, FAVOURED, path), path


def oracle_logits(model, files) -> torch.Tensor:
    """The frame cut off as a numpy slice, then timm's eval transform and a plain forward."""
    config = resolve_data_config({"img_size": IMG_SIZE}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    images = [transform(Image.fromarray(np.asarray(Image.open(f).convert("RGB"))[BORDER:-BORDER, BORDER:-BORDER]))
              for f in files]
    with torch.no_grad():
        return model(torch.stack(images))


def objectnet_score(logits, labels) -> tuple[str, str]:
    """ObjectNet's rule: the 5 best of the 1000 classes, each mapped to its ObjectNet class (or
    none); top-1 right when the first maps to the image's class, top-5 when any does."""
    to_objectnet = {c: name for name, ids in FOLDERS.items() for c in ids}
    right1 = right5 = 0
    for scores, label in zip(logits.tolist(), labels):
        mapped = [to_objectnet.get(c) for c in sorted(range(1000), key=lambda c: -scores[c])[:5]]
        right1 += mapped[0] == label
        right5 += label in mapped
    return f"{100 * right1 / len(labels):.3f}", f"{100 * right5 / len(labels):.3f}"


def run(root, weights, out, *extra):
    return invoke_run("-m", "test_byobnet", "--weights", str(weights), "-d", "objectnet", "--data",
                      f"objectnet={root}", "--bench", "validate", "--img-size", str(IMG_SIZE), "--workers", "0",
                      "--out", str(out), *extra)


def test_objectnet_matches_the_oracle_and_report_rebuilds_it(objectnet_root, model_file, tmp_path):
    model, weights = model_file
    out = tmp_path / "out"
    result = run(objectnet_root, weights, out, "--allow-partial")
    assert result.exit_code == 0, result.output

    files = [f for folder in FOLDERS for f in sorted((objectnet_root / "images" / folder).iterdir())]
    labels = [f.parent.name for f in files]
    top1, top5 = objectnet_score(oracle_logits(model, files), labels)
    row = {r["model"]: r for r in csv_rows(out / "results-objectnet.csv")}[checkpoint_row("test_byobnet", weights)]
    assert (row["top1"], row["top5"]) == (top1, top5)
    assert 0 < float(top5) < 100  # the mapping and the crop decide the numbers

    report = tmp_path / "report"
    result = invoke_apart("report", "--store", str(out / "store"), "--out", str(report))
    assert result.exit_code == 0, result.output
    assert csv_rows(report / "results-objectnet.csv") == csv_rows(out / "results-objectnet.csv")


@pytest.mark.parametrize("case, expected", [
    ("no-images", "has no images/ folder"),
    ("unknown-folder", "has the folder 'not_a_class', which is not an ObjectNet class"),
    ("missing-classes", "lacks 109 of ObjectNet's 113 scored class folders ('band_aid'"),
])
def test_bad_layout_is_one_line_before_any_model_runs(objectnet_root, tmp_path, case, expected):
    import shutil

    root = tmp_path / "objectnet-1.0"
    if case == "no-images":
        (root / "mappings").mkdir(parents=True)
    else:
        shutil.copytree(objectnet_root, root)
        if case == "unknown-folder":
            (root / "images" / "not_a_class").mkdir()
            png_with_border(root / "images" / "not_a_class" / "x.png", np.random.default_rng(0))
    # random weights: no model file is read before the layout fails
    result = invoke_run("-m", "test_byobnet", "--weights", "random", "-d", "objectnet",
                        "--data", f"objectnet={root}", "--bench", "validate", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output


def golden_logits(case) -> torch.Tensor:
    """A case's logits as the golden file describes them: -1 - c/1024 for every class c, then the listed classes set."""
    row = torch.tensor([-1.0 - c / 1024.0 for c in range(1000)])
    for c, value in case["logits"].items():
        row[int(c)] = float(value)
    return row


def test_scores_equal_the_references_golden_values():
    """rbench's views, read through the predictions reducer, give the numbers that ObjectNet's
    evaluation code and imagenet-testbed's functions gave on the same logits (tests/data), where
    the definitions coincide; the one that differs (imagenet-testbed's top-5 of
    val-on-objectnet-classes, over ObjectNet classes collapsed by their best ImageNet class, so
    that five different ObjectNet classes always compete) is checked to differ as it should."""
    import json
    from pathlib import Path

    import rbench
    from plugins.datasets import objectnet

    from .conftest import predictions_of

    golden = json.loads((Path(__file__).parent / "data" / "objectnet_golden.json").read_text())
    assert golden["references"]["template"]["repository"] == "abarbu/objectnet-template-pytorch"
    cases = golden["cases"]
    logits = torch.stack([golden_logits(case) for case in cases])
    from rbench.registry import load_registry

    accuracy = load_registry().metrics["accuracy"].compute

    # The objectnet view: all 1000 classes, each image labelled with its ObjectNet class's ImageNet classes.
    labels = [objectnet.GROUP_OF[objectnet.FOLDER_TO_IMAGENET[case["folder"]][0]] for case in cases]
    view = rbench.ViewSpec(name=objectnet.NAME)
    got = accuracy(predictions_of(logits, labels, view=view), view)
    assert got["top1"] == pytest.approx(golden["template"]["top1"])
    assert got["top5"] == pytest.approx(golden["template"]["top5"])
    assert got["top1"] == pytest.approx(100 * 5 / 12) and got["top5"] == pytest.approx(100 * 9 / 12)  # by hand

    # val-on-objectnet-classes: the plugin's own view over a val-like source of these labels.
    val = rbench.Source(name="imagenet", root=Path("."), samples=[(f"{c['name']}.JPEG", c["imagenet_label"]) for c in cases],
                        views=[rbench.ViewSpec(name="imagenet")])
    [val_view] = objectnet.val_views(val)
    got = accuracy(predictions_of(logits, list(val_view.labels), indices=list(val_view.samples), view=val_view), val_view)
    testbed = golden["testbed"]
    assert got["top1"] == pytest.approx(testbed["val_on_objectnet_classes"]["top1"], abs=1e-4)
    assert got["top1"] == pytest.approx(testbed["objectnet_top1"])  # testbed's objectnet rule, restricted the same way
    # top-5 follows ObjectNet's rule: 'group-fills-top5' has chair x3 and alarm clock x2 before bicycle.
    assert testbed["val_on_objectnet_classes"]["top5"] == 100.0
    assert got["top5"] == pytest.approx(100 * 11 / 12)


VAL_FAVOURED = [1, 2, 3, 409, 414, 423, 444, 530, 559, 671, 765, 954]  # mapped to ObjectNet or not


@pytest.fixture(scope="module")
def val_runs(tmp_path_factory):
    """An ImageNet val fixture run by a model that predicts VAL_FAVOURED, compact and with
    `--keep imagenet=scores`. Returns (data root, compact out, scores out, model, weights)."""
    from rbench.plugins.datasets import imagenet as imagenet_plugin

    root = tmp_path_factory.mktemp("val-on-objectnet")
    counts = imagenet_fixtures.build(root, VAL_FAVOURED)
    weights = tmp_path_factory.mktemp("weights") / "val.safetensors"
    model = imagenet_fixtures.pinned_head_model(5, VAL_FAVOURED, weights)
    outs = root / "compact", root / "scores"
    for out, extra in zip(outs, [(), ("--keep", "imagenet=scores")]):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(imagenet_plugin, "EXPECTED", counts)
            result = invoke_apart("run", "-m", "test_byobnet", "--weights", str(weights), "-d", "imagenet",
                                  "--data-root", str(root), "--bench", "validate", "--img-size", str(IMG_SIZE),
                                  "--batch-size", "64", "--workers", "0", "--out", str(out), *extra)
        assert result.exit_code == 0, result.output + result.stderr
    return root, *outs, model, weights


def test_val_on_objectnet_classes_from_report_equals_a_brute_force_count(val_runs, tmp_path):
    """The view's row from the stored full scores, against a count made here over those scores
    (float16 log-probabilities, read from the Parquet file): ties, which float16 makes among a
    pinned head's close logits, go to the lower class, as docs/predictions.md says."""
    import numpy as np
    import polars as pl

    from plugins.datasets import objectnet

    root, compact_out, scores_out, model, weights = val_runs
    classes = sorted(objectnet.GROUP_OF)
    (parquet,) = (scores_out / "store" / "predictions").glob("*.parquet")
    frame = pl.read_parquet(parquet)
    right1 = right5 = n = 0
    for row in frame.iter_rows(named=True):
        if not row["ok"] or row["label"] not in objectnet.GROUP_OF:
            continue
        scores = np.asarray(row["scores"], dtype=np.float64)
        best = sorted(classes, key=lambda c: (-scores[c], c))[:5]
        n += 1
        right1 += best[0] in objectnet.GROUP_OF[row["label"]]
        right5 += any(c in objectnet.GROUP_OF[row["label"]] for c in best)
    expected = (f"{100 * right1 / n:.3f}", f"{100 * right5 / n:.3f}")
    assert n > 125 and 0 < right1 < right5 < n

    report = tmp_path / "report"
    result = invoke_apart("report", "--store", str(scores_out / "store"), "--out", str(report))
    assert result.exit_code == 0, result.output + result.stderr
    row = {r["model"]: r for r in csv_rows(report / "results-val-on-objectnet-classes.csv")}[
        checkpoint_row("test_byobnet", weights)]
    assert (row["top1"], row["top5"]) == expected

    # A compact val store cannot give the class restriction: no row, one line saying how to rerun.
    report = tmp_path / "compact-report"
    result = invoke_apart("report", "--store", str(compact_out / "store"), "--out", str(report))
    assert result.exit_code == 0, result.output + result.stderr
    assert not (report / "results-val-on-objectnet-classes.csv").exists()
    lines = [line for line in result.stderr.splitlines() if "val-on-objectnet-classes" in line]
    assert len(lines) == 1 and "--keep scores" in lines[0], result.stderr
