"""Backends outside PyTorch (ONNX Runtime, OpenVINO): their logits against PyTorch's, their
benchmark rows, and a model their exporter rejects becoming a failed cell while the grid completes."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from rbench import ExportedModel, ExportError, exporter_reason
from rbench.worker.backends import resolve_stack
from rbench.worker.models import create_model
from rbench.registry import load_registry

from .conftest import csv_rows, invoke_apart

RUNTIMES = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino",)}
# fp32 on both sides; the runtimes fuse and reorder ops, so the last bits move: the largest
# difference must stay under this fraction of the largest logit (seen: 2e-6 at most).
TOLERANCE = 1e-4


def needs(runtime: str):
    missing = [m for m in RUNTIMES[runtime] if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed (pip install "
                                                     f"'rbench[{'onnx' if runtime == 'onnxruntime' else runtime}]')")


RUNTIME_PARAMS = [pytest.param(r, marks=needs(r)) for r in RUNTIMES]


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet"])
def test_logits_match_pytorch(runtime, name):
    stack = resolve_stack(runtime, load_registry())
    model = create_model(name, "random")
    exported = stack.prepare_model(create_model(name, "random"))
    batch = torch.randn(5, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(batch)
        got = exported(batch)
        single = exported(batch[:2])  # another batch size: the same exported program
    assert got.shape == expected.shape == (5, 1000) and got.dtype == torch.float32
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= TOLERANCE * scale
    assert (single - expected[:2]).abs().max().item() <= TOLERANCE * scale
    assert torch.equal(got.argmax(1), expected.argmax(1))
    with pytest.raises(NotImplementedError, match="runs inference only"):
        exported.train()


def test_exported_model_converts_once_per_shape_when_the_batch_cannot_be_freed():
    """A fake runtime whose exporter refuses a free batch size: one program per batch shape."""
    made = []

    def convert(model, example, dynamic):
        if dynamic:
            raise ExportError("no free batch size")
        made.append(tuple(example.shape))
        return lambda array: array.reshape(len(array), -1)[:, :3] * 2.0

    exported = ExportedModel(torch.nn.Identity(), convert, "fake")
    batch = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    for _ in range(2):
        assert torch.equal(exported(batch), batch.reshape(2, -1)[:, :3] * 2.0)
    exported(batch[:1])
    assert made == [(2, 3, 2, 2), (1, 3, 2, 2)]  # the second call of batch 2 reused its program

    def refuse(model, example, dynamic):
        raise ExportError(f"cannot ({'dynamic' if dynamic else 'static'})")

    with pytest.raises(ExportError, match=r"cannot \(static\)"):
        ExportedModel(torch.nn.Identity(), refuse, "fake")(batch)


def test_exporter_reason_picks_the_line_that_says_why():
    long = RuntimeError("Failed to convert. \x1b[96mThis is step 3/3\x1b[0m\n- hints\n\n## Exception summary\n\n"
                        "<class 'torch.onnx._internal.exporter._errors.DispatchError'>: No ONNX function for  aten.x\n")
    assert exporter_reason(long, r"^<class '[\w.]*?(\w+)'>: (.*)$") == "DispatchError: No ONNX function for aten.x"
    assert exporter_reason(long, r"^-- (.*)$") == "RuntimeError: Failed to convert. This is step 3/3"


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
def test_benchmark_rows_are_written_with_export_time_and_train_is_a_failed_row(runtime, tmp_path):
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit,test_efficientnet", "-b", runtime, "--bench", "infer,train",
                          "--weights", "random", "--executor", "local", "--batch-size", "4", "--warmup-steps", "1",
                          "--bench-steps", "2", "--bench-seconds", "0", "--out", str(out))
    assert result.exit_code == 1, result.output + result.stderr  # the train cells failed, the grid finished
    (infer,) = out.glob(f"benchmark-infer-fp32-nchw-*-{runtime}.csv")
    rows = csv_rows(infer)
    assert sorted(r["model"] for r in rows) == ["test_efficientnet@random", "test_vit@random"]
    assert all(float(r["infer_samples_per_sec"]) > 0 and r["infer_batch_size"] == "4" for r in rows)
    detailed = csv_rows(out / "detailed" / infer.name)
    assert all(r["status"] == "ok" and float(r["compile_s"]) > 0 and r["backend"] == runtime for r in detailed)
    (train,) = (out / "detailed").glob(f"benchmark-train-*-{runtime}.csv")
    assert {(r["status"], r["error"]) for r in csv_rows(train)} == {
        ("failed", f"batch 4: NotImplementedError: {runtime} runs inference only; benchmark train on a PyTorch backend")}
    failures = csv_rows(out / "failures.csv")
    assert sorted((r["model"], r["bench"], r["backend"]) for r in failures) == [
        ("test_efficientnet@random", "train", runtime), ("test_vit@random", "train", runtime)]


class EigenPool(torch.nn.Module):
    """Global average pooling plus zero times an eigenvalue sum: the same logits, but an op
    (`aten.linalg_eig`) that neither torch.onnx nor OpenVINO's converter can translate."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        return self.pool(x) + 0.0 * torch.linalg.eigvals(x[:, :, :2, :2]).real.sum(-1)


def test_unexportable(pretrained=False, **kwargs):
    """timm's test_efficientnet with `EigenPool` as its pooling (registered with timm below)."""
    import timm

    model = timm.create_model("test_efficientnet", pretrained=False, **kwargs)
    model.global_pool = EigenPool(model.global_pool)
    model.pretrained_cfg = {**model.pretrained_cfg, "architecture": "test_unexportable", "tag": None}
    return model


test_unexportable.__test__ = False  # a timm model entry point, not a test


@pytest.fixture
def unexportable():
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # registering again in the same session overwrites
        timm.models.register_model(test_unexportable)
    return "test_unexportable"


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx", "onnxscript", "openvino")),
                    reason="onnxruntime, onnx, onnxscript and openvino are needed (pip install 'rbench[onnx,openvino]')")
def test_a_model_that_cannot_be_exported_is_a_failure_row_and_the_grid_completes(unexportable, tmp_path):
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", f"{unexportable},test_efficientnet", "-b", "cpu,onnxruntime,openvino",
                          "--bench", "validate", "--weights", "random", "--limit", "8", "--batch-size", "4",
                          "--workers", "0", "--out", str(out))
    assert result.exit_code == 1, result.output + result.stderr
    failures = csv_rows(out / "failures.csv")
    assert sorted((r["model"], r["bench"], r["backend"], r["status"]) for r in failures) == [
        (f"{unexportable}@random", "validate", "onnxruntime", "export-failed"),
        (f"{unexportable}@random", "validate", "openvino", "export-failed")]
    reasons = {r["backend"]: r["message"] for r in failures}
    assert reasons["onnxruntime"].startswith("torch.onnx.export failed: DispatchError: No ONNX function found for ")
    assert "aten.linalg_eig" in reasons["onnxruntime"]
    assert reasons["openvino"].startswith("openvino.convert_model failed: No conversion rule found for operations: "
                                          "aten::linalg_eig")
    assert all("\n" not in r["message"] for r in failures)
    # Everything else ran: both models on cpu (the reference), test_efficientnet on both runtimes.
    conformance = csv_rows(out / "conformance-synthetic.csv")
    assert sorted((r["model"], r["stack"]) for r in conformance) == [
        ("test_efficientnet@random", "onnxruntime"), ("test_efficientnet@random", "openvino")]
    # Full agreement is owed, not lucky: fp32 runtimes keep every logit within TOLERANCE of the
    # largest, and on these 8 images the reference's top-1 leads its runner-up by more than twice that.
    reference = reference_logits("test_efficientnet.r160_in1k", 8)
    scale = reference.abs().max().item()
    top2 = reference.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min().item() > 2 * TOLERANCE * scale
    for row in conformance:
        assert float(row["logit_absdiff_max"]) <= TOLERANCE * scale, row
        assert (row["pass"], row["top1_agreement"], row["images"]) == ("true", "100.0", "8"), row
    assert sorted(r["model"] for r in csv_rows(out / "results-synthetic.csv")) == [
        "test_efficientnet@random", "test_unexportable@random"]


def reference_logits(name: str, count: int):
    """The logits of `name` (rbench's random weights) on the first `count` images of the synthetic
    data set, through PIL and timm's eval transform: an oracle outside rbench's loader."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from rbench import DataRequest
    from rbench.paths import cache_dir

    model = create_model(name, "random")
    source = load_registry().datasets["synthetic"].load(DataRequest(path=None, cache_dir=cache_dir()))
    transform = create_transform(**resolve_data_config({}, model=model, use_test_size=True), is_training=False)
    images = torch.stack([transform(Image.open(path).convert("RGB")) for path, _ in source.samples[:count]])
    with torch.inference_mode():
        return model(images)


def test_onnxruntime_reserves_a_gpu_on_ray_only_with_its_gpu_build(monkeypatch):
    import importlib.metadata

    from rbench.plugins.backends import onnxruntime as plugin

    installed = set()

    def distribution(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return object()

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    (spec,) = plugin.rbench_backends()
    assert dict(spec.ray_resources) == {}
    installed.add("onnxruntime-gpu")
    (spec,) = plugin.rbench_backends()
    assert dict(spec.ray_resources) == {"num_gpus": 1}
