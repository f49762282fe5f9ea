"""Model names and weights: globs, checkpoints, and refusing unsafe pickles."""

from __future__ import annotations

import collections

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
