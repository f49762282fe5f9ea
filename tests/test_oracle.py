"""rbench's top-1/top-5 against an independent loop: PIL open, timm's eval transform, plain
forward, top-k, on an ImageFolder of real JPEG files."""

from __future__ import annotations

import csv
import hashlib

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from timm.data import create_transform, resolve_data_config

from rbench.frontend.cli import main

from . import imagenet_fixtures


def oracle_accuracy(model, root) -> tuple[float, float, int]:
    classes = sorted((p.name for p in root.iterdir()), key=int)
    config = resolve_data_config({}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    top1 = top5 = total = 0
    with torch.no_grad():
        for label, name in enumerate(classes):
            for path in sorted((root / name).iterdir()):
                image = transform(Image.open(path).convert("RGB")).unsqueeze(0)
                top = model(image)[0].topk(5).indices.tolist()
                top1 += top[0] == label
                top5 += label in top
                total += 1
    return 100.0 * top1 / total, 100.0 * top5 / total, total


@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet"])
def test_written_accuracy_equals_independent_loop(name, image_folder, tmp_path):
    weights = tmp_path / f"{name}.safetensors"
    model = imagenet_fixtures.pinned_head_model(1234, list(range(8)), weights, name=name)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", "-m", name, "--data-dir", str(image_folder), "--weights", str(weights),
        "--bench", "validate", "--out", str(out), "--batch-size", "5", "--workers", "0",
    ])
    assert result.exit_code == 0, result.output
    with open(out / "results-imagefolder.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    top1, top5, total = oracle_accuracy(model, image_folder)
    assert total == 32
    assert 0 < top1 < 100 and top5 > top1  # the check is not trivially all-right or all-wrong
    assert row["top1"] == f"{top1:.3f}"
    assert row["top5"] == f"{top5:.3f}"
    assert row["top1_err"] == f"{100 - top1:.3f}"
    assert row["top5_err"] == f"{100 - top5:.3f}"
    # a checkpoint's rows are named by its architecture and content
    assert row["model"] == f"{name}@ckpt-{hashlib.sha256(open(weights, 'rb').read()).hexdigest()[:12]}"
    assert row["img_size"] == "160" and row["crop_pct"] == "0.950" and row["interpolation"] == "bicubic"
    assert row["param_count"] == f"{sum(p.numel() for p in model.parameters()) / 1e6:,.2f}"
