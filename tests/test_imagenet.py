"""The ImageNet test sets against an independent oracle, on miniature copies of every layout."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import rbench.registry
from rbench import BackendSpec, hookimpl
from rbench.plugins.datasets import imagenet as imagenet_plugin
from rbench.registry import load_registry

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_run

IMG_SIZE = 64
BATCH = 64
A = [int(i) for i in imagenet_fixtures.info_lines("imagenet_a_indices.txt")]
R = [int(i) for i in imagenet_fixtures.info_lines("imagenet_r_indices.txt")]
FAVOURED = [c for c in A if c in R][:8]  # classes the test model can predict
SOURCES = "imagenet,imagenetv2-matched-frequency,sketch,imagenet-a,imagenet-r"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet-fixtures")
    counts = imagenet_fixtures.build(root, FAVOURED)
    return root, counts


@pytest.fixture
def complete(data_root, monkeypatch):
    """The miniature counts stand in for the published ones: the fixture is 'complete'."""
    root, counts = data_root
    monkeypatch.setattr(imagenet_plugin, "EXPECTED", counts)
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random test_byobnet that can only predict FAVOURED, and its weights file."""
    path = tmp_path_factory.mktemp("weights") / "byob.safetensors"
    return imagenet_fixtures.pinned_head_model(7, FAVOURED, path), path


class ForwardCounter:
    """A test backend modifier that counts forward passes."""

    calls = 0

    @hookimpl
    def rbench_backends(self):
        def wrap(model):
            forward = model.forward

            def counted(x):
                ForwardCounter.calls += 1
                return forward(x)

            model.forward = counted
            return model

        return [BackendSpec(name="count-forwards", description="test", modifier=True, prepare_model=wrap)]


@pytest.fixture
def counting_registry(monkeypatch):
    ForwardCounter.calls = 0
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:count", ForwardCounter())]))


def checkpoint_row(architecture: str, weights) -> str:
    """The model column of a checkpoint's rows: its architecture and the start of its content's sha256."""
    return f"{architecture}@ckpt-{hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]}"


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    return {row["model"]: row for row in csv_rows(path)}


# --- the oracle: its own reading of every layout and rule ----------------------------------

def oracle_logits(model, files: list[Path]) -> torch.Tensor:
    config = resolve_data_config({"img_size": IMG_SIZE}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    images = [transform(Image.open(f).convert("RGB")) for f in files]
    with torch.no_grad():  # plain forwards in chunks of 50 (rbench's loader uses other batches)
        return torch.cat([model(torch.stack(images[i:i + 50])) for i in range(0, len(images), 50)])


def topk_score(logits, labels, classes=None):
    """Percent top-1/top-5; a label is an int or a set; `classes` restricts the argmax."""
    right1 = right5 = n = 0
    candidates = list(range(1000)) if classes is None else list(classes)
    for scores, label in zip(logits.tolist(), labels):
        accepted = label if isinstance(label, set) else {label}
        if not accepted:
            continue
        ranked = sorted(candidates, key=lambda c: -scores[c])[:5]
        n += 1
        right1 += ranked[0] in accepted
        right5 += bool(accepted & set(ranked))
    return f"{100 * right1 / n:.3f}", f"{100 * right5 / n:.3f}"


def oracle(model, root: Path) -> dict[str, tuple[str, str]]:
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    real = json.loads((imagenet_fixtures.INFO / "imagenet_real_labels.json").read_text())
    expected = {}

    val = [(f, synsets.index(f.parent.name)) for f in sorted((root / "imagenet" / "val").glob("*/*.JPEG"))]
    val_logits = oracle_logits(model, [f for f, _ in val])
    labels = [c for _, c in val]
    expected["imagenet"] = topk_score(val_logits, labels)
    real_sets = [set(real[int(f.stem.split("_")[-1]) - 1]) for f, _ in val]
    expected["imagenet-real"] = topk_score(val_logits, real_sets)
    for name, subset in (("imagenet-a-clean", A), ("imagenet-r-clean", R)):
        keep = [i for i, c in enumerate(labels) if c in subset]
        expected[name] = topk_score(val_logits[keep], [labels[i] for i in keep], subset)

    v2 = sorted((root / "imagenetv2-matched-frequency-format-val").glob("*/*.jpeg"))
    expected["imagenetv2-matched-frequency"] = topk_score(oracle_logits(model, v2), [int(f.parent.name) for f in v2])
    sketch = sorted((root / "sketch").glob("*/*.JPEG"))
    expected["sketch"] = topk_score(oracle_logits(model, sketch), [synsets.index(f.parent.name) for f in sketch])
    for name, subset in (("imagenet-a", A), ("imagenet-r", R)):
        files = sorted((root / name).glob("*/*.jpg"))
        expected[name] = topk_score(oracle_logits(model, files), [synsets.index(f.parent.name) for f in files], subset)
    return expected


def test_every_view_matches_the_oracle_from_one_val_pass(complete, model_file, counting_registry, tmp_path):
    model, weights = model_file
    out = tmp_path / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "--data-root", str(complete), "-d", SOURCES,
                 "-b", "cpu+count-forwards", "--bench", "validate", "--img-size", str(IMG_SIZE),
                 "--batch-size", str(BATCH), "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output

    counts = imagenet_plugin.EXPECTED
    expected_passes = sum(math.ceil(counts[s][1] / BATCH) for s in SOURCES.split(","))
    assert ForwardCounter.calls == expected_passes  # val was read once for its four views

    expected = oracle(model, complete)
    assert len(expected) == 8
    for view, (top1, top5) in expected.items():
        row = read_rows(out / f"results-{view}.csv")[checkpoint_row("test_byobnet", weights)]
        assert (row["top1"], row["top5"]) == (top1, top5), view
    assert float(expected["imagenet-a"][1]) > 0 and float(expected["imagenet"][1]) > 0

    header = (out / "results-imagenet-a.csv").read_text().splitlines()[0]
    assert header.endswith(",top1_diff,top5_diff,rank_diff")
    a_row = read_rows(out / "results-imagenet-a.csv")[checkpoint_row("test_byobnet", weights)]
    clean = expected["imagenet-a-clean"]
    assert a_row["top1_diff"] == f"{float(expected['imagenet-a'][0]) - float(clean[0]):+.3f}"
    assert a_row["rank_diff"] == "0"
    real_row = read_rows(out / "results-imagenet-real.csv")[checkpoint_row("test_byobnet", weights)]
    assert real_row["top5_diff"] == f"{float(expected['imagenet-real'][1]) - float(expected['imagenet'][1]):+.3f}"
    assert (out / "results-imagenet.csv").read_text().splitlines()[0] == \
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"


def test_view_names_select_views(complete, model_file, tmp_path):
    _, weights = model_file
    out = tmp_path / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "--data-root", str(complete),
                 "-d", "imagenet-real,imagenet-a-clean", "--bench", "validate", "--img-size", str(IMG_SIZE),
                 "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    # and the 1000-way view that the imagenet plugin adds beside each 200-class view run
    assert sorted(p.name for p in out.glob("results-*.csv")) == [
        "results-imagenet-a-clean-1k.csv", "results-imagenet-a-clean.csv", "results-imagenet-real.csv"]
    assert sorted(p.name for p in out.glob("metrics-*.csv")) == [
        "metrics-imagenet-a-clean-1k.csv", "metrics-imagenet-a-clean.csv", "metrics-imagenet-real.csv"]


def test_flat_val_folder_with_a_label_file(complete, model_file, tmp_path):
    _, weights = model_file
    flat = tmp_path / "flat" / "val"
    flat.mkdir(parents=True)
    lines = ["ImageId,PredictionString"]
    for f in sorted((complete / "imagenet" / "val").glob("*/*.JPEG")):
        shutil.copy(f, flat / f.name)
        lines.append(f"{f.stem},{f.parent.name} 1 2 3 4")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    common = ["-m", "test_byobnet", "--weights", str(weights), "-d", "imagenet", "--bench", "validate",
              "--img-size", str(IMG_SIZE), "--workers", "0"]
    result = invoke_run(*common, "--data", f"imagenet={flat}", "--out", str(out_a))
    assert result.exit_code == 2 and "flat folder of val images without labels" in result.stderr
    (flat.parent / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    assert invoke_run(*common, "--data", f"imagenet={flat}", "--out", str(out_a)).exit_code == 0
    assert invoke_run(*common, "--data-root", str(complete), "--out", str(out_b)).exit_code == 0
    for view in ("imagenet", "imagenet-real", "imagenet-a-clean", "imagenet-r-clean"):
        assert (out_a / f"results-{view}.csv").read_text() == (out_b / f"results-{view}.csv").read_text()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("damage", "args", "message"),
    [
        ("v2-wnids", ["-d", "imagenetv2-matched-frequency"], "ImageNetV2's folders are class indices 0..999"),
        ("val-ints", ["-d", "imagenet"], "looks like ImageNetV2's integer folders"),
        ("missing-class", ["-d", "sketch"], "sketch at {root}/sketch is partial: 1,031 of 1,032 images, 999 of 1000"),
        ("missing-class-real", ["-d", "imagenet-real", "--allow-partial"], "ImageNet-ReaL needs the complete"),
        ("none", ["-d", "imagenet-a", "--data", "imagenet-a=/no/such/folder"], "imagenet-a folder /no/such/folder does not exist"),
    ],
)
def test_bad_layouts_are_one_line_errors(damage, args, message, complete, tmp_path):
    root = complete
    if damage != "none":
        root = tmp_path / "root"
        root.mkdir()
        for name in ("imagenet", "imagenetv2-matched-frequency-format-val", "sketch"):
            (root / name).symlink_to(complete / name)
    if damage == "v2-wnids":
        (root / "imagenetv2-matched-frequency-format-val").unlink()
        (root / "imagenetv2-matched-frequency-format-val").symlink_to(complete / "sketch")
    elif damage == "val-ints":
        (root / "imagenet").unlink()
        (root / "imagenet").mkdir()
        (root / "imagenet" / "val").symlink_to(complete / "imagenetv2-matched-frequency-format-val")
    elif damage == "missing-class":
        (root / "sketch").unlink()
        _copy(complete / "sketch", root / "sketch")
        shutil.rmtree(root / "sketch" / "n01440764")
    elif damage == "missing-class-real":
        (root / "imagenet").unlink()
        _copy(complete / "imagenet", root / "imagenet")
        shutil.rmtree(root / "imagenet" / "val" / "n01440764")
    result = invoke_run("-m", "test_byobnet", "--weights", "random", "--data-root", str(root), "--bench", "validate", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message.format(root=root) in line


def test_partial_set_runs_with_allow_partial_and_rows_say_the_count(complete, tmp_path):
    root = tmp_path / "root"
    _copy(complete / "imagenet-r", root / "imagenet-r")
    shutil.rmtree(next((root / "imagenet-r").iterdir()))
    total = sum(1 for _ in (root / "imagenet-r").glob("*/*.jpg"))
    out = tmp_path / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", "random", "--data-root", str(root), "-d", "imagenet-r",
                 "--bench", "validate", "--img-size", str(IMG_SIZE), "--workers", "0", "--allow-partial", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = (out / "results-imagenet-r.csv").read_text().splitlines()
    assert lines[0].endswith(",rank_diff,images")
    assert lines[1].endswith(f",{total}")


def test_truncated_jpeg_is_reported_and_left_out(complete, model_file, tmp_path):
    model, weights = model_file
    root = tmp_path / "root"
    _copy(complete / "imagenet-a", root / "imagenet-a")
    files = sorted((root / "imagenet-a").glob("*/*.jpg"))
    broken = files[5]
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated JPEG
    out = tmp_path / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "--data-root", str(root), "-d", "imagenet-a",
                 "--bench", "validate", "--img-size", str(IMG_SIZE), "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "1 unreadable image(s) were left out of the metrics" in result.output
    assert str(broken) in result.output.replace("\n", "")
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    kept = [f for f in files if f != broken]
    expected = topk_score(oracle_logits(model, kept), [synsets.index(f.parent.name) for f in kept], A)
    row = read_rows(out / "results-imagenet-a.csv")[checkpoint_row("test_byobnet", weights)]
    assert (row["top1"], row["top5"]) == expected
    records = list((out / "store" / "records").glob("*.json"))
    assert any(str(broken) in json.loads(p.read_text()).get("unreadable", []) for p in records)
