"""imagenet-p on the published folder (`<perturbation>/<wnid>/<name>.mp4`): a miniature made
here with PyAV's libx264, decoded by rbench, scored against an oracle that decodes with OpenCV
(the reader of the reference test.py), and its layout errors."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from timm.data import create_transform, resolve_data_config
from PIL import Image

from rbench.frontend.cli import main

from . import imagenet_fixtures
from .test_imagenet_p_scores import literal_scores

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

SYNSETS = imagenet_fixtures.info_lines("imagenet_synsets.txt")
CLASSES = [0, 6]
IMG_SIZE = 32
LENGTHS = {"gaussian_noise": 31, "translate": 41}


def write_video(path, frames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 224, 224, "yuv444p"
        stream.options = {"crf": "10"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two classes x two perturbations, one video each: a coarse random pattern that drifts
    (translate) or gets new noise each frame (gaussian_noise)."""
    root = tmp_path_factory.mktemp("imagenet-p-published") / "imagenet-p"
    rng = np.random.default_rng(9)
    for c in CLASSES:
        base = cv2.resize(rng.integers(0, 256, (12, 12, 3)).astype(np.uint8), (224, 224), interpolation=cv2.INTER_LINEAR)
        moved = [np.roll(base, 3 * i, axis=1) for i in range(41)]
        write_video(root / "translate" / SYNSETS[c] / f"ILSVRC2012_val_{c + 1:08d}.mp4", moved)
        noisy = [base] + [np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(30)]
        write_video(root / "gaussian_noise" / SYNSETS[c] / f"ILSVRC2012_val_{c + 1:08d}.mp4", noisy)
    return root


def cv2_frames(path) -> np.ndarray:
    """test.py's reader: cv2.VideoCapture, every frame BGR to RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    return np.stack(frames)


def test_published_videos_are_decoded_and_scored(published, tmp_path):
    model = imagenet_fixtures.pinned_head_model(6, list(range(0, 1000, 50)), tmp_path / "vit.safetensors", name="test_vit")
    args = ["run", "-m", "test_vit", "--weights", str(tmp_path / "vit.safetensors"), "--data", f"imagenet-p={published}",
            "--allow-partial", "-d", "imagenet-p", "--data-option", "imagenet-p.perturbations=gaussian_noise,translate",
            "--data-option", f"imagenet-p.build_dir={tmp_path / 'decoded'}", "--data-option", "imagenet-p.build_workers=1",
            "-b", "cpu", "--bench", "validate", "--img-size", str(IMG_SIZE), "--batch-size", "64", "--workers", "0",
            "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "imagenet-p: decoding 4 sequences (144 PNG frames)" in text
    assert "published ImageNet-P at" in text and "4 videos, 144 frames per model" in text

    (folder,) = [p for p in (tmp_path / "decoded").iterdir() if p.is_dir()]
    config = resolve_data_config({"img_size": IMG_SIZE}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    expected = {}
    for perturbation, length in LENGTHS.items():
        videos = []
        for c in CLASSES:
            video = published / perturbation / SYNSETS[c] / f"ILSVRC2012_val_{c + 1:08d}.mp4"
            frames = cv2_frames(video)
            assert len(frames) == length
            made = sorted((folder / perturbation / SYNSETS[c] / video.stem).glob("*.png"))
            assert [np.asarray(Image.open(p)).tobytes() for p in made] == [f.tobytes() for f in frames]
            x = torch.stack([transform(Image.fromarray(np.ascontiguousarray(f))) for f in frames])
            with torch.no_grad():
                videos.append(model(x).numpy())
        fp, t5 = literal_scores(np.stack(videos), "noise" in perturbation, 1)
        expected[f"{perturbation}_fp"], expected[f"{perturbation}_t5d"] = 100 * fp, t5
    with open(tmp_path / "out" / "results-imagenet-p.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    for column, value in expected.items():
        assert row[column] == f"{value:.3f}", column
    assert row["sequences"] == "4" and row["mfr"] == ""
    assert 0 < expected["translate_fp"] and expected["translate_t5d"] > 0


def test_published_layout_errors(published, tmp_path, monkeypatch):
    base = ["run", "-m", "test_vit", "--weights", "random", "-d", "imagenet-p", "-b", "cpu", "--bench", "validate",
            "--out", str(tmp_path / "out")]

    def error(root, *extra):
        result = CliRunner().invoke(main, [*base, "--data", f"imagenet-p={root}", *extra])
        assert result.exit_code != 0 and "Traceback" not in result.output
        return " ".join(result.output.split())

    assert "is partial" in error(published)  # 2 of 1000 classes, without --allow-partial
    mixed = tmp_path / "mixed"
    (mixed / "translate" / SYNSETS[0]).mkdir(parents=True)
    (mixed / "holiday").mkdir()
    assert "mixes ImageNet-P perturbation folders with 'holiday'" in error(mixed)
    odd = tmp_path / "odd"
    (odd / "translate" / "cats").mkdir(parents=True)
    assert "has the folder 'cats', which is not an ImageNet class" in error(odd, "--allow-partial")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    assert "needs PyAV (the av package): pip install 'rbench[video]'" in error(published, "--allow-partial")
