"""The frozen, keyword-only dataclasses that plugins return from the hooks in `hookspecs`.

One dataclass per kind of plugin, so that a plugin file is a list of plain values:
`DatasetSpec` (a source of images with its scored views), `MetricSpec` and `BackendSpec`.
Nothing here imports torch: the callables in a spec import what they need when called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Label = int | tuple[int, ...]
"""A class index, or a set of acceptable class indices (ImageNet-ReaL style)."""


@dataclass(frozen=True, kw_only=True)
class ViewSpec:
    """One scored result set over a source: it becomes `results-<name>.csv`.

    A view may restrict the samples (`samples`: indices into the source), swap the labels
    (`labels`: one per selected sample, an int or a tuple of acceptable classes), or restrict
    the logits to a class subset (`classes`: the class indices the argmax runs over).
    `base` names the view whose rows the diff columns compare against.
    """

    name: str
    base: str | None = None
    samples: Sequence[int] | None = None
    labels: Sequence[Label] | None = None
    classes: Sequence[int] | None = None


@dataclass(frozen=True, kw_only=True)
class Source:
    """Images on disk, as a dataset plugin's `load` returns them.

    `samples` are `(path, class index)` pairs in a fixed order; `views` are what gets scored
    from one forward pass over them. `partial` marks an incomplete data set run with
    `--allow-partial` (its result rows then say how many images they counted); `note` is shown
    to the user.
    """

    name: str
    root: Path
    samples: Sequence[tuple[str, int]]
    views: Sequence[ViewSpec]
    partial: bool = False
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class DataRequest:
    """What the user asked for a source.

    `path`: its folder, if any. `views`: the view names asked for by name (`-d imagenet-real`),
    or None when the source itself was named (all its views). `allow_partial`: run on an
    incomplete data set. `options`: this source's `--data-option NAME.KEY=VALUE` settings.
    """

    path: Path | None
    cache_dir: Path
    views: frozenset[str] | None = None
    allow_partial: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """A data set source.

    `load(request)` lists the samples and returns a `Source`; it raises `DataError` for a
    missing or malformed folder, before any model runs. `default_folder` is where the source
    lives under `--data-root` when no `--data NAME=PATH` is given (None: needs no folder, or
    needs one given explicitly). `views` maps each view name the source can produce to its
    base view (None for a base); empty means one view named like the source. A view name can
    be asked for with `-d` as well as the source's name.
    """

    name: str
    description: str
    load: Callable[[DataRequest], Source]
    default_folder: str | None = None
    views: Mapping[str, str | None] = field(default_factory=dict)

    def view_bases(self) -> Mapping[str, str | None]:
        """`views`, or `{name: None}` for a source with a single view of its own name."""
        return self.views or {self.name: None}


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """A metric computed per view from the logits of a forward pass.

    `compute(logits, labels, view)` takes float logits `[N, C]` for the view's samples, their
    labels (ints or tuples of ints) and the `ViewSpec` (for its class subset), and returns a
    mapping with one value per name in `columns`, at full precision.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    compute: Callable[[Any, Sequence[Label], ViewSpec], Mapping[str, float]]


def _identity(x: Any) -> Any:
    return x


def _no_reason() -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """An accelerator backend (a base such as `cpu`, `cuda-amp`) or a modifier (`channels-last`).

    A stack is one base and any modifiers: `cuda-amp+channels-last`. The base gives `device`,
    `precision` (`fp32`, `amp`, `amp_bf16`, ...) and `autocast`; every member may transform the
    model and the input batch. `unavailable()` returns why the backend cannot run here, or None.
    `device_tag()` names the hardware in benchmark file names (`cu130-h200`, `cpu-i7_12700h`).
    A modifier may set `layout` (`nhwc`) or `suffix` (`dynamo`) in that file name.
    `synchronize()` waits for queued device work, so that a host clock can time a step.
    `priority` orders bases when choosing the best available one.
    """

    name: str
    description: str
    modifier: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    layout: str | None = None
    suffix: str | None = None
    priority: int = 0
    unavailable: Callable[[], str | None] = _no_reason
    device_tag: Callable[[], str] = lambda: "cpu"
    prepare_model: Callable[[Any], Any] = _identity
    prepare_input: Callable[[Any], Any] = _identity
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    synchronize: Callable[[], None] = lambda: None
