"""Top-1 and top-5 accuracy (percent) with their errors, rbench's default metric.

Computed from the stored top-5, which already reflects the two twists of the ImageNet test
sets: a view that restricts the logits to a class subset (ImageNet-A/R: a 200-way argmax), and
labels that are sets of acceptable classes (ImageNet-ReaL: right when any top-k prediction is
in the set; samples with an empty set are left out).
"""

from __future__ import annotations

import rbench

TOPK = (1, 5)


def compute(predictions: rbench.Predictions, view: rbench.ViewSpec) -> dict[str, float]:
    result: dict[str, float] = {}
    for k in TOPK:
        hit, scored = predictions.correct(k)
        n = int(scored.sum())
        acc = 100.0 * int(hit[scored].sum()) / n if n else float("nan")
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
            version="1",
        )
    ]
