"""Conformance of backend stacks against the reference stack: `conformance-<view>.csv` against an
independent loop (PIL open, timm's eval transform, a plain forward on each stack), the pass
rule at its threshold, and `rbench check-backend`'s verdict and exit status."""

from __future__ import annotations

import csv
import json
import re

import polars as pl
import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import rbench
from rbench import BackendSpec, hookimpl
from rbench.report.conformance import PASS_RATIO, passes, verdict
from rbench.report.conformance import decisive as decisive_of
from rbench.registry import load_registry

from . import imagenet_fixtures
from .conftest import invoke_apart, predictions_of

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


def stored_top1(out) -> dict[str, torch.Tensor]:
    """Each stack's stored top-1 class of every image, in the images' order, read from the run's
    predictions files (what the conformance file's agreement pairs)."""
    found = {}
    for path in (out / "store" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        frame = pl.read_parquet(out / "store" / record["predictions"]["file"]).sort("index")
        found[record["cell"]["backend"]] = torch.tensor([classes[0] for classes in frame["topk_class"].to_list()])
    return found


def allowed_top1(center, bound: float):
    """`[images, classes]`: whether each class may be the top-1 of a stack whose every logit lies
    within `bound` of `center`'s. A class more than `2 * bound` below the image's largest logit
    cannot overtake it; within that, rounding may reorder classes or tie them."""
    return center >= center.amax(1, keepdim=True) - 2 * bound


def percent_span(allowed, target) -> tuple[float, float]:
    """`(lowest, highest)` percent of images whose top-1 is `target`'s class (one per image), for
    any top-1 choice within `allowed`: sure where the target is the only allowed class, possible
    where it is one of them."""
    possible = allowed[torch.arange(len(target)), target]
    sure = possible & (allowed.sum(1) == 1)
    return 100.0 * sure.float().mean().item(), 100.0 * possible.float().mean().item()


# rbench normalises (x - 255 mean) / (255 std) on the device, timm's transform (x / 255 - mean) / std:
# the inputs differ in their last bits, so the fp32 logits may too, by about 1e-6 (seen: 2.4e-7).
FP32_TOLERANCE = 1e-5


@pytest.mark.parametrize("stack", ["cpu-amp-bf16", "cpu+perturb-small", "cpu+perturb-large"])
def test_conformance_file_equals_an_independent_loop(stack, image_folder, tmp_path, perturbing):
    pinned = list(range(8))
    weights = tmp_path / "model.safetensors"
    model = imagenet_fixtures.pinned_head_model(4321, pinned, weights, name="test_vit")
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit", "--data-dir", str(image_folder), "--weights", str(weights),
                          "--bench", "validate", "-b", f"cpu,{stack}", "--out", str(out), "--batch-size", "32",
                          "--workers", "0", "--no-cache")
    assert result.exit_code == 0, result.output + result.stderr
    with open(out / "conformance-imagefolder.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    reference, labels = oracle_logits(model, image_folder)
    n = len(labels)
    # The reference's answers are exact: no image's top-2 logits are within the fp32 inputs' noise.
    top2 = reference.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min().item() > 2 * FP32_TOLERANCE
    reference_top1 = 100.0 * (reference.argmax(1) == labels).float().mean().item()
    assert 0 < reference_top1 < 100  # the check is not trivially all-right or all-wrong
    if stack == "cpu-amp-bf16":
        # bf16 keeps 8 significant bits, and what that does to logits through a network no formula
        # bounds: measure it here, on the classes that can win (the others are ~1000 below), and
        # allow rbench's run twice that (its inputs differ in their last bits, so its rounding may).
        target, _ = oracle_logits(model, image_folder, autocast=True)
        center, bound = reference, 2 * (target - reference)[:, pinned].abs().max().item()
    else:
        target = center = reference + perturbation(reference.shape[1], AMOUNTS[stack.split("+")[1]])
        bound = FP32_TOLERANCE
    allowed = allowed_top1(center, bound)
    # Most images have one possible answer (all of them in fp32), so the bounds leave rbench little room.
    assert (allowed.sum(1) == 1).sum().item() >= (n // 2 if stack == "cpu-amp-bf16" else n)

    stored = stored_top1(out)
    assert torch.equal(stored["cpu"], reference.argmax(1))
    assert allowed[torch.arange(n), stored[stack]].all(), "a top-1 that rounding within the bound cannot explain"
    assert row["model"].startswith("test_vit@ckpt-")  # a checkpoint's rows are named by its content
    assert (row["img_size"], row["stack"], row["reference"]) == ("160", stack, "cpu")
    assert int(row["images"]) == n == 32
    assert float(row["reference_top1"]) == pytest.approx(reference_top1, abs=1e-9)
    # The file's numbers are its stored answers' (exactly), and within the oracle's bounds.
    for column, against, oracle in (("top1", labels, labels), ("top1_agreement", stored["cpu"], reference.argmax(1))):
        assert float(row[column]) == pytest.approx(100.0 * (stored[stack] == against).float().mean().item(), abs=1e-9)
        lowest, highest = percent_span(allowed, oracle)
        assert lowest - 1e-9 <= float(row[column]) <= highest + 1e-9, column
    assert float(row["top1_delta"]) == pytest.approx(float(row["top1"]) - reference_top1, abs=1e-9)
    assert row["pass"] == str(float(row["top1"]) >= 0.99 * reference_top1).lower()
    difference = (target - reference).abs().double()
    tolerance = 1e-3 if stack == "cpu-amp-bf16" else FP32_TOLERANCE
    assert float(row["logit_absdiff_max"]) == pytest.approx(difference.amax(1).max().item(), rel=0.02, abs=tolerance)
    assert float(row["logit_absdiff_mean"]) == pytest.approx(difference.mean(1).mean().item(), rel=0.02, abs=tolerance)
    # The reference stack's files are what a single-stack run writes: one row, the reference's top-1.
    with open(out / "results-imagefolder.csv", newline="") as f:
        (result_row,) = list(csv.DictReader(f))
    assert result_row["top1"] == f"{reference_top1:.3f}"
    if stack == "cpu+perturb-small":  # pushed, but not far enough to win anywhere: same answers
        assert float(row["top1_agreement"]) == 100.0 and row["pass"] == "true"
        assert float(row["logit_absdiff_max"]) == pytest.approx(AMOUNTS["perturb-small"], rel=1e-5)
    if stack == "cpu+perturb-large":  # class 999 wins everywhere: no image is right
        assert float(row["top1"]) == 0.0 and row["pass"] == "false"
    rebuilt = tmp_path / "rebuilt"
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(rebuilt))
    assert report.exit_code == 0, report.stderr
    assert (rebuilt / "conformance-imagefolder.csv").read_bytes() == (out / "conformance-imagefolder.csv").read_bytes()


def test_pass_flips_at_the_threshold():
    assert PASS_RATIO == 0.99
    assert passes(99.0, 100.0) and passes(49.5, 50.0) and passes(50.0, 50.0)
    assert not passes(98.99, 100.0) and not passes(49.49, 50.0)
    assert passes(0.0, 0.0) and passes(None, 50.0) is None and passes(50.0, None) is None


DESCRIBED = re.compile(r"^  (\S+): (\d+) of (\d+) decisive images \(of (\d+)\) kept their top-1; .* largest logit "
                       r"difference = (\S+) x the tolerance$", re.M)


def test_check_backend_passes_bf16_autocast_with_a_margin_and_fails_a_perturbing_backend(perturbing):
    passed = invoke_apart("check-backend", "cpu-amp-bf16")
    assert passed.exit_code == 0, passed.output + passed.stderr
    assert "cpu-amp-bf16: PASS" in passed.output
    described = {m[0]: m[1:] for m in DESCRIBED.findall(passed.output)}
    assert sorted(described) == ["test_efficientnet.r160_in1k@random", "test_vit.r160_in1k@random"], passed.output
    for kept, decisive, images, ratio in described.values():
        assert kept == decisive != "0" and images == "100"
        # bf16 autocast keeps its logits inside the tolerance: no decisive image was at risk.
        assert float(ratio) < 1
    failed = invoke_apart("check-backend", "cpu+perturb-large")
    assert failed.exit_code == 1, failed.output + failed.stderr
    # class 999 wins every image: every decisive image changed
    changed = re.search(r"cpu\+perturb-large: FAIL: test_vit.r160_in1k@random: top-1 changed on (\d+) of (\d+) decisive images",
                        failed.output)
    assert changed and changed[1] == changed[2] != "0", failed.output


def conformance_row(reference_logits, stack_logits):
    """The conformance row of a stack with these logits against a reference with those, on images
    labelled 0: both rows scored from their predictions as rbench stores them."""
    from rbench.report.conformance import conformance_rows
    from rbench.report.scoring import ScoredRow, paired

    labels = [0] * len(reference_logits)
    common = {"model": "m", "img_size": 32, "top1": 50.0}
    reference = ScoredRow({**common, "backend": "cpu"}, paired("listing", predictions_of(reference_logits, labels)))
    row = ScoredRow({**common, "backend": "s", "reference": "cpu",
                     "logit_absdiff_max": (stack_logits - reference_logits).abs().max().item()},
                    paired("listing", predictions_of(stack_logits, labels)))
    (found,) = conformance_rows([row], [reference])
    return found


@pytest.mark.parametrize("tolerance", [2.0**-5, 2.0**-8])
def test_decisive_images_and_the_verdict_against_a_brute_force_count(tolerance):
    generator = torch.Generator().manual_seed(0)
    reference = 3 * torch.randn(400, 10, generator=generator)
    top2 = reference.topk(2, dim=1)
    lead, top1 = top2.values[:, 0] - top2.values[:, 1], top2.indices[:, 0]
    scale = top2.values[:, 0].abs().max().item()
    threshold = 2 * tolerance * scale
    # No lead within the stored log-probabilities' float32 rounding of the threshold: the count is exact.
    assert (lead - threshold).abs().min().item() > 1e-4
    decisive = lead > threshold
    assert 0 < decisive.sum().item() < len(lead)
    # Every logit moved by up to 0.9 of the tolerance: near-ties may change, decisive images cannot.
    noise = 0.9 * tolerance * scale * (2 * torch.rand(reference.shape, generator=generator) - 1)
    within = conformance_row(reference, reference + noise)
    judged = decisive_of(within, tolerance)
    assert (judged.images, judged.decisive) == (400, decisive.sum().item())
    assert judged.kept == judged.decisive and judged.logit_ratio < 0.9
    assert judged.threshold == pytest.approx(threshold, rel=1e-6)
    assert verdict([within], ["m"], tolerance)[0]
    # One decisive image's top-1 pushed below its runner-up: the verdict names it.
    pushed = reference.clone()
    image = int(decisive.nonzero()[0])
    pushed[image, top1[image]] -= lead[image] + 1.0
    failed = conformance_row(reference, pushed)
    assert (decisive_of(failed, tolerance).decisive, decisive_of(failed, tolerance).kept) == (
        decisive.sum().item(), decisive.sum().item() - 1)
    passed, line = verdict([failed], ["m"], tolerance)
    assert not passed and f"m: top-1 changed on 1 of {decisive.sum().item()} decisive images" in line
    # Ties everywhere: nothing to judge, which is no pass.
    tied = torch.zeros(4, 10)
    passed, line = verdict([conformance_row(tied, tied)], ["m"], tolerance)
    assert not passed and "m: no decisive image" in line


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

    import rbench.frontend.cli as cli
    import rbench.parent.api

    class Stopped(Exception):
        pass

    def run(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(rbench.parent.api, "run_plan", run)
    stacks = [SimpleNamespace(name=f"stack{i}", device=d) for i, d in enumerate(devices)]
    plan = SimpleNamespace(options=SimpleNamespace(benches=("validate",), weights="random", executor="local",
                                                   store_dir="store"),
                           models=[SimpleNamespace(name="m", weights="random")],
                           stacks=stacks, sources=[])
    with pytest.raises(Stopped):
        cli._run_and_report(plan, None, cli.open_console(), embedded=False, force=False, retry_failed=False, html=None)
    err = capsys.readouterr().err
    assert ("the validation cells of stack1 also run the reference stack stack0 on its cpu device" in err) == noted
