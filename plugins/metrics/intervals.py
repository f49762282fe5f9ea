"""95% Wilson score intervals of top-1 and top-5 accuracy (percent), per view.

Over the same samples as the `accuracy` metric: a class-subset view's 200-way top-k, and for a
label-set view (ImageNet-ReaL) the images with a non-empty set, a hit when any top-k class is
in the set. The interval is Wilson's (`rbench.statistics.wilson_interval`), which stays inside
[0, 100] and keeps its nominal coverage near 0 and 100, where the normal (Wald) one does not.
"""

from __future__ import annotations

import rbench
from rbench import statistics

TOPK = (1, 5)


def compute(predictions: rbench.Predictions, view: rbench.ViewSpec) -> dict[str, float]:
    result: dict[str, float] = {}
    for k in TOPK:
        hit, scored = predictions.correct(k)
        low, high = statistics.wilson_interval(int(hit[scored].sum()), int(scored.sum()))
        # ten decimals of a percent: far below any interval's width, and no float residue in the CSV
        result[f"top{k}_low"], result[f"top{k}_high"] = round(100.0 * low, 10), round(100.0 * high, 10)
    return result


@rbench.hookimpl
def rbench_metrics():
    return [
        rbench.MetricSpec(
            name="intervals",
            description="95% Wilson intervals of top-1 / top-5 accuracy, percent",
            columns=("top1_low", "top1_high", "top5_low", "top5_high"),
            compute=compute,
            version="1",
        )
    ]
