"""imagenet-c: the corruptions themselves, and the scores against an independent oracle loop."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from timm.data import create_transform, resolve_data_config

from rbench.cli import main
from rbench.plugins.datasets import imagenet_c

from . import imagenet_fixtures

needs_library = pytest.mark.skipif(importlib.util.find_spec("corrupt_tta") is None,
                                   reason="the corruptions extra is not installed")

IMG_SIZE = 48
SYNSETS = imagenet_fixtures.info_lines("imagenet_synsets.txt")
CLASSES = list(range(0, 1000, 50))  # 20 classes
PER_CLASS = 2
# impulse_noise is left out of the oracle: the library draws it from an unseeded generator,
# which rbench seeds (see imagenet_c.corrupt_function); the unit test covers it.
CORRUPTIONS = ["gaussian_noise", "glass_blur", "contrast"]
SEVERITIES = [1, 5]
FAKE_ALEXNET = {c: 0.5 + 0.02 * i for i, c in enumerate(imagenet_c.CORRUPTIONS)}
FAKE_ALEXNET_CLEAN = 0.3


@needs_library
@pytest.mark.parametrize("corruption", imagenet_c.CORRUPTIONS)
def test_each_corruption_changes_the_image_deterministically(corruption):
    rng = np.random.default_rng(1)
    image = Image.fromarray(np.clip(rng.normal(128, 40, size=(40, 36, 3)), 0, 255).astype(np.uint8))
    for severity in imagenet_c.SEVERITIES:
        first = imagenet_c.apply_corruption(image, corruption, severity, seed=123)
        again = imagenet_c.apply_corruption(image, corruption, severity, seed=123)
        assert first.shape == (40, 36, 3) and first.dtype == np.uint8
        assert np.array_equal(first, again), (corruption, severity)
        assert not np.array_equal(first, np.asarray(image)), (corruption, severity)


def test_seed_depends_on_image_corruption_and_severity():
    seeds = {imagenet_c.corruption_seed(k, c, s) for k in ("a/1.JPEG", "a/2.JPEG") for c in CORRUPTIONS for s in (1, 2)}
    assert len(seeds) == 2 * len(CORRUPTIONS) * 2


# --- the oracle ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """20 wnid folders of 3 small JPEGs each (rbench takes the first PER_CLASS of each)."""
    root = tmp_path_factory.mktemp("imagenet-c") / "imagenet" / "val"
    rng = np.random.default_rng(3)
    for c in CLASSES:
        for k in range(PER_CLASS + 1):
            imagenet_fixtures._jpeg(root / SYNSETS[c] / f"ILSVRC2012_val_{c * 10 + k + 1:08d}.JPEG", rng)
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random test_byobnet that can only predict the fixture's classes, and its weights file."""
    path = tmp_path_factory.mktemp("weights") / "byob.safetensors"
    return imagenet_fixtures.pinned_head_model(11, CLASSES, path), path


def oracle_pixels(f: Path, crop, corrupt=None, corruption: str | None = None, severity: int | None = None):
    """`f` resized and cropped by timm's transform steps `crop`, then, for a corruption, given to
    `corrupt` with numpy's global seed set from the file's key, corruption and severity: the
    plugin's promised seeding, written out here."""
    img = Image.open(f).convert("RGB")
    for t in crop:
        img = t(img)
    if corruption is None:
        return img
    key = f"{f.parent.name}/{f.name}"
    np.random.seed(int.from_bytes(hashlib.sha256(f"{key}\0{corruption}\0{severity}".encode()).digest()[:4], "little"))
    return np.uint8(np.clip(corrupt(np.asarray(img), severity=severity, corruption_name=corruption), 0, 255))


def oracle(model, root: Path) -> dict[str, float]:
    """Top-1 per corruption and severity, per corruption, mCE and relative mCE, computed here:
    crop with timm's transform, corrupt with the library, score one image at a time."""
    from corrupt_tta import corrupt

    config = resolve_data_config({"img_size": IMG_SIZE}, model=model, use_test_size=True)
    steps = create_transform(**config, is_training=False).transforms
    crop = [t for t in steps if "ToTensor" not in type(t).__name__ and "Normalize" not in type(t).__name__]
    finish = [t for t in steps if t not in crop]
    files = [f for c in CLASSES for f in sorted((root / SYNSETS[c]).glob("*.JPEG"))[:PER_CLASS]]

    def predict(pixels) -> int:
        x = pixels
        for t in finish:
            x = t(x)
        with torch.no_grad():
            return int(model(x[None]).argmax())

    def top1(corruption=None, severity=None) -> float:
        right = 0
        for f in files:
            img = oracle_pixels(f, crop, corrupt, corruption, severity)
            right += predict(img) == SYNSETS.index(f.parent.name)
        return 100 * right / len(files)

    clean = top1()
    result = {"clean": clean}
    ce, rel = [], []
    for c in CORRUPTIONS:
        accs = [top1(c, s) for s in SEVERITIES]
        for s, a in zip(SEVERITIES, accs):
            result[f"{c}_{s}"] = a
        result[c] = sum(accs) / len(accs)
        errs = [100 - a for a in accs]
        alex = [100 * FAKE_ALEXNET[c]] * len(SEVERITIES)  # the published values are severity means
        ce.append(sum(errs) / sum(alex))
        rel.append(sum(e - (100 - clean) for e in errs) / sum(a - 100 * FAKE_ALEXNET_CLEAN for a in alex))
    result["mce"] = 100 * sum(ce) / len(ce)
    result["relative_mce"] = 100 * sum(rel) / len(rel)
    result["top1"] = sum(result[f"{c}_{s}"] for c in CORRUPTIONS for s in SEVERITIES) / (len(CORRUPTIONS) * len(SEVERITIES))
    return result


def run(*args):
    return CliRunner().invoke(main, ["run", *args])


def read_row(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    return rows[0]


@needs_library
def test_scores_match_an_independent_loop(val_root, model_file, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))  # the fixture is the complete set
    monkeypatch.setattr(imagenet_c, "ALEXNET_ERR", FAKE_ALEXNET)
    monkeypatch.setattr(imagenet_c, "ALEXNET_CLEAN_ERR", FAKE_ALEXNET_CLEAN)
    model, weights = model_file
    out = tmp_path / "out"
    result = run("-m", "test_byobnet", "--weights", str(weights), "--data", f"imagenet-c={val_root}",
                 "--data", f"imagenet={val_root}", "--allow-partial", "-d", "imagenet,imagenet-c",
                 "--data-option", f"imagenet-c.per_class={PER_CLASS}",
                 "--data-option", f"imagenet-c.corruptions={','.join(CORRUPTIONS)}",
                 "--data-option", f"imagenet-c.severities={','.join(map(str, SEVERITIES))}",
                 "-b", "cpu", "--bench", "validate", "--img-size", str(IMG_SIZE), "--batch-size", "32",
                 "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    n = len(CLASSES) * PER_CLASS
    assert f"{n} images x 3 corruptions x 2 severities + {n} clean = {n * 7} images per model" in result.output

    expected = oracle(model, val_root)
    assert 0 < expected["clean"] < 100 and expected["mce"] > 0
    main_file = out / "results-imagenet-c.csv"
    header = main_file.read_text().splitlines()[0].split(",")
    assert header == ["model", "img_size", "top1", "top1_err", "top5", "top5_err", "mce", "relative_mce",
                      "param_count", "crop_pct", "interpolation", *CORRUPTIONS, "top1_diff", "top5_diff", "rank_diff"]
    row = read_row(main_file)
    for column in ("top1", "mce", "relative_mce", *CORRUPTIONS):
        assert row[column] == f"{expected[column]:.3f}", column
    assert row["img_size"] == str(IMG_SIZE)
    base = read_row(out / "results-imagenet.csv")
    assert row["top1_diff"] == f"{round(expected['top1'], 3) - float(base['top1']):+.3f}"

    severity = read_row(out / "results-imagenet-c-severity.csv")
    assert severity["clean_top1"] == f"{expected['clean']:.3f}"
    for c in CORRUPTIONS:
        for s in SEVERITIES:
            assert severity[f"{c}_{s}"] == f"{expected[f'{c}_{s}']:.3f}", (c, s)


def test_missing_extra_is_a_one_line_error(val_root, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "corrupt_tta" else real_find_spec(name, *a))
    result = run("-m", "test_byobnet", "--weights", "random", "--data", f"imagenet-c={val_root}", "-d", "imagenet-c",
                 "--bench", "validate", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'rbench[corruptions]'" in lines[0], result.output


def test_wrong_option_is_a_one_line_error(val_root, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_c, "check_library", lambda: None)
    result = run("-m", "test_byobnet", "--weights", "random", "--data", f"imagenet-c={val_root}", "-d", "imagenet-c",
                 "--data-option", "imagenet-c.corruptions=fog,rain", "--bench", "validate", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "choose from gaussian_noise" in result.output, result.output


@needs_library
def test_loader_workers_give_the_oracle_pixels(val_root, model_file, monkeypatch):
    """Every sample the loader makes (clean and corrupted, in two worker processes) is exactly
    the oracle's crop-then-corrupt pixels."""
    from rbench import DataRequest
    from rbench.data import eval_data_config, make_loader

    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))
    model, _ = model_file
    source = imagenet_c.load(DataRequest(path=val_root, cache_dir=Path("."), options={
        "per_class": "1", "corruptions": "gaussian_noise,impulse_noise,frost", "severities": "2,4"}))
    config = eval_data_config(model, IMG_SIZE)
    loader = make_loader(source, config, batch_size=16, workers=2, pin_memory=False)
    got = torch.cat([pixels for pixels, _, ok in loader])
    assert got.shape[0] == len(CLASSES) * (1 + 3 * 2)

    crop = create_transform(**config, is_training=False).transforms[:-2]  # resize + centre crop
    files = [f for c in CLASSES for f in sorted((val_root / SYNSETS[c]).glob("*.JPEG"))[:1]]
    expected = []
    for block in [(None, None)] + [(c, s) for c in ("gaussian_noise", "impulse_noise", "frost") for s in (2, 4)]:
        for f in files:
            img = oracle_pixels(f, crop, imagenet_c.corrupt_function(), *block)
            expected.append(torch.from_numpy(np.array(img, dtype=np.uint8)))
    assert torch.equal(got, torch.stack(expected))
