"""Conformance of backend stacks against the reference stack: `conformance-<view>.csv` against an
independent loop (PIL open, timm's eval transform, a plain forward on each stack), the pass
rule at its threshold, and `rbench check-backend`'s verdict and exit status."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import rbench
from rbench import BackendSpec, hookimpl
from rbench.conformance import PASS_RATIO, passes
from rbench.registry import load_registry

from . import imagenet_fixtures
from .conftest import invoke_apart

PERTURBED_CLASS = 999  # the pinned-head model gives it a logit near -1000: it wins only when pushed far
AMOUNTS = {"perturb-small": 10.0, "perturb-large": 5000.0}


class Perturbed(torch.nn.Module):
    """The model's logits plus a known vector: `amount` on class `PERTURBED_CLASS`, 0 elsewhere."""

    def __init__(self, model, amount: float):
        super().__init__()
        self.model, self.amount = model, amount

    def forward(self, x):
        logits = self.model(x)
        return logits + perturbation(logits.shape[1], self.amount)


def perturbation(classes: int, amount: float):
    delta = torch.zeros(classes)
    delta[PERTURBED_CLASS] = amount
    return delta


class PerturbingBackend:
    """A test plugin: modifiers that move one class's logit by a known amount."""

    @hookimpl
    def rbench_backends(self):
        return [BackendSpec(name=name, description="test: perturbs one logit", modifier=True,
                            prepare_model=lambda model, amount=amount: Perturbed(model, amount))
                for name, amount in AMOUNTS.items()]


@pytest.fixture
def perturbing(monkeypatch):
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:perturb", PerturbingBackend())]))


def oracle_logits(model, root, autocast: bool = False):
    """Every image's logits and labels, the images in rbench's order, one batch of all of them."""
    classes = sorted((p.name for p in root.iterdir()), key=int)
    config = resolve_data_config({}, model=model, use_test_size=True)
    transform = create_transform(**config, is_training=False)
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            images.append(transform(Image.open(path).convert("RGB")))
            labels.append(label)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(torch.stack(images)).float()
    return logits, torch.tensor(labels)


def expected_row(reference, target, labels) -> dict[str, float]:
    top1 = 100.0 * (target.argmax(1) == labels).float().mean().item()
    reference_top1 = 100.0 * (reference.argmax(1) == labels).float().mean().item()
    difference = (target - reference).abs().double()
    return {"top1": top1, "reference_top1": reference_top1, "top1_delta": top1 - reference_top1,
            "top1_agreement": 100.0 * (target.argmax(1) == reference.argmax(1)).float().mean().item(),
            "logit_absdiff_max": difference.amax(1).max().item(), "logit_absdiff_mean": difference.mean(1).mean().item(),
            "pass": top1 >= 0.99 * reference_top1}


@pytest.mark.parametrize("stack", ["cpu-amp-bf16", "cpu+perturb-small", "cpu+perturb-large"])
def test_conformance_file_equals_an_independent_loop(stack, image_folder, tmp_path, perturbing):
    weights = tmp_path / "model.safetensors"
    model = imagenet_fixtures.pinned_head_model(4321, list(range(8)), weights, name="test_vit")
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit", "--data-dir", str(image_folder), "--weights", str(weights),
                          "--bench", "validate", "-b", f"cpu,{stack}", "--out", str(out), "--batch-size", "32",
                          "--workers", "0", "--no-cache")
    assert result.exit_code == 0, result.output + result.stderr
    with open(out / "conformance-imagefolder.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    reference, labels = oracle_logits(model, image_folder)
    if stack == "cpu-amp-bf16":
        target, _ = oracle_logits(model, image_folder, autocast=True)
    else:
        target = reference + perturbation(reference.shape[1], AMOUNTS[stack.split("+")[1]])
    expected = expected_row(reference, target, labels)
    assert 0 < expected["reference_top1"] < 100  # the check is not trivially all-right or all-wrong
    assert (row["model"], row["img_size"], row["stack"], row["reference"]) == ("test_vit.r160_in1k", "160", stack, "cpu")
    assert int(row["images"]) == 32
    for column in ("top1", "reference_top1", "top1_delta", "top1_agreement"):
        assert float(row[column]) == pytest.approx(expected[column], abs=1e-9), column
    # rbench normalises (x - 255 mean) / (255 std) on the device, timm's transform (x / 255 - mean) / std:
    # the inputs differ in their last bits, so the logits may too.
    tolerance = 1e-3 if stack == "cpu-amp-bf16" else 1e-5
    for column in ("logit_absdiff_max", "logit_absdiff_mean"):
        assert float(row[column]) == pytest.approx(expected[column], rel=0.02, abs=tolerance), column
    assert row["pass"] == str(expected["pass"]).lower()
    # The reference stack's files are what a single-stack run writes: one row, the reference's top-1.
    with open(out / "results-imagefolder.csv", newline="") as f:
        (result_row,) = list(csv.DictReader(f))
    assert result_row["top1"] == f"{expected['reference_top1']:.3f}"
    if stack == "cpu+perturb-small":  # pushed, but not far enough to win anywhere: same answers
        assert expected["top1_agreement"] == 100.0 and row["pass"] == "true"
        assert float(row["logit_absdiff_max"]) == pytest.approx(AMOUNTS["perturb-small"], rel=1e-5)
    if stack == "cpu+perturb-large":  # class 999 wins everywhere: no image is right
        assert expected["top1"] == 0.0 and row["pass"] == "false"
    rebuilt = tmp_path / "rebuilt"
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(rebuilt))
    assert report.exit_code == 0, report.stderr
    assert (rebuilt / "conformance-imagefolder.csv").read_bytes() == (out / "conformance-imagefolder.csv").read_bytes()


def test_pass_flips_at_the_threshold():
    assert PASS_RATIO == 0.99
    assert passes(99.0, 100.0) and passes(49.5, 50.0) and passes(50.0, 50.0)
    assert not passes(98.99, 100.0) and not passes(49.49, 50.0)
    assert passes(0.0, 0.0) and passes(None, 50.0) is None and passes(50.0, None) is None


def test_check_backend_passes_on_cpu_and_fails_on_a_perturbing_backend(perturbing):
    passed = invoke_apart("check-backend", "cpu")
    assert passed.exit_code == 0, passed.output + passed.stderr
    assert "cpu: PASS" in passed.output
    assert "test_vit.r160_in1k" in passed.output and "test_efficientnet.r160_in1k" in passed.output
    failed = invoke_apart("check-backend", "cpu+perturb-large")
    assert failed.exit_code == 1, failed.output + failed.stderr
    assert "cpu+perturb-large: FAIL: test_vit.r160_in1k: top-1 agreement 0.00% < 99%" in failed.output


@pytest.mark.parametrize(("stack", "message"), [("nope", "unknown backend 'nope'"),
                                                ("channels-last", "starts with the modifier")])
def test_check_backend_of_a_stack_that_cannot_run_is_one_line_and_exit_2(stack, message):
    result = invoke_apart("check-backend", stack)
    assert result.exit_code == 2
    assert result.stderr.startswith("rbench: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("devices, noted", [(("cpu", "cuda"), True), (("cpu", "cpu"), False)])
def test_a_reference_on_another_device_is_noted_before_the_run(monkeypatch, capsys, devices, noted):
    from types import SimpleNamespace

    import rbench.cli as cli
    import rbench.run

    class Stopped(Exception):
        pass

    def run(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(rbench.run, "run", run)
    stacks = [SimpleNamespace(name=f"stack{i}", device=d) for i, d in enumerate(devices)]
    plan = SimpleNamespace(options=SimpleNamespace(benches=("validate",), weights="random"), models=["m"],
                           stacks=stacks, sources=[])
    with pytest.raises(Stopped):
        cli._run_and_report(plan, None, cli._console(), embedded=False, force=False, retry_failed=False, html=None)
    err = capsys.readouterr().err
    assert ("the validation cells of stack1 also run the reference stack stack0 on its cpu device" in err) == noted
