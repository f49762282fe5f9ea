"""Model names and weights: globs, checkpoints, and refusing unsafe pickles."""

from __future__ import annotations

import collections
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from rbench.errors import UnknownNameError, WeightsError
from rbench.worker.models import create_model, param_count, resolve_models


def test_resolve_models_keeps_order_and_drops_repeats():
    assert resolve_models(["test_vit,test_byobnet.r160_in1k", "test_vit"]) == ["test_vit", "test_byobnet.r160_in1k"]


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet50'"):
        resolve_models(["resnet5O"])


def test_random_weights_are_seeded_by_name():
    a, b = create_model("test_vit"), create_model("test_vit")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = create_model("test_vit.r160_in1k")
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def _reference_state(name):
    torch.manual_seed(99)
    return timm.create_model(name).state_dict()


@pytest.mark.parametrize("kind", ["safetensors", "torch", "wrapped"])
def test_checkpoint_loads_exactly(kind, tmp_path):
    state = _reference_state("test_byobnet")
    if kind == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif kind == "torch":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    else:  # a training checkpoint: DataParallel prefixes inside a "state_dict" entry
        path = tmp_path / "w.pth.tar"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = create_model("test_byobnet", str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_needing_full_unpickling_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": collections.OrderedDict(_reference_state("test_vit")), "args": _Args()}, path)
    with pytest.raises(WeightsError, match="--trust-checkpoint"):
        create_model("test_vit", str(path))
    model = create_model("test_vit", str(path), trust_checkpoint=True)
    assert torch.equal(model.state_dict()["head.weight"], _reference_state("test_vit")["head.weight"])


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in _reference_state("test_vit").items()}, str(path))
    with pytest.raises(WeightsError, match="does not fit the model"):
        create_model("test_byobnet", str(path))


def test_param_count_in_millions():
    model = timm.create_model("test_efficientnet")
    assert param_count(model) == sum(p.numel() for p in model.parameters()) / 1e6


class _Args:
    """A stand-in for the argparse namespace that training scripts pickle into checkpoints."""


def _bad_file(kind: str, tmp_path):
    import numpy as np

    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    files = {
        "random-pth": ("w.pth", b"\x2f" + noise),  # not a pickle, not a zip
        "empty-pth": ("w.pth", b""),
        "empty-safetensors": ("w.safetensors", b""),
        "garbage-safetensors": ("w.safetensors", noise),
        "truncated-pth": ("w.pth", None),
    }
    name, data = files[kind]
    path = tmp_path / name
    if data is None:
        torch.save(_reference_state("test_vit"), path)
        data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("kind", "says"), [
    ("random-pth", "neither a torch checkpoint nor a safetensors file, or it is damaged"),
    ("truncated-pth", "neither a torch checkpoint nor a safetensors file, or it is damaged"),
    ("empty-pth", "is empty (0 bytes)"),
    ("empty-safetensors", "is empty (0 bytes)"),
    ("garbage-safetensors", "is not a valid safetensors file (Error while deserializing header: header too large)"),
])
def test_a_bad_checkpoint_file_is_named_with_what_is_wrong(kind, says, tmp_path):
    from rbench.worker.models import check_checkpoint

    path = _bad_file(kind, tmp_path)
    for trust in (False, True):
        with pytest.raises(WeightsError) as caught:
            check_checkpoint(path, trust)
        message = str(caught.value)
        assert message.startswith(f"checkpoint {path} ") and says in message, message
        assert "--trust-checkpoint" not in message and "\n" not in message
    with pytest.raises(WeightsError, match=re.escape(says)):  # the same when the model is made
        create_model("test_vit", str(path))


def test_a_bad_checkpoint_is_a_one_line_error_before_any_model_runs(tmp_path):
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    path = _bad_file("random-pth", tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", str(path), "--bench", "validate",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"checkpoint {path} is neither a torch checkpoint" in line
    assert not (out / "store").exists()  # nothing ran


def test_checking_a_good_or_trusted_checkpoint_passes(tmp_path):
    from rbench.worker.models import check_checkpoint

    good = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in _reference_state("test_vit").items()}, str(good))
    check_checkpoint(good)
    plain = tmp_path / "w.pth"
    torch.save({"state_dict": _reference_state("test_vit")}, plain)
    check_checkpoint(plain)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": collections.OrderedDict(_reference_state("test_vit")), "args": _Args()}, unsafe)
    with pytest.raises(WeightsError, match="--trust-checkpoint"):
        check_checkpoint(unsafe)
    check_checkpoint(unsafe, trust_checkpoint=True)


def _fake_hub(root, repo: str, filename: str, state) -> None:
    """A Hugging Face cache holding one file of `repo` at `main`, laid out as the hub client does."""
    commit = "0" * 40
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / commit / filename))


def test_pretrained_weights_are_found_in_the_local_cache_without_the_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rbench.worker.models import check_weights_available

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr("rbench.worker.models._reachable", lambda host, timeout=0: pytest.fail("the network was tried"))
    _fake_hub(hub, "timm/test_vit.r160_in1k", "model.safetensors", _reference_state("test_vit"))
    check_weights_available(["test_vit", "test_vit.r160_in1k"])  # the untagged name is its default tag
    check_weights_available(["test_efficientnet"], "random")
    with pytest.raises(WeightsError) as caught:
        check_weights_available(["test_vit", "test_efficientnet", "test_byobnet", "test_convnext", "test_nfnet"])
    assert str(caught.value).startswith(
        "pretrained weights for 4 model(s) are not in the local cache and HF_HUB_OFFLINE is set: "
        "test_efficientnet, test_byobnet, test_convnext and 1 more; ")
    assert "--weights random" in str(caught.value)
    with pytest.raises(WeightsError, match="timm has no pretrained weights for 1 model.*beit3_giant_patch14_224"):
        check_weights_available(["test_vit", "beit3_giant_patch14_224"])
    # what was found is what timm loads
    model = create_model("test_vit", "pretrained")
    assert torch.equal(model.state_dict()["head.weight"], _reference_state("test_vit")["head.weight"])


def test_online_an_unreachable_hub_is_tried_once_not_per_model(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rbench.worker.models import check_weights_available

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    tried = []
    monkeypatch.setattr("rbench.worker.models._reachable", lambda host, timeout=0: tried.append(host) or False)
    with pytest.raises(WeightsError, match="not in the local cache and huggingface.co cannot be reached: test_vit, "):
        check_weights_available(["test_vit", "test_efficientnet", "test_byobnet"])
    assert tried == ["huggingface.co"]
    monkeypatch.setattr("rbench.worker.models._reachable", lambda host, timeout=0: True)
    check_weights_available(["test_vit", "test_efficientnet"])  # reachable: timm downloads them


def test_reachable_is_bounded_by_its_timeout_even_when_the_lookup_hangs(monkeypatch):
    import socket
    import threading

    from rbench.worker.models import _reachable

    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hanging(address, timeout=None):
        entered.set()
        release.wait(60)  # hangs until the test lets it go (a minute at most, should _reachable wait for it)
        finished.set()
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", hanging)
    try:
        assert _reachable("hub.invalid", timeout=0.2) is False
        # It gave up on the lookup, which was still hanging: it did not wait for it, however slow the machine.
        assert entered.wait(60) and not finished.is_set()
    finally:
        release.set()


# --- a checkpoint checked against its architecture in the plan --------------------------------

def _run_checkpoint(path, models: str, out):
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    return CliRunner().invoke(main, ["run", "-m", models, "--weights", str(path), "--bench", "validate",
                                     "--workers", "0", "--out", str(out)])


def _save(state, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize(("checkpoint", "models", "says"), [
    # another architecture's weights: keys that only the other model has, both ways
    ("vit.safetensors", "test_byobnet", ["does not fit test_byobnet: {missing} missing key(s): stem.conv.weight, ",
                                         "; {unexpected} unexpected key(s): blocks.0.attn.proj.bias, "]),
    # one tensor of another shape, in a training checkpoint (keys cleaned as for loading)
    ("narrow-head.pth.tar", "test_vit", ["does not fit test_vit: 2 mis-shaped key(s): head.weight (checkpoint "
                                         "[10, 64], model [1000, 64]), head.bias (checkpoint [10], model [1000])"]),
    # a checkpoint given to several models must fit each
    ("vit.safetensors", "test_vit,test_byobnet", ["does not fit test_byobnet: "]),
])
def test_a_checkpoint_that_does_not_fit_is_one_line_before_any_model_runs(checkpoint, models, says, tmp_path):
    state = _reference_state("test_vit")
    if checkpoint.startswith("narrow-head"):
        state["head.weight"], state["head.bias"] = state["head.weight"][:10], state["head.bias"][:10]
        state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = _save(state, tmp_path / checkpoint)
    if path.suffix == ".safetensors":  # torch's own strict-load comparison counts the keys
        from safetensors.torch import load_file

        keys = timm.create_model("test_byobnet").load_state_dict(load_file(str(path)), strict=False)
        says = [s.format(missing=len(keys.missing_keys), unexpected=len(keys.unexpected_keys)) for s in says]
    out = tmp_path / "out"
    result = _run_checkpoint(path, models, out)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"rbench: error: checkpoint {path} does not fit "), line
    assert all(s in line for s in says), line
    assert not any(row.startswith("start ") for row in result.output.splitlines())
    assert not (out / "store").exists()  # nothing ran, nothing was recorded


def test_a_fitting_checkpoint_runs_with_its_numbers(tmp_path):
    """A checkpoint that fits its model passes the plan and scores as the weights it holds."""
    from . import imagenet_fixtures
    from .conftest import csv_rows, write_jpegs

    folder = tmp_path / "images"
    for i, name in enumerate(["a", "b", "c", "d"]):
        write_jpegs(folder / name, 2, seed=i)
    path = tmp_path / "pinned.safetensors"
    imagenet_fixtures.pinned_head_model(3, [2], path, name="test_vit")  # predicts class 2 ("c") for every image
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", str(path), "--bench", "validate",
                                       "--data-dir", str(folder), "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = csv_rows(out / "results-imagefolder.csv")
    assert float(row["top1"]) == 25.0


def test_a_checkpoint_without_batch_norm_counters_fits(tmp_path):
    """torch's batch norm loads a state dict saved without `num_batches_tracked`; so does the plan."""
    from rbench.worker.models import check_checkpoint_fits

    state = {k: v for k, v in _reference_state("test_byobnet").items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(_reference_state("test_byobnet"))
    path = _save(state, tmp_path / "w.safetensors")
    check_checkpoint_fits(path, ["test_byobnet"])
    model = create_model("test_byobnet", str(path))  # torch agrees: it loads
    assert torch.equal(model.state_dict()["head.fc.weight"], state["head.fc.weight"])


def test_a_trusted_checkpoint_is_not_unpickled_in_the_plan(tmp_path, monkeypatch):
    from rbench.worker.models import check_checkpoint_fits

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": collections.OrderedDict(_reference_state("test_vit")), "args": _Args()}, unsafe)
    real_load = torch.load

    def load(*args, **kwargs):
        assert kwargs.get("weights_only"), "full unpickling in the plan"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    check_checkpoint_fits(unsafe, ["test_byobnet"], trust_checkpoint=True)
