"""Top-1 and top-5 accuracy (percent) with their errors.

Handles the two twists of the ImageNet test sets here rather than in core: a view that
restricts the logits to a class subset (ImageNet-A/R: a 200-way argmax), and labels that are
sets of acceptable classes (ImageNet-ReaL: right when any top-k prediction is in the set;
samples with an empty set are left out).
"""

from __future__ import annotations

from collections.abc import Sequence

import rbench

TOPK = (1, 5)


def compute(logits, labels: Sequence[rbench.Label], view: rbench.ViewSpec) -> dict[str, float]:
    import torch

    logits = torch.as_tensor(logits).float()
    if view.classes is not None:
        classes = torch.as_tensor(list(view.classes), dtype=torch.long)
        logits = logits[:, classes]
    else:
        classes = None
    k = min(max(TOPK), logits.shape[1])
    top = logits.topk(k, dim=1).indices
    if classes is not None:
        top = classes[top]  # back to the full label space
    hits = {k: 0 for k in TOPK}
    counted = 0
    for row, label in zip(top.tolist(), labels):
        accepted = set(label) if isinstance(label, (tuple, list, set, frozenset)) else {int(label)}
        if not accepted:
            continue
        counted += 1
        for k in TOPK:
            hits[k] += bool(accepted.intersection(row[:k]))
    result: dict[str, float] = {}
    for k in TOPK:
        acc = 100.0 * hits[k] / counted if counted else float("nan")
        result[f"top{k}"], result[f"top{k}_err"] = acc, 100.0 - acc
    return result


@rbench.hookimpl
def rbench_metrics():
    return [
        rbench.MetricSpec(
            name="accuracy",
            description="top-1 / top-5 accuracy and error, percent (class subsets and label sets aware)",
            columns=("top1", "top1_err", "top5", "top5_err"),
            compute=compute,
        )
    ]
