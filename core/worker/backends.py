"""Backend stacks: one base backend and its modifiers, composed from `BackendSpec`s."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import RbenchError, UnavailableError, UnknownNameError
from ..registry import Registry
from ..specs import StepTimer


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

    @property
    def compiles(self) -> bool:
        """Whether a member compiles the model on its first call."""
        return any(m.compiles for m in self.members)

    def timer(self) -> StepTimer:
        """A new step timer: the base's own (CUDA events), else the host clock with `synchronize`."""
        return self.base.timer() if self.base.timer is not None else HostTimer(self.base.synchronize)

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory count on the base's device."""
        self.base.reset_peak_memory()

    def peak_memory(self) -> int | None:
        """Peak bytes allocated on the base's device since the last reset, or None."""
        return self.base.peak_memory()

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether `exc` means the batch did not fit on the base's device."""
        return self.base.is_out_of_memory(exc)

    def telemetry(self):
        """A new `Telemetry` of the base's device for one benchmark, or None where it has none."""
        return self.base.telemetry() if self.base.telemetry is not None else None

    @property
    def ray_resources(self) -> dict[str, float]:
        """What one cell on this stack reserves on a Ray cluster: the base's, then each modifier's."""
        resources: dict[str, float] = {}
        for member in self.members:
            resources.update(member.ray_resources)
        return resources

    def cleanup(self) -> None:
        """Every member's cleanup, modifiers first (compiled graphs before the allocator's cache)."""
        for member in reversed(self.members):
            member.cleanup()

    def file_tag(self) -> str:
        """`<precision>-<layout>-pt<torch>-<device>[-<suffix>]` for benchmark file names."""
        suffixes = [m.suffix for m in self.members if m.suffix]
        return "-".join([self.precision, self.layout, torch_tag(), self.base.device_tag(), *suffixes])


class HostTimer:
    """A `StepTimer` on the host clock: each step ends with `synchronize()`, then the clock is read."""

    def __init__(self, synchronize: Callable[[], None]):
        self._synchronize = synchronize
        self._times: list[float] = []
        self._start = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        self._synchronize()
        self._times.append((time.perf_counter() - self._start) * 1000.0)

    def times_ms(self) -> list[float]:
        return list(self._times)


def torch_tag() -> str:
    """`pt2141` for torch 2.14.1 (local version labels such as `+cu130` dropped)."""
    import torch

    return "pt" + torch.__version__.split("+")[0].replace(".", "")


def resolve_stack(name: str, registry: Registry) -> BackendStack:
    """Parse `base+modifier+...` into a stack, checking that each part exists and is available.

    A part may carry an option, `name:option` (`compile:max-autotune`): the spec's
    `configure` makes the member for it (see `BackendSpec`)."""
    specs = [configured(part.strip(), registry, name) for part in name.split("+")]
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


def configured(part: str, registry: Registry, stack_name: str):
    """The `BackendSpec` of one stack member, `name` or `name:option`, configured for its option."""
    member, _, option = part.partition(":")
    spec = registry.get("backends", member.strip())
    option = option.strip() or None
    if option is not None and option not in spec.options:
        takes = (f"it takes one of {', '.join(spec.options)}" if spec.options else "it takes no option")
        raise UnknownNameError(f"backend stack {stack_name!r}: {spec.name!r} has no option {option!r}; {takes} "
                               "(see `rbench list backends`)")
    return spec.configure(option) if spec.configure is not None else spec


def best_stack(registry: Registry) -> BackendStack:
    """The available base backend with the highest priority."""
    bases = sorted(
        (b for b in registry.backends.values() if not b.modifier), key=lambda b: (-b.priority, b.name)
    )
    for spec in bases:
        if not spec.unavailable():
            return BackendStack(spec)
    raise UnavailableError("no backend is available here; see `rbench list backends`")


# --- out of memory: the one back-off policy of validation and benchmarks -----------------

T = TypeVar("T")


def backoff_batches(asked: int) -> list[int]:
    """`asked`, then every smaller size on timm's ladder of powers of two and 1.5x powers of two:
    `backoff_batches(256)` is 256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1."""
    sizes: set[int] = set()
    power = 1
    while power < asked:
        sizes.update(s for s in (power, 3 * power) if s < asked)
        power *= 2
    return [asked, *sorted(sizes, reverse=True)]


def release(stack: BackendStack) -> None:
    """Free what the last attempt left: Python's garbage first (it holds device tensors), then
    each member's cleanup (compiled graphs, the allocator's cache)."""
    gc.collect()
    stack.cleanup()


class BatchFailed(Exception):
    """The last attempt of `with_backoff` failed: at `batch_size`, with `error`; `out_of_memory`
    says whether every size down to the last one tried ran out of memory."""

    def __init__(self, batch_size: int, error: Exception, out_of_memory: bool):
        super().__init__(f"batch {batch_size}: {error}")
        self.batch_size, self.error, self.out_of_memory = batch_size, error, out_of_memory


def with_backoff(attempt: Callable[[int], T], batch_size: int, stack: BackendStack, *,
                 retry: bool = True) -> tuple[T, int]:
    """`(attempt(size), size)` for the first size on `backoff_batches(batch_size)` that fits.

    An error that the stack calls out of memory moves to the next smaller size (with `retry`);
    any other error, or the last size failing, raises `BatchFailed`. An `RbenchError` passes
    through. The stack is released after every attempt.
    """
    sizes = backoff_batches(batch_size) if retry else [batch_size]
    for size in sizes:
        try:
            result = attempt(size)
        except RbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted below: out of memory or not
            failure = BatchFailed(size, exc, stack.is_out_of_memory(exc))
        else:
            release(stack)
            return result, size
        release(stack)  # after the except block, so the traceback's frames (and tensors) are gone
        if not failure.out_of_memory:
            break
    raise failure
