"""imagenet-p: the made sequences, the run's CSV against an independent oracle loop, the
options and their errors."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from rbench.plugins.datasets import imagenet_p

from . import imagenet_fixtures
from .conftest import invoke_run, one_csv_row, predictions_of
from .test_imagenet_p_scores import literal_scores

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("skimage", "cv2", "scipy")),
    reason="the corruptions extra is not installed")

IMG_SIZE = 32
SYNSETS = imagenet_fixtures.info_lines("imagenet_synsets.txt")
CHOSEN = [0, 6, 12]  # every 6th class: the default class_step
CLASSES = [0, 3, 6, 12]  # class 3 is not chosen
PERTURBATIONS = ["gaussian_noise", "brightness", "translate"]
DIFFICULTY = 2
MODEL_CLASSES = list(range(0, 1000, 50))  # the pinned head's 20 live classes: no tied logits


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """4 wnid folders of 2 small real JPEGs each (per_class 1 takes the first by name)."""
    root = tmp_path_factory.mktemp("imagenet-p") / "imagenet" / "val"
    rng = np.random.default_rng(5)
    for c in CLASSES:
        for k in range(2):
            imagenet_fixtures._jpeg(root / SYNSETS[c] / f"ILSVRC2012_val_{c * 10 + k + 1:08d}.JPEG", rng)
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    return imagenet_fixtures.pinned_head_model(4, MODEL_CLASSES, path, name="test_vit"), path


# --- the oracle: the sequences, the model and the scores, written out here ------------------

def oracle_sequence(path: Path, perturbation: str, difficulty: int) -> np.ndarray:
    """The reference's steps for one val file: torchvision Resize(256), RGB, then the block.
    gaussian_noise draws torch's global generator seeded with the first 4 bytes (little end) of
    sha256("wnid/file" NUL "<name>") (name gaussian_noise_<d> for d > 1)."""
    from skimage.color import hsv2rgb, rgb2hsv
    from torchvision import transforms

    img = transforms.Resize(256)(Image.open(path)).convert("RGB")
    pixels = np.asarray(img)
    h, w = pixels.shape[:2]
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    crop = pixels[top:top + 224, left:left + 224]
    if perturbation == "translate":
        out = []
        for shift in range(-20, 21):
            moved = np.zeros_like(pixels)
            if shift >= 0:
                moved[:, shift:] = pixels[:, :w - shift]
            else:
                moved[:, :shift] = pixels[:, -shift:]
            out.append(moved[top:top + 224, left:left + 224])
        return np.stack(out)
    if perturbation == "brightness":
        out = []
        for i in range(31):
            hsv = rgb2hsv(crop / 255.0)
            hsv[:, :, 2] = np.clip(hsv[:, :, 2] + (i - 15) * 2 / 100.0, 0, 1)
            out.append(np.uint8(hsv2rgb(hsv) * 255))
        return np.stack(out)
    assert perturbation == "gaussian_noise"
    name = f"gaussian_noise_{difficulty}" if difficulty > 1 else "gaussian_noise"
    key = f"{path.parent.name}/{path.name}"
    torch.manual_seed(int.from_bytes(hashlib.sha256(f"{key}\0{name}".encode()).digest()[:4], "little"))
    x = transforms.ToTensor()(Image.fromarray(crop))
    sigma = {1: 0.03, 2: 0.05, 3: 0.08}[difficulty]
    frames = [transforms.ToPILImage()(x)] + [transforms.ToPILImage()(torch.clamp(x + sigma * torch.randn_like(x), 0, 1))
                                              for _ in range(30)]
    return np.stack([np.asarray(f) for f in frames])


def oracle_scores(model, files: list[Path], difficulty: int, reference: dict | None):
    """Every frame through timm's eval transform at IMG_SIZE, the model's logits, and test.py's
    scores (the literal oracle: ordinal ranks, argmax, the sub-sequence walk)."""
    config = resolve_data_config({"img_size": IMG_SIZE}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    result, fps, t5s = {}, [], []
    for perturbation in PERTURBATIONS:
        videos = []
        for f in files:
            frames = oracle_sequence(f, perturbation, difficulty)
            x = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
            with torch.no_grad():
                videos.append(model(x).numpy())
        fp, t5 = literal_scores(np.stack(videos), "noise" in perturbation, difficulty)
        result[f"{perturbation}_fp"], result[f"{perturbation}_t5d"] = 100 * fp, t5
        fps.append(100 * fp)
        t5s.append(t5)
    result["flip_prob"], result["top5_dist"] = np.mean(fps), np.mean(t5s)
    if reference:
        result["mfr"] = 100 * np.mean([result[f"{p}_fp"] / reference[p][0] for p in PERTURBATIONS])
        result["mt5d"] = 100 * np.mean([result[f"{p}_t5d"] / reference[p][1] for p in PERTURBATIONS])
    return result


def test_csv_matches_an_independent_oracle(val_root, model_file, tmp_path):
    model, weights = model_file
    build_dir = tmp_path / "made"
    reference = {"gaussian_noise": (3.5, 1.25), "brightness": (2.0, 0.75), "translate": (4.25, 1.5)}
    ref_file = tmp_path / "alexnet.csv"
    ref_file.write_text("perturbation,flip_prob,top5_dist\n" + "".join(f"{p},{a},{b}\n" for p, (a, b) in reference.items()))
    args = ["-m", "test_vit", "--weights", str(weights), "--data", f"imagenet-p={val_root}", "--allow-partial",
            "-d", "imagenet-p", "--data-option", f"imagenet-p.perturbations={','.join(PERTURBATIONS)}",
            "--data-option", f"imagenet-p.difficulty={DIFFICULTY}", "--data-option", f"imagenet-p.build_dir={build_dir}",
            "--data-option", "imagenet-p.build_workers=2", "-b", "cpu", "--bench", "validate",
            "--img-size", str(IMG_SIZE), "--batch-size", "64", "--workers", "0"]
    result = invoke_run(*args, "--data-option", f"imagenet-p.reference={ref_file}", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "imagenet-p: making 9 sequences (309 PNG frames)" in result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "3 images x 3 perturbations = 9 sequences, 309 frames per model (difficulty 2)" in text
    assert "no reference" not in result.output

    (folder,) = [p for p in build_dir.iterdir() if p.is_dir()]
    files = [sorted((val_root / SYNSETS[c]).glob("*.JPEG"))[0] for c in CHOSEN]
    for perturbation in PERTURBATIONS:
        kind = "gaussian_noise_2" if perturbation == "gaussian_noise" else perturbation
        for f in files:
            sequence = folder / kind / f.parent.name / f.stem
            expected = oracle_sequence(f, perturbation, DIFFICULTY)
            made = sorted(sequence.glob("*.png"))
            assert len(made) == len(expected)
            for frame, png in zip(expected, made):
                assert np.array_equal(np.asarray(Image.open(png)), frame), png
    assert not (folder / "gaussian_noise").exists() and not (folder / "brightness" / SYNSETS[3]).exists()

    expected = oracle_scores(model, files, DIFFICULTY, reference)
    assert 0 < expected["brightness_fp"] < 100 and expected["gaussian_noise_t5d"] > 0
    out = tmp_path / "out" / "results-imagenet-p.csv"
    header = out.read_text().splitlines()[0].split(",")
    assert header[:9] == ["model", "img_size", "mfr", "mt5d", "flip_prob", "top5_dist", "top1", "top5", "sequences"]
    assert header[9:15] == [f"{p}_{s}" for p in PERTURBATIONS for s in ("fp", "t5d")]
    row = one_csv_row(out)
    for column, value in expected.items():
        assert row[column] == f"{value:.3f}", column
    assert row["sequences"] == "9"  # 3 images x 3 perturbations, none left out

    # Without a reference: the raw columns as before, mfr and mt5d empty, said once; the frames
    # are read, not made again.
    again = invoke_run(*args, "--out", str(tmp_path / "out2"))
    assert again.exit_code == 0, again.output
    assert "making" not in again.output
    assert " ".join(again.output.split()).count("no reference: mfr and mt5d are empty") == 1
    plain = one_csv_row(tmp_path / "out2" / "results-imagenet-p.csv")
    assert plain["mfr"] == "" and plain["mt5d"] == ""
    assert plain["flip_prob"] == row["flip_prob"] and plain["translate_t5d"] == row["translate_t5d"]


def test_scorer_leaves_out_sequences_with_a_missing_frame():
    """Two brightness sequences of 31 frames, difficulty 1; the first always predicts 3 (FP 0),
    the second alternates 3, 5 (FP 1). With a frame of the first missing, only the second is
    scored: FP 100 %. The other classes keep their order 0 > 1 > 2 > 4 below the winner, so a
    pair 3 0 1 2 4 / 5 0 1 2 4 costs |0 - 5| = 5 (the winner leaves the top 5): T5D 5 for the
    second sequence, 0 for the first."""
    blocks = [("brightness", 0, 2, 31)]
    scorer = imagenet_p.StabilityScorer(blocks, 1, {"brightness": (50.0, 2.5)})
    logits = torch.zeros(62, 10)
    logits[:, :] = torch.arange(10, 0, -1).float() * 0.01  # 0 > 1 > 2 > ... below the winner
    logits[:31, 3] = 1.0
    logits[31:, 3] = torch.tensor([1.0 if i % 2 == 0 else 0.0 for i in range(31)])
    logits[31:, 5] = torch.tensor([0.0 if i % 2 == 0 else 1.0 for i in range(31)])
    everything = scorer(predictions_of(logits, [0] * 62))
    assert everything["brightness_fp"] == pytest.approx(50.0) and everything["sequences"] == 2
    assert everything["brightness_t5d"] == pytest.approx(2.5)
    assert everything["mfr"] == pytest.approx(100.0) and everything["mt5d"] == pytest.approx(100.0)
    kept = [i for i in range(62) if i != 7]
    part = scorer(predictions_of(logits[kept], [0] * 61, kept))
    assert part["brightness_fp"] == pytest.approx(100.0) and part["sequences"] == 1
    assert part["brightness_t5d"] == pytest.approx(5.0)


def test_wrong_options_are_one_line_errors(val_root, tmp_path):
    base = ["-m", "test_vit", "--weights", "random", "--data", f"imagenet-p={val_root}", "--allow-partial", "-d", "imagenet-p", "-b", "cpu",
            "--bench", "validate", "--out", str(tmp_path)]
    bad_ref = tmp_path / "ref.csv"
    bad_ref.write_text("perturbation,flip_prob,top5_dist\nbrightness,1.0,2.0\n")
    for option, message in [
        ("imagenet-p.difficulty=4", "choose one of 1, 2, 3"),
        ("imagenet-p.perturbations=fog", "choose from gaussian_noise"),
        ("imagenet-p.per_class=0", "give a whole number >= 1"),
        (f"imagenet-p.reference={bad_ref}", "has no row for 'gaussian_noise'"),
        (f"imagenet-p.reference={tmp_path / 'missing.csv'}", "cannot read it"),
    ]:
        result = invoke_run(*base, "--data-option", option)
        assert result.exit_code != 0
        assert message in " ".join(result.output.split()), (option, result.output)
        assert "Traceback" not in result.output
    # A complete set is asked for without --allow-partial.
    result = invoke_run(*[a for a in base if a != "--allow-partial"])
    assert result.exit_code != 0 and "of the 167 chosen classes missing" in " ".join(result.output.split())


def test_listing_makes_nothing_and_each_perturbation_is_a_slice_of_its_frames(val_root, tmp_path):
    """`load` lists every frame without making one; the build's slices (a sequence kind each)
    cover exactly the frame samples, in order."""
    from rbench import DataRequest

    build_dir = tmp_path / "made"
    source = imagenet_p.load(DataRequest(path=val_root, cache_dir=tmp_path / "cache", allow_partial=True, options={
        "perturbations": ",".join(PERTURBATIONS), "difficulty": str(DIFFICULTY), "build_dir": str(build_dir)}))
    assert not build_dir.exists() and not (tmp_path / "cache").exists()
    kinds = ["gaussian_noise_2", "brightness", "translate"]
    assert [name for name, _, _ in source.build.slices] == kinds
    edges = [0]
    for kind, first, end in source.build.slices:
        assert first == edges[-1]
        assert all(Path(path).relative_to(source.build.folder).parts[0] == kind for path, _ in source.samples[first:end])
        edges.append(end)
    assert edges[-1] == len(source.samples) == 3 * (31 + 31 + 41)
