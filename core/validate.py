"""Validation's forward pass: every batch through the model, reduced to its stored predictions
as it comes off the device (`predictions.Reducer`), so that memory holds the predictions only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backends import BackendStack
from .specs import Source


def predict(model, batches, stack: BackendStack, data_config: dict[str, Any], source: Source,
            on_batch: Callable[[int], None] = lambda n: None):
    """`(predictions frame, count of non-finite logits)` for every sample of `batches` (a
    loader's `(pixels, indices, ok)` over `source`).

    Pixels are normalised on the stack's device with `data_config`'s mean and std. Runs under
    `inference_mode` and the stack's autocast; the model must already be prepared. Nothing
    waits for the device batch by batch: each batch's reductions come back to the host
    without blocking, so the device is never left idle.
    """
    import torch

    from .data import device_batches
    from .predictions import Reducer

    reducer = Reducer(source)
    inputs = device_batches(batches, stack.device, data_config["mean"], data_config["std"],
                            channels_last=stack.layout == "nhwc")
    with torch.inference_mode():
        for images, indices, ok in inputs:
            with stack.autocast():
                logits = model(stack.prepare_input(images))
            reducer.add(logits, indices, ok)  # in float32, outside autocast
            on_batch(len(indices))
    stack.synchronize()  # the last copies to the host
    return reducer.frame(), reducer.nonfinite()
