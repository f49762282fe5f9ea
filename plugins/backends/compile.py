"""The compile modifier: torch.compile on any base (`cuda-amp+channels-last+compile`).

The mode is the stack option (`+compile:max-autotune`), else `RBENCH_COMPILE_MODE` (`default`,
`reduce-overhead`, `max-autotune`, `max-autotune-no-cudagraphs`; unset: `default`); the
compiler backend comes from `RBENCH_COMPILE_BACKEND` (unset: `inductor`). Compilation happens
on the first call, which the benchmark times as compile time, outside the step times.
Benchmark files get the `-dynamo` suffix, as in timm's tables, for the default mode, and
`-dynamo_<mode>` for another (`-dynamo_max_autotune`: underscores, so that `-` still separates
the parts of the name), so that two modes never write the same file.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import rbench

MODE_ENV = "RBENCH_COMPILE_MODE"
BACKEND_ENV = "RBENCH_COMPILE_BACKEND"
MODES = {
    "default": "torch.compile's default mode",
    "reduce-overhead": "CUDA graphs to cut launch overhead",
    "max-autotune": "autotuned kernels, CUDA graphs",
    "max-autotune-no-cudagraphs": "autotuned kernels, no CUDA graphs",
}


def _env_mode() -> str:
    return os.environ.get(MODE_ENV) or "default"


def _unavailable() -> str | None:
    import torch

    if _env_mode() not in MODES:
        return f"{MODE_ENV}={_env_mode()!r} is not a torch.compile mode; use one of {', '.join(MODES)}"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python or platform"
    return None


def _compile(model, mode: str):
    import torch

    return torch.compile(model, mode=mode, backend=os.environ.get(BACKEND_ENV) or "inductor")


def _reset() -> None:
    import torch

    # Compiled graphs and their guards would otherwise pile up from model to model.
    torch._dynamo.reset()


def suffix(mode: str) -> str:
    """The file-name suffix of a compile mode: `dynamo`, or `dynamo_max_autotune`."""
    return "dynamo" if mode == "default" else f"dynamo_{mode.replace('-', '_')}"


def _configure(option: str | None) -> rbench.BackendSpec:
    """The modifier for one mode: the option, else the environment's (an unknown one is left to
    `unavailable`, which names the variable)."""
    mode = option or _env_mode()
    if mode not in MODES:
        return COMPILE
    return dataclasses.replace(COMPILE, name="compile" if mode == "default" else f"compile:{mode}",
                               suffix=suffix(mode), prepare_model=functools.partial(_compile, mode=mode))


COMPILE = rbench.BackendSpec(
    name="compile",
    description=f"modifier: torch.compile; mode as an option (compile:max-autotune), else ${MODE_ENV}, "
                "else 'default'; stacks on any base",
    modifier=True,
    suffix="dynamo",
    compiles=True,
    unavailable=_unavailable,
    prepare_model=functools.partial(_compile, mode="default"),
    cleanup=_reset,
    options=MODES,
    configure=_configure,
)


@rbench.hookimpl
def rbench_backends():
    return [COMPILE]
