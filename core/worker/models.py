"""Model names, creation and weights: the single place that asks timm for a model."""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RbenchError, WeightsError, first_few, unknown_name
from ..files import read_utf8, write_bytes

WEIGHTS_CHOICES = ("pretrained", "random")


@dataclass(frozen=True)
class ModelArg:
    """One name of `-m` (a timm name, glob or `all`), with the weights and row name that an
    `@FILE` line gave it (None: the run's `--weights` and `--weights-name`)."""

    name: str
    weights: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One model of a run: the timm name it is built from, the weights loaded into it
    (`pretrained`, `random` or a checkpoint path), what identifies those weights
    (`weights_identity`) and the name its rows carry in the `model` column (`row_name`)."""

    name: str
    weights: str
    weights_id: str
    row_name: str
    label: str | None = None  # the row name the user set, if any

    @property
    def named(self) -> bool:
        """Whether the row name is not derived from the name and weights alone: a checkpoint's
        (its content) or one the user set; it then goes into the cells' identities."""
        return self.label is not None or self.weights not in WEIGHTS_CHOICES


def _parse_list_line(line: str, where: str, folder: Path) -> list[ModelArg]:
    """One line of an `@FILE` model list: names (comma-separated), then optionally
    `--weights pretrained|random|PATH` (a relative PATH is relative to the list's folder) and
    `--name NAME` (the row name of those weights)."""
    import shlex

    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise RbenchError(f"{where}: {exc}; quote a path with spaces as in a shell") from None
    names = [n.strip() for n in words[0].split(",") if n.strip()]
    options: dict[str, str] = {}
    rest = words[1:]
    while rest:
        option = rest.pop(0)
        if option not in ("--weights", "--name") or not rest:
            raise RbenchError(f"{where}: {option!r} is not `--weights WEIGHTS` or `--name NAME`; a line is "
                              "`MODEL [--weights pretrained|random|PATH] [--name NAME]`")
        options[option] = rest.pop(0)
    weights = options.get("--weights")
    if weights is not None and weights not in WEIGHTS_CHOICES:
        weights = str(folder / Path(weights).expanduser())
    return [ModelArg(name, weights, options.get("--name")) for name in names]


def model_args(args: Iterable[str]) -> list[ModelArg]:
    """Split comma lists and read `@file` arguments: one model a line, `#` comments, each line
    optionally with its own weights and row name (`_parse_list_line`)."""
    found: list[ModelArg] = []
    for arg in args:
        for item in arg.split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("@"):
                path = Path(item[1:])
                if path.is_dir():
                    raise RbenchError(f"model list {path} is a folder; @FILE needs a text file of model names, "
                                      "one per line")
                if not path.is_file():
                    raise RbenchError(f"model list {path} does not exist; @FILE needs a file of model names")
                try:
                    text = read_utf8(path)
                except ValueError as exc:
                    raise RbenchError(f"model list {path} {exc}; @FILE needs a UTF-8 text file of model names, "
                                      "one per line") from None
                for number, line in enumerate(text.splitlines(), 1):
                    line = line.split("#", 1)[0].strip()
                    if not line:
                        continue
                    if " " in line or "\t" in line:
                        found.extend(_parse_list_line(line, f"model list {path}, line {number}", path.parent))
                    else:
                        found.extend(model_args([line]))
            else:
                found.append(ModelArg(item))
    return found


def _resolve_name(name: str) -> list[str]:
    """A model name, glob (`resnet*`) or `all` -> timm names. A glob matches pretrained tags
    (`resnet50.a1_in1k`), or architectures when no tag matches. An unknown name raises
    `UnknownNameError` with close matches."""
    import timm

    if name == "all":
        return timm.list_models(pretrained=True)
    if any(ch in name for ch in "*?["):
        matches = timm.list_models(name, pretrained=True) or timm.list_models(name)
        if not matches:
            raise RbenchError(f"model pattern {name!r} matches no timm model; see `rbench list models PATTERN`")
        return matches
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        raise unknown_name("model", name, timm.list_models(), "rbench list models")
    if tag and name not in timm.list_pretrained(name):
        raise unknown_name("pretrained tag", name, timm.list_pretrained(f"{arch}.*"), "rbench list models")
    return [name]


def resolve_models(args: Iterable[str]) -> list[str]:
    """Model names, globs (`resnet*`), `all` and `@file` -> timm names, in order, without repeats."""
    resolved: list[str] = []
    for arg in model_args(args):
        resolved.extend(m for m in _resolve_name(arg.name) if m not in resolved)
    return resolved


def resolve_entries(args: Iterable[str], weights: str = "pretrained", label: str | None = None, *,
                    trust_checkpoint: bool = False) -> list[ModelEntry]:
    """`-m` arguments -> the run's `ModelEntry`s, in order, without repeats: each name with the
    weights its `@FILE` line gives, else `weights` (`--weights`) and `label` (`--weights-name`).

    Every checkpoint is checked (`check_checkpoint`) and hashed once; a row name set for
    pretrained weights or for several models, one that is a timm name, or two different
    weights given one row name are one-line errors.
    """
    entries: list[ModelEntry] = []
    seen: dict[tuple[str, str], ModelEntry] = {}
    by_row: dict[str, ModelEntry] = {}
    for arg in model_args(args):
        own_weights = arg.weights or weights
        own_label = arg.label if arg.weights is not None or arg.label is not None else label
        if own_weights not in WEIGHTS_CHOICES:
            if not Path(own_weights).is_file():
                where = "" if arg.weights is None else f" of {arg.name} in its @FILE line"
                raise RbenchError(f"--weights {own_weights!r}{where}: not 'pretrained', 'random' or an existing "
                                  "checkpoint file")
            check_checkpoint(own_weights, trust_checkpoint)
        names = _resolve_name(arg.name)
        if own_label is not None:
            check_row_label(own_label, own_weights, names)
        weights_id = weights_identity(own_weights)
        for name in names:
            if (name, weights_id) in seen:
                continue
            entry = ModelEntry(name=name, weights=own_weights, weights_id=weights_id, label=own_label,
                               row_name=row_name(name, own_weights, weights_id, own_label))
            other = by_row.get(entry.row_name)
            if other is not None and (other.name, other.weights_id) != (name, weights_id):
                raise RbenchError(f"two models of this run would have the rows of {entry.row_name!r} ({other.name} "
                                  f"with {weights_label(other.weights)}, and {name} with {weights_label(own_weights)}); "
                                  "give them different names (--name in an @FILE line, or --weights-name)")
            seen[(name, weights_id)] = by_row[entry.row_name] = entry
            entries.append(entry)
    return entries


def check_row_label(label: str, weights: str, names: list[str]) -> None:
    """A row name the user set (`--weights-name`, `--name`): for one model, random or checkpoint
    weights, one word that is not a timm model name or pretrained tag (rows of those are timm's)."""
    import timm

    if weights == "pretrained":
        raise RbenchError(f"the row name {label!r} is set for pretrained weights, whose rows carry their pretrained "
                          "tag; set a name only with --weights random or a checkpoint")
    if len(names) != 1:
        raise RbenchError(f"the row name {label!r} would name {len(names)} models ({first_few(names)}); "
                          "two weights never share a row: name one model")
    if not label or any(ch.isspace() or ch == "," for ch in label) or label.startswith("@"):
        raise RbenchError(f"the row name {label!r} is not one word; give a name without spaces or commas, "
                          "such as my-vit-e10")
    if timm.is_model(label) or label in timm.list_pretrained(label):
        raise RbenchError(f"the row name {label!r} is a timm model name, whose rows are timm's weights; "
                          "give another, such as my-vit-e10")


RANDOM_MARK = "random"  # the row name of random weights: `<name>@random`
CHECKPOINT_MARK = "ckpt-"  # of a checkpoint: `<architecture>@ckpt-<12 hex digits of its sha256>`
DIGEST_CHARS = 12


def row_name(name: str, weights: str, weights_id: str | None = None, label: str | None = None) -> str:
    """The `model` column of the rows of `name` with `weights` (`docs/cli.md`, "Model names"):
    the pretrained tag only for pretrained weights (a bare architecture: its default tag); the
    user's `label` if set; `<name>@random` for random weights (seeded by `name`, so the name as
    given is part of their identity); `<architecture>@ckpt-<digest>` for a checkpoint, from its
    content (`weights_id`, else hashed here): the same file anywhere is the same row."""
    if weights == "pretrained":
        return pretrained_name(name)
    if label is not None:
        return label
    if weights == RANDOM_MARK:
        return f"{name}@{RANDOM_MARK}"
    digest = (weights_id or weights_identity(weights)).removeprefix("sha256:")
    return f"{architecture(name)}@{CHECKPOINT_MARK}{digest[:DIGEST_CHARS]}"


def pretrained_name(name: str) -> str:
    """`name` with its pretrained tag: a bare architecture gets its default tag (`resnet50` -> `resnet50.a1_in1k`)."""
    import timm.models

    if "." not in name:
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and getattr(cfg, "tag", None):
            return f"{architecture(name)}.{cfg.tag}"
    return name


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def checkpoint_digest(path: Path | str) -> str:
    """The sha256 of a checkpoint file's content, computed once per file version in a process
    (keyed by its resolved path, size, modification time and inode)."""
    import hashlib

    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


_COPIES: dict[str, str] = {}  # sha256 -> this process's copy of that checkpoint (`checkpoint_copy`)


def checkpoint_copy(path: str, data: bytes, weights_id: str | None) -> str:
    """Where this process reads the checkpoint that the parent's machine has at `path`, sent here
    as its bytes `data` (a cluster node that shares no disk with it): a copy under the same file
    name in a temporary folder of this process's own, written once per content and removed when
    the process exits. `weights_id` is what the plan recorded of it (`sha256:<hex>`); a
    `WeightsError` when `data` is not that checkpoint."""
    import atexit
    import hashlib
    import shutil
    import tempfile

    digest = hashlib.sha256(data).hexdigest()
    if weights_id != f"sha256:{digest}":
        raise WeightsError(f"checkpoint {path} arrived on this machine as other bytes than the plan hashed "
                           f"({weights_id}, got sha256:{digest}); run again")
    if digest not in _COPIES:
        folder = tempfile.mkdtemp(prefix="rbench-checkpoint-")
        atexit.register(shutil.rmtree, folder, True)
        _COPIES[digest] = str(write_bytes(Path(folder) / Path(path).name, data))
    return _COPIES[digest]


def weights_identity(weights: str) -> str:
    """What identifies weights in a cell's key: `pretrained`, `random`, or `sha256:<hex>` of a
    checkpoint's content (the same file copied elsewhere is the same weights)."""
    if weights in WEIGHTS_CHOICES:
        return weights
    return f"sha256:{checkpoint_digest(weights)}"


def weights_label(weights: str) -> str:
    """What a row says of its weights: `pretrained`, `random`, or the checkpoint's file name."""
    return weights if weights in WEIGHTS_CHOICES else f"checkpoint:{Path(weights).name}"


def architecture(name: str) -> str:
    """`resnet50.a1_in1k` -> `resnet50`; of a row name, too: `resnet50@ckpt-0123abcd4567` -> `resnet50`."""
    return name.partition("@")[0].partition(".")[0]


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
            raise WeightsError(
                f"pretrained weights for {name} are not available here ({type(exc).__name__}: {_one_line(str(exc))}); "
                "connect to the network or fill the Hugging Face cache, or use --weights random or --weights PATH"
            ) from exc
        return model.eval()
    torch.manual_seed(model_seed(name))
    with torch.device(device or "cpu"):
        model = timm.create_model(name, pretrained=False)
    if weights != "random":
        load_checkpoint(model, Path(weights), trust_checkpoint=trust_checkpoint)
    return model.eval()


HUB_CONNECT_TIMEOUT = 3.0  # seconds to reach a weights host when online, once per host


def _hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (`HF_HUB_OFFLINE`), as timm's downloads see it."""
    import os

    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _weights_sources(name: str) -> tuple[bool, str | None] | None:
    """Whether timm would find `name`'s pretrained weights on this machine, and the host it
    would download them from otherwise (None: none); None when timm has no pretrained weights
    for `name`. Follows timm's own order (`timm.models._builder`): a state dict or local file,
    the Hugging Face hub (its safetensors alternative first), then the URL into torch hub's cache."""
    import os
    from urllib.parse import urlparse

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.source != "hf-hub":
        if cfg.state_dict is not None and cfg.source != "local-dir":
            return True, None
        if cfg.file or cfg.source == "local-dir":
            return bool(cfg.file) and os.path.exists(cfg.file), None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        filename = cfg.hf_hub_filename or "pytorch_model.bin"
        candidates = [filename]
        if not filename.endswith(".safetensors"):
            safe = {"pytorch_model.bin": "model.safetensors",
                    "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}.get(filename)
            candidates.append(safe or (filename[:-4] + ".safetensors" if filename.endswith(".bin") else filename))
        cached = any(isinstance(try_to_load_from_cache(repo, c, revision=revision or None), str) for c in candidates)
        return cached, urlparse(constants.ENDPOINT).hostname
    if cfg.url:
        import torch

        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(cfg.url).path))
        return os.path.isfile(path), urlparse(cfg.url).hostname
    return None


def _reachable(host: str, timeout: float = HUB_CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to `host`'s HTTPS port opens within `timeout` seconds, name
    lookup included (a resolver that hangs is given up on, in a thread left to finish alone)."""
    import socket
    import threading

    opened = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                opened.set()
        except OSError:
            pass

    threading.Thread(target=connect, name="rbench-hub-check", daemon=True).start()
    return opened.wait(timeout)


def check_weights_available(names: Iterable[str], weights: str = "pretrained") -> None:
    """Check, before any model runs, that timm can load the pretrained weights of `names`.

    Weights in the local caches (Hugging Face's, torch hub's for timm's URL weights) are
    found without the network. With `HF_HUB_OFFLINE` set, that is all: missing weights are
    an error. Online, each host the missing weights would come from is tried once, with a
    short timeout, instead of the hub's retries for every model. Raises one `WeightsError`
    line naming the models (the first few and a count) and the fix.
    """
    if weights != "pretrained":
        return
    names = list(names)
    untrained, missing = [], []
    for name in names:
        sources = _weights_sources(name)
        if sources is None:
            untrained.append(name)
        elif not sources[0]:
            missing.append((name, sources[1]))
    if untrained:
        raise WeightsError(f"timm has no pretrained weights for {len(untrained)} model(s): {first_few(untrained)}; "
                           "choose pretrained tags (`rbench list models PATTERN`) or pass --weights random")
    if not missing:
        return
    if _hub_offline():
        why = "and HF_HUB_OFFLINE is set"
    else:
        reachable = {host: _reachable(host) for host in {host for _, host in missing if host}}
        missing = [(name, host) for name, host in missing if not reachable.get(host, False)]
        if not missing:
            return  # they will be downloaded
        hosts = sorted({host for _, host in missing if host})
        why = f"and {', '.join(hosts)} cannot be reached" if hosts else "and they have no download location"
    models = [name for name, _ in missing]
    raise WeightsError(
        f"pretrained weights for {len(models)} model(s) are not in the local cache {why}: {first_few(models)}; "
        "download them first (run once online), or pass --weights random"
    )


def _one_line(text: str) -> str:
    """An error message as one line, whitespace collapsed and terminal escapes dropped."""
    import re

    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte header length, then the JSON header (`{`)."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _needs_full_unpickling(exc: BaseException) -> bool:
    """Whether a `weights_only` load failed on a global it does not allow (an argparse
    namespace, a custom class): the file is a checkpoint, just not a plain one."""
    return any("Unsupported global" in str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)


def _unreadable(path: Path, exc: BaseException) -> WeightsError:
    """The one-line error for a checkpoint file that is damaged or not a checkpoint at all."""
    inner = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ is not None else exc
    what = _one_line(str(inner)).split(". ")[0] or type(inner).__name__
    if isinstance(exc, EOFError):
        what = "it ends early"
    return WeightsError(f"checkpoint {path} is neither a torch checkpoint nor a safetensors file, or it is damaged "
                        f"({what}); save or download it again")


STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema")  # where training checkpoints keep the weights


def state_dict_of(checkpoint: Any, path: Path) -> dict[str, Any]:
    """The state dict inside a loaded checkpoint, with the wrappers of training checkpoints
    removed as timm's `load_state_dict` removes them (a `state_dict`, `model` or
    `state_dict_ema` entry; DataParallel's `module.` prefix). The one place checkpoint keys
    are cleaned, for checking a checkpoint against a model and for loading it alike."""
    state = checkpoint
    if isinstance(state, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        what = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise WeightsError(f"checkpoint {path} holds {what}, not a state dict; pass the model's weights file")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_checkpoint(path: Path, *, trust_checkpoint: bool = False, shapes_only: bool = False) -> dict[str, Any] | None:
    """The state dict of a safetensors file or a torch checkpoint (`weights_only` unless
    trusted), cleaned by `state_dict_of`.

    Every way the file can be wrong is a one-line `WeightsError` naming it: missing, empty,
    damaged, not a checkpoint, needing full unpickling without `--trust-checkpoint`, or not
    holding a state dict. `shapes_only` reads no more than it must (torch's zip checkpoints are
    memory-mapped, a safetensors file's header only) and returns `{key: shape}` (None for a
    value that is not a tensor); or None for a trusted checkpoint that only full unpickling
    reads, which is unpickled once, where the model is made.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"checkpoint {path} does not exist; --weights takes 'pretrained', 'random' or a checkpoint file"
        )
    try:
        if path.stat().st_size == 0:
            raise WeightsError(f"checkpoint {path} is empty (0 bytes); "
                               "save or download it again")
        safetensors = _looks_like_safetensors(path)
    except OSError as exc:
        raise WeightsError(f"checkpoint {path} cannot be read ({exc.strerror or exc}); check its permissions") from exc
    if safetensors:
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                names = list(f.keys())
                state = {name: tuple(f.get_slice(name).get_shape()) if shapes_only else f.get_tensor(name)
                         for name in names}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type from Rust
            raise WeightsError(f"checkpoint {path} is not a valid safetensors file ({_one_line(str(exc))}); "
                               "save or download it again") from exc
        if not names:
            raise WeightsError(f"checkpoint {path} holds no tensors; pass the model's weights file")
        return state_dict_of(state, path)
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6, which can be memory-mapped
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped and shapes_only)
    except pickle.UnpicklingError as exc:
        if not _needs_full_unpickling(exc):
            raise _unreadable(path, exc) from exc
        if not trust_checkpoint:
            raise WeightsError(
                f"checkpoint {path} holds objects that only full unpickling can load, which can run "
                "arbitrary code; re-save it as safetensors, or pass --trust-checkpoint if you trust it"
            ) from exc
        if shapes_only:
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (EOFError, RuntimeError, ValueError, OSError) as exc:
        raise _unreadable(path, exc) from exc
    state = state_dict_of(state, path)
    return shapes_of(state) if shapes_only else state


def shapes_of(state: dict[str, Any]) -> dict[str, tuple[int, ...] | None]:
    """`{key: shape}` of a state dict (None for a value that is not a tensor)."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else None for k, v in state.items()}


def check_checkpoint(path: Path | str, trust_checkpoint: bool = False) -> None:
    """Check, before any model runs, that `path` is a checkpoint that can be loaded (see
    `read_checkpoint`); raises a one-line `WeightsError` naming the file and what is wrong."""
    read_checkpoint(Path(path), trust_checkpoint=trust_checkpoint, shapes_only=True)


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]" if shape is not None else "not a tensor"


def checkpoint_misfit(shapes: dict[str, tuple[int, ...] | None], expected: dict[str, tuple[int, ...] | None]) -> str:
    """What keeps a checkpoint of `shapes` (`{key: shape}`) from loading strictly into a model
    whose state dict has `expected`; "" when it fits. A missing batch-norm `num_batches_tracked`
    is allowed, as torch's batch norm fills it in for a state dict saved without its version."""
    missing = [k for k in expected if k not in shapes and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in shapes if k not in expected]
    misshaped = [f"{k} (checkpoint {_shape(shapes[k])}, model {_shape(expected[k])})"
                 for k in expected if k in shapes and shapes[k] != expected[k]
                 and not (expected[k] == () and shapes[k] == (1,))]  # torch loads a 1-element tensor into a scalar
    parts = [f"{len(keys)} {what} key(s): {first_few(keys)}"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    return "; ".join(parts)


def check_checkpoint_fits(path: Path | str, models: Iterable[str], trust_checkpoint: bool = False) -> None:
    """Check, before any model runs, that the checkpoint at `path` loads into each of `models`:
    its keys (cleaned as for loading) and shapes against each model's state dict, the models
    built on the meta device (no real tensors). Raises one `WeightsError` line naming the
    checkpoint, the model and the first few missing, unexpected and mis-shaped keys. A trusted
    checkpoint that only full unpickling reads is not unpickled here (its load checks it)."""
    from .metadevice import meta_model

    shapes = read_checkpoint(Path(path), trust_checkpoint=trust_checkpoint, shapes_only=True)
    if shapes is None:
        return
    for name in models:
        try:
            model = meta_model(name)
        except Exception:  # noqa: BLE001 - a model the meta device cannot build is checked when it is loaded
            continue
        misfit = checkpoint_misfit(shapes, shapes_of(model.state_dict()))
        if misfit:
            raise WeightsError(f"checkpoint {path} does not fit {name}: {misfit}; pass a checkpoint of {name}'s "
                               "architecture, or run the models it fits without the others")


def load_checkpoint(model, path: Path, *, trust_checkpoint: bool = False) -> None:
    """Load a safetensors file or a torch checkpoint (`weights_only` unless trusted) into `model`."""
    state = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"checkpoint {path} does not fit the model: {_one_line(str(exc))}") from exc


def param_count(model) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6

