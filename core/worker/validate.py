"""Validation's forward pass: every batch through the model, reduced to its stored predictions
as it comes off the device (`predictions.Reducer`), so that memory holds the predictions only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .backends import BackendStack
from ..specs import Source


def forward(model, batches, stack: BackendStack, data_config: dict[str, Any],
            reference: tuple[Any, BackendStack] | None = None) -> Iterator[tuple[Any, Any, Any, Any]]:
    """`(float32 logits on the device, indices, ok, reference logits)` for each batch of
    `batches` (a loader's `(pixels, indices, ok)`), in order.

    Pixels are normalised on the stack's device with `data_config`'s mean and std. Runs under
    `inference_mode` and the stack's autocast; the model must already be prepared. With a
    `reference` `(model, stack)`, the same normalised pixels also go through the reference model
    on its own stack, and its float32 logits come fourth (else None): the two outputs of one
    input, compared sample by sample. Nothing waits for the device batch by batch.
    """
    import torch

    from .data import device_batches

    inputs = device_batches(batches, stack.device, data_config["mean"], data_config["std"],
                            channels_last=stack.layout == "nhwc")
    with torch.inference_mode():
        for images, indices, ok in inputs:
            with stack.autocast():
                logits = model(stack.prepare_input(images))
            expected = None
            if reference is not None:
                reference_model, reference_stack = reference
                with reference_stack.autocast():
                    expected = reference_model(reference_stack.prepare_input(images.to(reference_stack.device)))
                expected = expected.float()
            yield logits.float(), indices, ok, expected  # reduced in float32, outside autocast


def predict(model, batches, stack: BackendStack, data_config: dict[str, Any], source: Source,
            on_batch: Callable[[int], None] = lambda n: None, reference: tuple[Any, BackendStack] | None = None,
            keep_scores: bool = False):
    """`(predictions frame, count of non-finite logits)` for every sample of `batches` over
    `source`: each batch of `forward` reduced as it comes (the device is never left idle).
    With a `reference` `(model, stack)`, the frame also holds each sample's logit differences
    from the reference model on the same input (`predictions.REFERENCE_FIELDS`). With
    `keep_scores`, it also holds each sample's log-probabilities over every class (`scores`)."""
    import torch

    from ..predictions import Reducer

    reducer = Reducer(source, keep_scores=keep_scores)
    with torch.inference_mode():
        for logits, indices, ok, expected in forward(model, batches, stack, data_config, reference):
            reducer.add(logits, indices, ok, reference=expected)
            on_batch(len(indices))
    stack.synchronize()  # the last copies to the host
    if reference is not None:
        reference[1].synchronize()
    return reducer.frame(), reducer.nonfinite()


def logits(model, batches, stack: BackendStack, data_config: dict[str, Any]):
    """Every sample's float32 logits `[N, C]` on the CPU, in order: for tools that compare
    stacks or time the pass (`bench/`); validation itself keeps predictions, not logits."""
    import torch

    outputs = [out.to("cpu", non_blocking=True) for out, _, _, _ in forward(model, batches, stack, data_config)]
    stack.synchronize()
    return torch.cat(outputs)
