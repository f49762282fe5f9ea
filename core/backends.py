"""Backend stacks: one base backend and its modifiers, composed from `BackendSpec`s."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import UnavailableError, UnknownNameError
from .registry import Registry


@dataclass(frozen=True)
class BackendStack:
    """A base backend with modifiers applied in order, e.g. `cuda-amp+channels-last`."""

    base: Any  # BackendSpec
    modifiers: tuple = ()

    @property
    def members(self) -> tuple:
        return (self.base, *self.modifiers)

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.members)

    @property
    def device(self) -> str:
        return self.base.device

    @property
    def precision(self) -> str:
        return self.base.precision

    @property
    def layout(self) -> str:
        return next((m.layout for m in reversed(self.members) if m.layout), "nchw")

    def prepare_model(self, model):
        """The model moved, cast and wrapped by each member in turn."""
        for member in self.members:
            model = member.prepare_model(model)
        return model

    def prepare_input(self, batch):
        """The input batch moved and cast by each member in turn."""
        for member in self.members:
            batch = member.prepare_input(batch)
        return batch

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The base backend's autocast context (a no-op for plain precisions)."""
        with self.base.autocast():
            yield

    def synchronize(self) -> None:
        """Wait for the device's queued work."""
        self.base.synchronize()

    def file_tag(self) -> str:
        """`<precision>-<layout>-pt<torch>-<device>[-<suffix>]` for benchmark file names."""
        suffixes = [m.suffix for m in self.members if m.suffix]
        return "-".join([self.precision, self.layout, torch_tag(), self.base.device_tag(), *suffixes])


def torch_tag() -> str:
    """`pt2141` for torch 2.14.1 (local version labels such as `+cu130` dropped)."""
    import torch

    return "pt" + torch.__version__.split("+")[0].replace(".", "")


def resolve_stack(name: str, registry: Registry) -> BackendStack:
    """Parse `base+modifier+...` into a stack, checking that each part exists and is available."""
    parts = [p.strip() for p in name.split("+")]
    specs = [registry.get("backends", p) for p in parts]
    base, modifiers = specs[0], tuple(specs[1:])
    if base.modifier:
        raise UnknownNameError(
            f"backend stack {name!r} starts with the modifier {base.name!r}; put a base backend first, "
            f"for example 'cpu+{base.name}' (see `rbench list backends`)"
        )
    for spec in modifiers:
        if not spec.modifier:
            raise UnknownNameError(
                f"backend stack {name!r} has two base backends ({base.name!r}, {spec.name!r}); "
                "a stack is one base and modifiers (see `rbench list backends`)"
            )
    for spec in specs:
        reason = spec.unavailable()
        if reason:
            raise UnavailableError(f"backend {spec.name!r} is not available here: {reason}; see `rbench list backends`")
    return BackendStack(base, modifiers)


def best_stack(registry: Registry) -> BackendStack:
    """The available base backend with the highest priority."""
    bases = sorted(
        (b for b in registry.backends.values() if not b.modifier), key=lambda b: (-b.priority, b.name)
    )
    for spec in bases:
        if not spec.unavailable():
            return BackendStack(spec)
    raise UnavailableError("no backend is available here; see `rbench list backends`")
