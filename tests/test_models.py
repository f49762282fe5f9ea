"""Model names and weights: globs, checkpoints, and refusing unsafe pickles."""

from __future__ import annotations

import collections
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from rbench.errors import UnknownNameError, WeightsError
from rbench.models import create_model, param_count, resolve_models


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
    from rbench.models import check_checkpoint

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

    from rbench.cli import main

    path = _bad_file("random-pth", tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", str(path), "--bench", "validate",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"checkpoint {path} is neither a torch checkpoint" in line
    assert not (out / "store").exists()  # nothing ran


def test_checking_a_good_or_trusted_checkpoint_passes(tmp_path):
    from rbench.models import check_checkpoint

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

    from rbench.models import check_weights_available

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr("rbench.models._reachable", lambda host, timeout=0: pytest.fail("the network was tried"))
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

    from rbench.models import check_weights_available

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    tried = []
    monkeypatch.setattr("rbench.models._reachable", lambda host, timeout=0: tried.append(host) or False)
    with pytest.raises(WeightsError, match="not in the local cache and huggingface.co cannot be reached: test_vit, "):
        check_weights_available(["test_vit", "test_efficientnet", "test_byobnet"])
    assert tried == ["huggingface.co"]
    monkeypatch.setattr("rbench.models._reachable", lambda host, timeout=0: True)
    check_weights_available(["test_vit", "test_efficientnet"])  # reachable: timm downloads them


def test_reachable_is_bounded_by_its_timeout_even_when_the_lookup_hangs(monkeypatch):
    import socket
    import threading

    from rbench.models import _reachable

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
