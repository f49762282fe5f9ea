"""Model names, creation and weights: the single place that asks timm for a model."""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import RbenchError, WeightsError, unknown_name

WEIGHTS_CHOICES = ("pretrained", "random")


def expand_model_args(args: Iterable[str]) -> list[str]:
    """Split comma lists and read `@file` arguments (one name per line, `#` comments)."""
    names: list[str] = []
    for arg in args:
        for item in arg.split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("@"):
                path = Path(item[1:])
                if not path.is_file():
                    raise RbenchError(f"model list {path} does not exist; @FILE needs a file of model names")
                lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
                names.extend(expand_model_args(line for line in lines if line))
            else:
                names.append(item)
    return names


def resolve_models(args: Iterable[str]) -> list[str]:
    """Model names, globs (`resnet*`), `all` and `@file` -> timm names, in order, without repeats.

    A glob matches pretrained tags (`resnet50.a1_in1k`), or architectures when no tag matches.
    An unknown name raises `UnknownNameError` with close matches.
    """
    import timm

    resolved: list[str] = []
    for name in expand_model_args(args):
        if name == "all":
            matches = timm.list_models(pretrained=True)
        elif any(ch in name for ch in "*?["):
            matches = timm.list_models(name, pretrained=True) or timm.list_models(name)
            if not matches:
                raise RbenchError(f"model pattern {name!r} matches no timm model; see `rbench list models PATTERN`")
        else:
            arch, _, tag = name.partition(".")
            if not timm.is_model(arch):
                raise unknown_name("model", name, timm.list_models(), "rbench list models")
            if tag and name not in timm.list_pretrained(name):
                raise unknown_name("pretrained tag", name, timm.list_pretrained(f"{arch}.*"), "rbench list models")
            matches = [name]
        resolved.extend(m for m in matches if m not in resolved)
    return resolved


def architecture(name: str) -> str:
    """`resnet50.a1_in1k` -> `resnet50`."""
    return name.partition(".")[0]


def model_seed(name: str) -> int:
    """A seed derived from the model name, so random weights are the same on every run."""
    return zlib.crc32(name.encode())


def create_model(name: str, weights: str = "random", *, device: Any = None, trust_checkpoint: bool = False):
    """A timm model in eval mode, with `weights`: `pretrained`, `random` (seeded) or a checkpoint path.

    `device` creates the parameters there directly (no CPU copy first).
    """
    import timm
    import torch

    if weights == "pretrained":
        try:
            with torch.device(device or "cpu"):
                model = timm.create_model(name, pretrained=True)
        except (RuntimeError, OSError, ValueError, ImportError) as exc:  # hub, URL or cache failures
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            raise WeightsError(
                f"pretrained weights for {name} are not available here ({type(exc).__name__}: {first_line}); "
                "connect to the network or fill the Hugging Face cache, or use --weights random or --weights PATH"
            ) from exc
        return model.eval()
    torch.manual_seed(model_seed(name))
    with torch.device(device or "cpu"):
        model = timm.create_model(name, pretrained=False)
    if weights != "random":
        load_checkpoint(model, Path(weights), trust_checkpoint=trust_checkpoint)
    return model.eval()


def load_checkpoint(model, path: Path, *, trust_checkpoint: bool = False) -> None:
    """Load a safetensors file or a torch checkpoint (`weights_only` unless trusted) into `model`."""
    import torch

    if not path.is_file():
        raise WeightsError(
            f"checkpoint {path} does not exist; --weights takes 'pretrained', 'random' or a checkpoint file"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not trust_checkpoint:
                raise WeightsError(
                    f"checkpoint {path} holds objects that only full unpickling can load, which can run "
                    "arbitrary code; re-save it as safetensors, or pass --trust-checkpoint if you trust it"
                ) from exc
            state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise WeightsError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:300]
        raise WeightsError(f"checkpoint {path} does not fit the model: {summary}") from exc


def pretrained_tag(model) -> str:
    """The timm name with its pretrained tag (`resnet50.a1_in1k`) of a created model."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    return f"{arch}.{tag}" if arch and tag else arch or type(model).__name__


def param_count(model) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6

