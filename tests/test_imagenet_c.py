"""imagenet-c: the made JPEGs, the published folder, the native view, and their scores against
independent oracle loops."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import rbench
from rbench.plugins.datasets import imagenet_c

from .conftest import invoke_run, one_csv_row, predictions_of

from . import imagenet_fixtures

needs_library = pytest.mark.skipif(importlib.util.find_spec("skimage") is None or importlib.util.find_spec("cv2") is None,
                                   reason="the corruptions extra is not installed")

IMG_SIZE = 48
SYNSETS = imagenet_fixtures.info_lines("imagenet_synsets.txt")
CLASSES = list(range(0, 1000, 100))  # 10 classes
PER_CLASS = 2
CORRUPTIONS = ["gaussian_noise", "contrast"]
SEVERITIES = [2, 4]
# Stand-ins for AlexNet's errors, so that the scores are far from any published constant and a
# mix-up of severities shows; the oracle below uses the same ones.
FAKE_ALEXNET = {c: tuple(0.4 + 0.01 * i + 0.1 * s for s in range(5)) for i, c in enumerate(imagenet_c.CORRUPTIONS)}
FAKE_ALEXNET_CLEAN = 0.3


# --- mCE, by hand ------------------------------------------------------------------------------

def test_mce_with_a_severity_subset_uses_per_severity_alexnet_errors():
    """Clean 3/4 right, fog-2 2/4, fog-4 1/4, snow-1 0/4. AlexNet's published errors at those
    severities (fog 2: 0.76050, fog 4: 0.87260, snow 1: 0.71726; clean 0.43478) give, by hand:
    CE_fog = (0.50 + 0.75) / (0.76050 + 0.87260), CE_snow = 1.00 / 0.71726,
    rel_fog = (0.25 + 0.50) / (0.32572 + 0.43782), rel_snow = 0.75 / 0.28248."""
    cells = [("fog", 2), ("fog", 4), ("snow", 1)]
    scorer = imagenet_c.CorruptionScorer([0, 4, 8, 12, 16], cells)
    right = [1, 1, 1, 0] + [1, 1, 0, 0] + [1, 0, 0, 0] + [0, 0, 0, 0]
    labels = [3] * 16
    logits = torch.zeros(16, 10)
    for i, ok in enumerate(right):
        logits[i, 3 if ok else 7] = 1.0
    result = scorer(predictions_of(logits, labels, list(range(16))))
    ce_fog, ce_snow = 1.25 / 1.63310, 1.0 / 0.71726
    rel_fog, rel_snow = 0.75 / 0.76354, 0.75 / 0.28248
    assert result["mce"] == pytest.approx(100 * (ce_fog + ce_snow) / 2, abs=1e-9)
    assert result["relative_mce"] == pytest.approx(100 * (rel_fog + rel_snow) / 2, abs=1e-9)
    # Not the five-severity means (fog 0.819324, snow 0.866816), which would give another number.
    assert abs(result["mce"] - 100 * (1.25 / 2 / 0.819324 + 1.0 / 0.866816) / 2) > 1
    assert result["clean_top1"] == 75.0 and result["fog_2"] == 50.0 and result["fog"] == 37.5
    assert result["top1"] == pytest.approx(100 * 3 / 12)
    # Unreadable samples left out: the blocks are found from the sample indices.
    part = scorer(predictions_of(logits[[0, 1, 4, 9, 12]], [3] * 5, [0, 1, 4, 9, 12]))
    assert part["clean_top1"] == 100.0 and part["fog_2"] == 100.0 and part["fog_4"] == 0.0


def test_all_five_severities_give_the_published_mean_normaliser():
    """With all five severities, CE is the mean error over AlexNet's published mean."""
    cells = [("frost", s) for s in imagenet_c.SEVERITIES]
    scorer = imagenet_c.CorruptionScorer([0, 0, 2, 4, 6, 8, 10], cells)
    logits = torch.zeros(10, 4)
    logits[[0, 2, 4], 1] = 1.0  # 3 of 10 right: error 0.7
    logits[[1, 3, 5, 6, 7, 8, 9], 2] = 1.0
    result = scorer(predictions_of(logits, [1] * 10, list(range(10))))
    assert result["mce"] == pytest.approx(100 * 0.7 / 0.826572, abs=1e-9)
    assert result["relative_mce"] != result["relative_mce"]  # no clean images: NaN, written empty


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """10 wnid folders of 3 small real JPEGs each (rbench takes the first PER_CLASS of each)."""
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


@pytest.fixture
def fake_alexnet(monkeypatch):
    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))  # the fixtures are complete sets
    monkeypatch.setattr(imagenet_c, "ALEXNET_ERR_BY_SEVERITY", FAKE_ALEXNET)
    monkeypatch.setattr(imagenet_c, "ALEXNET_CLEAN_ERR", FAKE_ALEXNET_CLEAN)


def chosen_files(root: Path) -> list[Path]:
    return [f for c in CLASSES for f in sorted((root / SYNSETS[c]).glob("*.JPEG"))[:PER_CLASS]]


def oracle_jpeg(f: Path, corruption: str, severity: int) -> bytes:
    """The published protocol written out: torchvision's Resize(256) + CenterCrop(224), numpy's
    global seed from the image's key, corruption and severity, `corrupt`, Pillow JPEG 85."""
    import io

    from torchvision import transforms

    image = transforms.CenterCrop(224)(transforms.Resize(256)(Image.open(f).convert("RGB")))
    key = f"{f.parent.name}/{f.name}"
    np.random.seed(int.from_bytes(hashlib.sha256(f"{key}\0{corruption}\0{severity}".encode()).digest()[:4], "little"))
    buffer = io.BytesIO()
    Image.fromarray(imagenet_c.corrupt(np.asarray(image), corruption, severity)).save(
        buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def predict_files(model, files: list[Path]) -> dict[Path, int]:
    """Top-1 of each image file through timm's eval transform at IMG_SIZE (PIL decode, timm's
    own transform, normalised on the CPU)."""
    config = resolve_data_config({"img_size": IMG_SIZE}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    files = list(dict.fromkeys(files))
    x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        top = torch.cat([model(x[i:i + 64]).argmax(dim=1) for i in range(0, len(files), 64)])
    return dict(zip(files, top.tolist()))


def oracle_scores(model, clean: list[tuple[Path, int]] | None, blocks: dict[tuple[str, int], list[tuple[Path, int]]]):
    """Top-1 per block, per corruption, mCE and relative mCE (sum over severities of the errors
    over the sum of the stand-in AlexNet errors at those severities), computed here."""
    predicted = predict_files(model, [f for block in [clean or [], *blocks.values()] for f, _ in block])

    def top1(files) -> float:
        return 100 * sum(predicted[f] == label for f, label in files) / len(files)

    result = {}
    clean_err = None
    if clean is not None:
        result["clean_top1"] = top1(clean)
        clean_err = 1 - result["clean_top1"] / 100
    ce, rel = [], []
    corrupted = []
    for c in dict.fromkeys(c for c, _ in blocks):
        severities = [s for cc, s in blocks if cc == c]
        accs = [top1(blocks[c, s]) for s in severities]
        for s, a in zip(severities, accs):
            result[f"{c}_{s}"] = a
            corrupted.extend(blocks[c, s])
        result[c] = sum(accs) / len(accs)
        errs = [1 - a / 100 for a in accs]
        alex = [FAKE_ALEXNET[c][s - 1] for s in severities]
        ce.append(sum(errs) / sum(alex))
        if clean_err is not None:
            rel.append(sum(e - clean_err for e in errs) / sum(a - FAKE_ALEXNET_CLEAN for a in alex))
    result["mce"] = 100 * sum(ce) / len(ce)
    if rel:
        result["relative_mce"] = 100 * sum(rel) / len(rel)
    result["top1"] = top1(corrupted)
    return result


# --- made from val -------------------------------------------------------------------------

@needs_library
def test_made_from_val_files_and_scores_match_independent_loops(val_root, model_file, tmp_path, fake_alexnet):
    """Two models' worth of runs: the first makes the JPEGs (2 processes), the second reads them;
    every file is the oracle's bytes, and the scores are the oracle's."""
    model, weights = model_file
    build_dir = tmp_path / "made"
    args = ["-m", "test_byobnet", "--weights", str(weights), "--data", f"imagenet-c={val_root}",
            "--data", f"imagenet={val_root}", "--allow-partial", "-d", "imagenet,imagenet-c",
            "--data-option", f"imagenet-c.per_class={PER_CLASS}",
            "--data-option", f"imagenet-c.corruptions={','.join(CORRUPTIONS)}",
            "--data-option", f"imagenet-c.severities={','.join(map(str, SEVERITIES))}",
            "--data-option", f"imagenet-c.build_dir={build_dir}", "--data-option", "imagenet-c.build_workers=2",
            "-b", "cpu", "--bench", "validate", "--img-size", str(IMG_SIZE), "--batch-size", "32", "--workers", "0"]
    result = invoke_run(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    n = len(CLASSES) * PER_CLASS
    cells = [(c, s) for c in CORRUPTIONS for s in SEVERITIES]
    assert f"imagenet-c: making {n * len(cells)} JPEGs" in result.output  # the line progress (not a terminal)
    assert f"{n} images x {len(cells)} corruption-severities + {n} clean = {n * (1 + len(cells))} images per model" in result.output

    (folder,) = [p for p in build_dir.iterdir() if p.is_dir()]
    files = chosen_files(val_root)
    for c, s in cells:
        assert (folder / c / str(s) / ".complete").read_text().strip() == str(n)
        for f in files:
            made = folder / c / str(s) / f.parent.name / f.name
            assert made.read_bytes() == oracle_jpeg(f, c, s), made
    assert not list(folder.rglob("*.tmp"))

    labels = {f: SYNSETS.index(f.parent.name) for f in files}
    expected = oracle_scores(model, [(f, labels[f]) for f in files],
                             {(c, s): [(folder / c / str(s) / f.parent.name / f.name, labels[f]) for f in files]
                              for c, s in cells})
    assert 0 < expected["clean_top1"] < 100 and expected["mce"] > 0
    main_file = tmp_path / "out" / "results-imagenet-c.csv"
    header = main_file.read_text().splitlines()[0].split(",")
    assert header[:11] == ["model", "img_size", "top1", "top1_err", "top5", "top5_err", "mce", "relative_mce",
                           "param_count", "crop_pct", "interpolation"]
    assert header[11:13] == CORRUPTIONS
    row = one_csv_row(main_file)
    for column in ("top1", "mce", "relative_mce", *CORRUPTIONS):
        assert row[column] == f"{expected[column]:.3f}", column
    severity = one_csv_row(tmp_path / "out" / "results-imagenet-c-severity.csv")
    assert severity["clean_top1"] == f"{expected['clean_top1']:.3f}"
    for c, s in cells:
        assert severity[f"{c}_{s}"] == f"{expected[f'{c}_{s}']:.3f}", (c, s)

    # Another run (another model, another geometry) reads the same files: nothing is made.
    again = invoke_run(*args, "--img-size", "40", "--out", str(tmp_path / "out2"))
    assert again.exit_code == 0, again.output
    assert "making" not in again.output and "made now" not in again.output


@needs_library
def test_the_plan_makes_nothing_and_each_cell_makes_only_the_slices_it_reads(val_root, tmp_path, fake_alexnet):
    """The plan lists the made JPEGs without making them; a cell makes the corruption-severity
    slices its samples need (--limit: the first one only), the next run the rest, and a run
    after that nothing."""
    build_dir = tmp_path / "made"
    args = ["-m", "test_byobnet", "--weights", "random", "-d", "imagenet-c", "--data", f"imagenet-c={val_root}",
            "--data-option", f"imagenet-c.per_class={PER_CLASS}",
            "--data-option", f"imagenet-c.corruptions={','.join(CORRUPTIONS)}",
            "--data-option", f"imagenet-c.severities={','.join(map(str, SEVERITIES))}",
            "--data-option", f"imagenet-c.build_dir={build_dir}", "--data-option", "imagenet-c.build_workers=1",
            "-b", "cpu", "--bench", "validate", "--img-size", str(IMG_SIZE), "--batch-size", "32", "--workers", "0"]
    n = len(CLASSES) * PER_CLASS
    slices = [(c, s) for c in CORRUPTIONS for s in SEVERITIES]

    planned = invoke_run(*args, "--dry-run", "--out", str(tmp_path / "dry"))
    assert planned.exit_code == 0, planned.output
    assert not build_dir.exists()  # nothing made, not even the folder

    # The first n + 10 samples: the clean images and half of the first slice's.
    limited = invoke_run(*args, "--limit", str(n + 10), "--out", str(tmp_path / "limited"))
    assert limited.exit_code == 0, limited.output
    assert f"imagenet-c: making {n} JPEGs" in limited.output
    (folder,) = [p for p in build_dir.iterdir() if p.is_dir()]
    first = folder / slices[0][0] / str(slices[0][1])
    assert (first / ".complete").read_text().strip() == str(n) and len(list(first.rglob("*.JPEG"))) == n
    assert not any((folder / c / str(s)).exists() for c, s in slices[1:])

    whole = invoke_run(*args, "--out", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    assert f"imagenet-c: making {n * (len(slices) - 1)} JPEGs" in whole.output
    made = {f: f.stat().st_mtime_ns for f in folder.rglob("*.JPEG")}
    assert len(made) == n * len(slices)
    for c, s in slices:
        assert (folder / c / str(s) / ".complete").read_text().strip() == str(n)

    again = invoke_run(*args, "--img-size", "40", "--out", str(tmp_path / "again"))
    assert again.exit_code == 0, again.output
    assert "making" not in again.output
    assert {f: f.stat().st_mtime_ns for f in folder.rglob("*.JPEG")} == made


@needs_library
def test_build_resumes_and_makes_only_the_missing_files(val_root, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))
    files = chosen_files(val_root)
    chosen = [(str(f), f"{f.parent.name}/{f.name}") for f in files]
    cells = [("pixelate", 1), ("impulse_noise", 3)]
    assert imagenet_c.build(tmp_path, chosen, cells, workers=1) == len(files) * 2
    victim = tmp_path / "pixelate" / "1" / files[3].parent.name / files[3].name
    victim.unlink()
    (tmp_path / "pixelate" / "1" / ".complete").unlink()  # as a build stopped halfway leaves it
    assert imagenet_c.build(tmp_path, chosen, cells, workers=1) == 1
    assert victim.read_bytes() == oracle_jpeg(files[3], "pixelate", 1)
    assert imagenet_c.build(tmp_path, chosen, cells, workers=1) == 0


# --- the published folder ------------------------------------------------------------------

@pytest.fixture(scope="module")
def published_root(tmp_path_factory):
    """A miniature of the published layout: <corruption>/<severity>/<wnid>/*.JPEG for 2
    corruptions x 2 severities, 10 classes x 2 images (the archives' group folders above)."""
    root = tmp_path_factory.mktemp("published") / "imagenet-c"
    rng = np.random.default_rng(8)
    for group, c in (("noise", "shot_noise"), ("weather", "fog")):
        for s in (1, 3):
            for k in CLASSES:
                for i in range(PER_CLASS):
                    imagenet_fixtures._jpeg(root / group / c / str(s) / SYNSETS[k] / f"ILSVRC2012_val_{k * 10 + i + 1:08d}.JPEG", rng)
    return root


def test_published_folder_is_read_and_scored(published_root, val_root, model_file, tmp_path, fake_alexnet, monkeypatch):
    monkeypatch.setattr(imagenet_c, "PUBLISHED_PER_CLASS", PER_CLASS)
    model, weights = model_file
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "--data", f"imagenet-c={published_root}",
                 "-d", "imagenet-c", "--data-option", "imagenet-c.corruptions=shot_noise,fog",
                 "--data-option", "imagenet-c.severities=1,3", "--data-option", f"imagenet-c.val={val_root}",
                 "--allow-partial", "-b", "cpu", "--bench", "validate", "--img-size", str(IMG_SIZE),
                 "--workers", "0", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    blocks = {}
    for group, c in (("noise", "shot_noise"), ("weather", "fog")):
        for s in (1, 3):
            blocks[c, s] = [(f, SYNSETS.index(f.parent.name))
                            for k in CLASSES for f in sorted((published_root / group / c / str(s) / SYNSETS[k]).glob("*.JPEG"))]
    clean = [(f, SYNSETS.index(f.parent.name)) for f in chosen_files(val_root)]
    expected = oracle_scores(model, clean, blocks)
    row = one_csv_row(tmp_path / "out" / "results-imagenet-c.csv")
    for column in ("top1", "mce", "relative_mce", "shot_noise", "fog"):
        assert row[column] == f"{expected[column]:.3f}", column
    severity = one_csv_row(tmp_path / "out" / "results-imagenet-c-severity.csv")
    for key in blocks:
        assert severity[f"{key[0]}_{key[1]}"] == f"{expected[f'{key[0]}_{key[1]}']:.3f}"


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_wrong_layouts_are_one_line_errors(published_root, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))
    monkeypatch.setattr(imagenet_c, "PUBLISHED_PER_CLASS", PER_CLASS)
    base = ["-m", "test_byobnet", "--weights", "random", "-d", "imagenet-c", "--bench", "validate",
            "--out", str(tmp_path / "out")]
    # Neither wnid folders nor corruption folders.
    odd = tmp_path / "odd"
    imagenet_fixtures._jpeg(odd / "pictures" / "a.JPEG", np.random.default_rng(0))
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={odd}"), "'pictures'", "<corruption>/<severity>/<wnid>")
    # Corruption folders with a class folder that is not a wnid.
    bad = tmp_path / "bad"
    imagenet_fixtures._jpeg(bad / "fog" / "1" / "cats" / "a.JPEG", np.random.default_rng(0))
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={bad}", "--data-option", "imagenet-c.corruptions=fog",
                       "--data-option", "imagenet-c.severities=1"), "'cats'", "not an ImageNet class")
    # Corruption folders mixed with something else.
    mixed = tmp_path / "mixed"
    imagenet_fixtures._jpeg(mixed / "fog" / "1" / SYNSETS[0] / "a.JPEG", np.random.default_rng(0))
    (mixed / "extra").mkdir()
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={mixed}"), "mixes", "'extra'")
    # The miniature has 2 of the 15 corruptions: without a subset or --allow-partial, refused.
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={published_root}"), "partial", "--allow-partial")
    # A severity folder short of images.
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={published_root}", "--data-option", "imagenet-c.corruptions=fog",
                       "--data-option", "imagenet-c.per_class=3"), "fewer than 3 images")
    # More images of a class than the published set has.
    many = tmp_path / "many"
    for i in range(PER_CLASS + 1):
        imagenet_fixtures._jpeg(many / "fog" / "1" / SYNSETS[0] / f"{i}.JPEG", np.random.default_rng(i))
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={many}", "--data-option", "imagenet-c.corruptions=fog",
                       "--data-option", "imagenet-c.severities=1", "--allow-partial"), "more than the published")
    # An option of the other mode.
    one_line_error(invoke_run(*base, "--data", f"imagenet-c={published_root}", "--data-option", "imagenet-c.build_workers=2"),
                   "build_workers", "does not apply")


def test_missing_extra_is_a_one_line_error(val_root, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cv2" else real_find_spec(name, *a))
    for name in ("imagenet-c", "imagenet-c-native"):
        result = invoke_run("-m", "test_byobnet", "--weights", "random", "--data", f"{name}={val_root}", "-d", name,
                     "--bench", "validate", "--out", str(tmp_path / "out"))
        one_line_error(result, "pip install 'rbench[corruptions]'")


def test_wrong_option_is_a_one_line_error(val_root, tmp_path):
    result = invoke_run("-m", "test_byobnet", "--weights", "random", "--data", f"imagenet-c={val_root}", "-d", "imagenet-c",
                 "--data-option", "imagenet-c.corruptions=fog,rain", "--bench", "validate", "--out", str(tmp_path / "o"))
    one_line_error(result, "choose from gaussian_noise")


# --- native --------------------------------------------------------------------------------

@needs_library
def test_native_loader_workers_give_the_oracle_pixels(val_root, model_file, monkeypatch):
    """Every sample the native loader makes (clean and corrupted, in two worker processes) is
    the oracle's: timm's resize and crop at the model's size, then the corruption seeded from
    the file's key."""
    from rbench import DataRequest
    from rbench.worker.data import eval_data_config, make_loader
    from rbench.plugins.datasets import corruptions

    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))
    model, _ = model_file
    cells = [(c, s) for c in ("gaussian_noise", "impulse_noise", "frost") for s in (2, 4)]
    source = imagenet_c.load_native(DataRequest(path=val_root, cache_dir=Path("."), options={
        "per_class": "1", "corruptions": "gaussian_noise,impulse_noise,frost", "severities": "2,4"}))
    config = eval_data_config(model, IMG_SIZE)
    loader = make_loader(source, config, batch_size=16, workers=2, pin_memory=False)
    got = torch.cat([pixels for pixels, _, ok in loader])
    assert got.shape[0] == len(CLASSES) * (1 + len(cells))

    crop = create_transform(**config, is_training=False).transforms[:-2]  # resize + centre crop
    files = [f for c in CLASSES for f in sorted((val_root / SYNSETS[c]).glob("*.JPEG"))[:1]]
    expected = []
    for block in [None, *cells]:
        for f in files:
            img = Image.open(f).convert("RGB")
            for t in crop:
                img = t(img)
            pixels = np.asarray(img, dtype=np.uint8)
            if block is not None:
                key = f"{f.parent.name}/{f.name}"
                seed = hashlib.sha256(f"{key}\0{block[0]}\0{block[1]}".encode()).digest()[:4]
                np.random.seed(int.from_bytes(seed, "little"))
                pixels = corruptions.corrupt_any_size(pixels, *block)
            expected.append(torch.from_numpy(np.array(pixels)))
    assert torch.equal(got, torch.stack(expected))


@needs_library
def test_native_results_have_no_alexnet_columns(val_root, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_c, "CLASSES", len(CLASSES))
    result = invoke_run("-m", "test_vit", "--weights", "random", "--data", f"imagenet-c-native={val_root}",
                 "-d", "imagenet-c-native", "--data-option", "imagenet-c-native.per_class=1",
                 "--data-option", "imagenet-c-native.corruptions=brightness", "--data-option", "imagenet-c-native.severities=5",
                 "-b", "cpu", "--bench", "validate", "--img-size", "32", "--workers", "0", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    header = (tmp_path / "out" / "results-imagenet-c-native.csv").read_text().splitlines()[0].split(",")
    assert header[:11] == ["model", "img_size", "top1", "top1_err", "top5", "top5_err", "clean_top1", "param_count",
                           "crop_pct", "interpolation", "brightness"]
    assert "mce" not in header and "relative_mce" not in header
    assert (tmp_path / "out" / "results-imagenet-c-native-severity.csv").exists()
    assert not (tmp_path / "out" / "results-imagenet-c.csv").exists()


@needs_library
def test_an_unreadable_val_image_does_not_stop_the_build(tmp_path, capsys):
    good = tmp_path / "val" / SYNSETS[0] / "a.JPEG"
    imagenet_fixtures._jpeg(good, np.random.default_rng(0))
    bad = tmp_path / "val" / SYNSETS[0] / "b.JPEG"
    bad.write_bytes(good.read_bytes()[:100])  # truncated
    chosen = [(str(good), f"{SYNSETS[0]}/a.JPEG"), (str(bad), f"{SYNSETS[0]}/b.JPEG")]
    assert imagenet_c.build(tmp_path / "made", chosen, [("fog", 1), ("contrast", 2)], workers=1) == 2
    assert "1 val image(s) could not be read" in capsys.readouterr().err
    assert (tmp_path / "made" / "fog" / "1" / SYNSETS[0] / "a.JPEG").is_file()
    assert not (tmp_path / "made" / "fog" / "1" / SYNSETS[0] / "b.JPEG").exists()


def test_build_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen, log = Terminal(), io.StringIO()
    for stream in (screen, log):
        progress = rbench.BuildProgress(4, "imagenet-c: making 4 JPEGs", stream=stream)
        progress.advance(1)
        progress.advance(3)
        progress.close()
    assert "\x1b[" in screen.getvalue()  # drawn with terminal control codes
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("imagenet-c: making 4 JPEGs: 0/4 files (0%)")
    assert lines[-1].startswith("imagenet-c: making 4 JPEGs: 4/4 files (100%)") and "\x1b[" not in log.getvalue()
