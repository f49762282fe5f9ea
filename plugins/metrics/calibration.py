"""Calibration per view: expected calibration error, negative log-likelihood and Brier score.

- `ece`: 15 equal-width bins of top-1 confidence (`exp(topk_logp[:, 0])`, the softmax
  probability of the predicted class over the view's classes), a hit when the top-1 class is
  right (any of a label set); ECE = sum over bins of (bin size / n) |accuracy - mean
  confidence| (Guo et al. 2017), as a fraction.
- `nll`: the mean of -log p(label) over the samples with an int label inside the view's
  classes (nats).
- `brier`: the mean multi-class Brier score sum_c (p_c - y_c)^2, exactly, as
  `prob_sq_sum - 2 exp(label_logp) + 1` over the same samples as `nll`.

A label-set view (ImageNet-ReaL) has no single true class, so no label log-probability: its
`nll` and `brier` are empty (a one-hot target is undefined); its `ece` uses the set hits.
"""

from __future__ import annotations

import math

import rbench
from rbench import statistics


def compute(predictions: rbench.Predictions, view: rbench.ViewSpec) -> dict[str, float | None]:
    import numpy as np

    hit, scored = predictions.correct(1)
    confidence = np.exp(np.asarray(predictions.topk_logp, dtype=np.float64)[:, 0])
    ece = statistics.expected_calibration_error(confidence[scored], hit[scored])
    nll = statistics.negative_log_likelihood(predictions.label_logp)
    brier = statistics.brier_score(predictions.prob_sq_sum, predictions.label_logp)

    def value(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {"ece": value(ece), "nll": value(nll), "brier": value(brier)}


@rbench.hookimpl
def rbench_metrics():
    return [
        rbench.MetricSpec(
            name="calibration",
            description="ECE (15 equal-width bins of top-1 confidence), NLL and Brier score",
            columns=("ece", "nll", "brier"),
            compute=compute,
            version="1",
        )
    ]
