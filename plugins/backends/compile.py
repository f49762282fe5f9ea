"""The compile modifier: torch.compile on any base (`cuda-amp+channels-last+compile`).

The mode comes from `RBENCH_COMPILE_MODE` (`default`, `reduce-overhead`, `max-autotune`,
`max-autotune-no-cudagraphs`; unset: `default`), the compiler backend from
`RBENCH_COMPILE_BACKEND` (unset: `inductor`). Compilation happens on the first call, which the
benchmark times as compile time, outside the step times. Benchmark files get the `-dynamo`
suffix, as in timm's tables.
"""

from __future__ import annotations

import os

import rbench

MODE_ENV = "RBENCH_COMPILE_MODE"
BACKEND_ENV = "RBENCH_COMPILE_BACKEND"
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _mode() -> str:
    return os.environ.get(MODE_ENV) or "default"


def _unavailable() -> str | None:
    import torch

    if _mode() not in MODES:
        return f"{MODE_ENV}={_mode()!r} is not a torch.compile mode; use one of {', '.join(MODES)}"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python or platform"
    return None


def _compile(model):
    import torch

    return torch.compile(model, mode=_mode(), backend=os.environ.get(BACKEND_ENV) or "inductor")


def _reset() -> None:
    import torch

    # Compiled graphs and their guards would otherwise pile up from model to model.
    torch._dynamo.reset()


@rbench.hookimpl
def rbench_backends():
    return [
        rbench.BackendSpec(
            name="compile",
            description=f"modifier: torch.compile (mode from ${MODE_ENV}, default 'default'; stacks on any base)",
            modifier=True,
            suffix="dynamo",
            compiles=True,
            unavailable=_unavailable,
            prepare_model=_compile,
            cleanup=_reset,
        )
    ]
