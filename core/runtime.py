"""Models run by a runtime outside PyTorch (ONNX Runtime, OpenVINO), as a backend's
`prepare_model` returns them: called like a model with a torch batch, they give torch logits.

`ExportedModel` holds what every such backend needs: the conversion on the first call (timed as
compile time, since such a base sets `compiles`), one converted program per input shape, and
the refusal to train. A backend plugin gives only `convert(model, example, dynamic)`.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable
from typing import Any

from .errors import ExportError

Convert = Callable[[Any, Any, bool], Callable[[Any], Any]]
"""`convert(model, example, dynamic)`: the PyTorch `model` converted for batches shaped like
`example` (a float32 CPU tensor), with a free batch size when `dynamic`; returns
`run(array) -> array` (float32 numpy NCHW batch in, numpy logits out). Raises `ExportError`
with the exporter's one-line reason when the model cannot be converted."""

EXAMPLE_BATCH = 2  # a dynamic batch exported at 1 would be specialised to 1 by torch.export


class ExportedModel:
    """`model` run by `convert`'s runtime (`name` in messages), converted on the first call.

    A batch size free in the converted program serves every batch of that image shape; where
    the exporter cannot free it, each batch shape gets its own conversion. `train()` raises:
    these runtimes run inference only, so a train benchmark becomes a failed row.
    """

    def __init__(self, model, convert: Convert, name: str):
        self.model, self.convert, self.name = model, convert, name
        self._programs: dict[tuple, Callable[[Any], Any]] = {}

    def __call__(self, batch):
        import numpy as np
        import torch

        run = self._programs.get(tuple(batch.shape[1:])) or self._programs.get(tuple(batch.shape))
        if run is None:
            run = self._convert(tuple(batch.shape))
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(run(array), dtype=np.float32))

    def _convert(self, shape: tuple) -> Callable[[Any], Any]:
        import torch

        # Outside inference mode (torch.export traces autograd-aware ops), quietly: exporters
        # print progress and tracer warnings that say nothing about the result.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                run = self.convert(self.model, torch.zeros((EXAMPLE_BATCH, *shape[1:])), True)
                self._programs[shape[1:]] = run
            except ExportError:
                run = self.convert(self.model, torch.zeros(shape), False)  # raises the static reason
                self._programs[shape] = run
        return run

    def eval(self) -> ExportedModel:
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> ExportedModel:
        if mode:
            raise NotImplementedError(f"{self.name} runs inference only; benchmark train on a PyTorch backend")
        return self.eval()

    def to(self, *args, **kwargs) -> ExportedModel:
        """The PyTorch model moved or cast (a modifier such as `channels-last`) before conversion."""
        self.model = self.model.to(*args, **kwargs)
        return self

    def parameters(self):
        return self.model.parameters()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exporter_reason(exc: BaseException, pattern: str | None = None) -> str:
    """The one line of an exporter's long message that says why: the first match of `pattern`
    (a regex; its groups joined by ": ") in the message, else its type and first line."""
    text = _ANSI.sub("", str(exc))
    if pattern:
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return " ".join(": ".join(found.groups()).split())
    first = next((line for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {' '.join(first.split())}"
