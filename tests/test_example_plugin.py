"""The installable example plugin (examples/rbench-example-plugin) is found and runs."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from .conftest import write_jpegs

if importlib.util.find_spec("rbench_example_plugin") is None:
    message = "install it with: pip install ./examples/rbench-example-plugin"
    if os.environ.get("CI"):
        pytest.fail(f"the example plugin is not installed; {message}", pytrace=False)
    pytest.skip(f"the example plugin is not installed; {message}", allow_module_level=True)


def rbench(*args):
    return subprocess.run([sys.executable, "-m", "rbench", *args], capture_output=True, text=True)


def test_example_dataset_is_listed():
    result = rbench("list", "datasets")
    assert result.returncode == 0, result.stderr
    assert "csvfolder" in result.stdout
    assert "rbench.datasets:csvfolder" in rbench("plugins").stdout


def test_example_dataset_runs_and_scores_its_labels(tmp_path):
    folder = tmp_path / "flat"
    images = write_jpegs(folder, 6, seed=3)
    torch.manual_seed(5)
    model = timm.create_model("test_vit").eval()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    transform = create_transform(**resolve_data_config({}, model=model, use_test_size=True), is_training=False)
    with torch.no_grad():
        predicted = [int(model(transform(Image.open(p).convert("RGB"))[None]).argmax()) for p in images]
    # Label the first half with the prediction and the rest with a class it did not predict: 50% top-1.
    labels = predicted[:3] + [(c + 1) % 1000 for c in predicted[3:]]
    (folder / "labels.csv").write_text("filename,label\n" + "".join(f"{p.name},{c}\n" for p, c in zip(images, labels)))
    out = tmp_path / "out"
    result = rbench("run", "-m", "test_vit", "--weights", str(weights), "-d", "csvfolder",
                    "--data", f"csvfolder={folder}", "--bench", "validate", "--out", str(out), "--workers", "0")
    assert result.returncode == 0, result.stderr
    (row,) = list(csv.DictReader((out / "results-csvfolder.csv").open()))
    assert row["top1"] == "50.000"
