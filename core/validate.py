"""Validation: one forward pass over a source, then every view scored by every metric."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from .backends import BackendStack
from .specs import MetricSpec, Source, ViewSpec


def predict(model, batches, stack: BackendStack, data_config: dict[str, Any],
            on_batch: Callable[[int], None] = lambda n: None):
    """Float32 logits `[N, C]` on the CPU for every sample of `batches` (a loader's
    `(pixels, indices, ok)`), in order, and the indices of the samples that could not be read.

    Pixels are normalised on the stack's device with `data_config`'s mean and std. Runs under
    `inference_mode` and the stack's autocast; the model must already be prepared. Logits come
    back to the host without waiting for each batch, so the device is never left idle.
    """
    import torch

    from .data import device_batches

    outputs, unreadable = [], []
    inputs = device_batches(batches, stack.device, data_config["mean"], data_config["std"],
                            channels_last=stack.layout == "nhwc")
    with torch.inference_mode(), stack.autocast():
        for images, indices, ok in inputs:
            logits = model(stack.prepare_input(images))
            outputs.append(logits.float().to("cpu", non_blocking=True))
            unreadable.extend(indices[~ok].tolist())
            on_batch(len(indices))
    stack.synchronize()  # the last copies to the host
    return torch.cat(outputs), unreadable


def view_inputs(source: Source, view: ViewSpec, unreadable: Collection[int] = ()) -> tuple[list[int], list[Any]]:
    """The sample indices a view scores and their labels (the view's own, or the source's),
    leaving out unreadable samples."""
    indices = list(view.samples) if view.samples is not None else list(range(len(source.samples)))
    labels = list(view.labels) if view.labels is not None else [source.samples[i][1] for i in indices]
    if unreadable:
        skip = set(unreadable)
        kept = [(i, label) for i, label in zip(indices, labels) if i not in skip]
        indices, labels = [i for i, _ in kept], [label for _, label in kept]
    return indices, labels


def score_views(logits, source: Source, metrics: Sequence[MetricSpec],
                unreadable: Collection[int] = ()) -> dict[str, dict[str, Any]]:
    """`{view name: {column: value, ..., "count": n}}` from the logits of one pass over `source`."""
    import torch

    scores: dict[str, dict[str, Any]] = {}
    for view in source.views:
        indices, labels = view_inputs(source, view, unreadable)
        view_logits = logits[torch.as_tensor(indices, dtype=torch.long)]
        row: dict[str, Any] = {"count": len(indices)}
        for metric in metrics:
            row.update(metric.compute(view_logits, labels, view))
        if view.score is not None:
            row.update(view.score(view_logits, labels, indices))
        scores[view.name] = row
    return scores
