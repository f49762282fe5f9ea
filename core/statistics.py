"""Statistics that tell a real difference from noise, from stored predictions or result rows.

- `wilson_interval`: the 95% Wilson score interval of a proportion (top-1, top-5).
- `mcnemar_exact`: McNemar's exact test of two models on the same images (a two-sided
  binomial test on the discordant pairs).
- `paired_difference`: the difference in accuracy of two models on the same images, with its
  paired 95% Wald interval.
- `expected_calibration_error`, `negative_log_likelihood`, `brier_score`: calibration.
- `logit`, `fit_line`, `effective_robustness`: Taori et al. (2020), a line through many
  models' (base accuracy, shifted accuracy) points on logit axes, and each model's distance
  above it.

Plain numbers in, plain numbers out; numpy is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
ECE_BINS = 15
ALPHA = 0.05
MIN_FIT_MODELS = 10
LOGIT_CLIP = 1e-4  # accuracies are clipped to [1e-4, 1 - 1e-4] before the logit
EXACT_BINOMIAL_LIMIT = 1000  # discordant pairs up to which McNemar's p is summed in integers


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of `successes` out of `n`, as fractions in [0, 1].

    centre = (p + z^2 / 2n) / (1 + z^2 / n), half-width = z sqrt(p (1 - p) / n + z^2 / 4n^2) /
    (1 + z^2 / n), with p = successes / n. `n = 0` gives (nan, nan).
    """
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denominator
    # At 0 and n successes the interval ends exactly at 0 and 1; in floats centre - half leaves
    # a residue of about 1e-16 there, which would be printed as a bound.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


_LOG_FACTORIALS: list = []  # [log 0!, log 1!, ...], grown as needed: a report tests many models


def _log_factorials(n: int):
    """`log i!` for i = 0..n (at least), as a numpy array."""
    import numpy as np

    if not _LOG_FACTORIALS or len(_LOG_FACTORIALS[0]) <= n:
        size = max(n + 1, 2 * len(_LOG_FACTORIALS[0]) if _LOG_FACTORIALS else 0)
        _LOG_FACTORIALS[:] = [np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size, dtype=np.float64)))])]
    return _LOG_FACTORIALS[0]


def _log_binomial_cdf_half(k: int, n: int) -> float:
    """log P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (numpy)."""
    import numpy as np

    log_fact = _log_factorials(n)
    i = np.arange(k + 1)
    terms = log_fact[n] - log_fact[i] - log_fact[n - i] - n * math.log(2.0)
    top = terms.max()
    return float(top + math.log(np.exp(terms - top).sum()))


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value for `b` pairs where only the first model is right and
    `c` where only the second is.

    Under the null hypothesis (both models equally accurate on these images) each discordant
    pair is a fair coin: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). No
    discordant pair (identical predictions) gives p = 1. Summed exactly in integers up to
    `EXACT_BINOMIAL_LIMIT` discordant pairs, in log space above.
    """
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    if n <= EXACT_BINOMIAL_LIMIT:
        term = tail = 1  # C(n, 0), then each C(n, i + 1) from C(n, i): exact integers
        for i in range(k):
            term = term * (n - i) // (i + 1)
            tail += term
        return min(1.0, 2 * tail / 2**n)
    return min(1.0, 2.0 * math.exp(_log_binomial_cdf_half(k, n)))


@dataclass(frozen=True)
class PairedComparison:
    """Two models' top-1 on the same `n` images: `both` right, `only_a` right, `only_b` right,
    `neither`; accuracies and their difference (a minus b) in percent, the difference's 95%
    paired interval (`low`, `high`), and McNemar's exact p-value."""

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int
    top1_a: float
    top1_b: float
    diff: float
    low: float
    high: float
    p_value: float

    def p_text(self) -> str:
        """The p-value as printed: 4 significant digits, `< 1e-300` below what a float holds."""
        return "< 1e-300" if self.p_value == 0 else f"= {self.p_value:.4g}"

    def verdict(self, a: str, b: str, alpha: float = ALPHA) -> str:
        """One line: which model is better, or that the difference is not significant."""
        if self.p_value < alpha:
            better, worse = (a, b) if self.diff > 0 else (b, a)
            return (f"{better} is more accurate than {worse}: {abs(self.diff):.2f} points "
                    f"(95% CI {self.low:+.2f} to {self.high:+.2f}), McNemar p {self.p_text()} < {alpha}")
        return (f"no significant difference: {self.diff:+.2f} points (95% CI {self.low:+.2f} to {self.high:+.2f}), "
                f"McNemar p {self.p_text()} >= {alpha}")


def paired_difference(hits_a: Any, hits_b: Any, z: float = Z95) -> PairedComparison:
    """Compare two models' per-image hits (boolean arrays over the same images, same order).

    The difference d = acc_a - acc_b has the paired Wald interval d +- z se, with
    se = sqrt((b + c) / n - d^2) / sqrt(n) (the standard error of the mean of the per-image
    differences, b and c the discordant counts). McNemar's exact test gives the p-value.
    """
    import numpy as np

    a = np.asarray(hits_a, dtype=bool)
    b_ = np.asarray(hits_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"hits of different lengths: {a.shape} and {b_.shape}")
    n = int(a.size)
    both = int((a & b_).sum())
    only_a = int((a & ~b_).sum())
    only_b = int((~a & b_).sum())
    neither = n - both - only_a - only_b
    if n == 0:
        nan = math.nan
        return PairedComparison(0, 0, 0, 0, 0, nan, nan, nan, nan, nan, 1.0)
    d = (only_a - only_b) / n
    se = math.sqrt(max(0.0, (only_a + only_b) / n - d * d) / n)
    return PairedComparison(n=n, both=both, only_a=only_a, only_b=only_b, neither=neither,
                            top1_a=100.0 * (both + only_a) / n, top1_b=100.0 * (both + only_b) / n,
                            diff=100.0 * d, low=100.0 * (d - z * se), high=100.0 * (d + z * se),
                            p_value=mcnemar_exact(only_a, only_b))


def expected_calibration_error(confidence: Any, hits: Any, bins: int = ECE_BINS) -> float:
    """Expected calibration error (Guo et al. 2017), a fraction in [0, 1].

    Samples are binned by top-1 confidence into `bins` equal-width bins over [0, 1] (bin b
    holds the confidences in (b/bins, (b+1)/bins], the first also holds 0); ECE =
    sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|. Empty input gives nan.
    """
    import numpy as np

    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(hits, dtype=np.float64)
    n = conf.size
    if n == 0:
        return math.nan
    edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    which = np.searchsorted(edges, conf, side="left")
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    hit_sum = np.bincount(which, weights=hit, minlength=bins)
    return float(np.abs(hit_sum - conf_sum).sum() / n)


def negative_log_likelihood(label_logp: Any) -> float:
    """Mean of -log p(true label) over the samples whose label's log-probability is known
    (finite); nan when none is."""
    import numpy as np

    logp = np.asarray(label_logp, dtype=np.float64)
    known = ~np.isnan(logp)
    return float(-logp[known].mean()) if known.any() else math.nan


def brier_score(prob_sq_sum: Any, label_logp: Any) -> float:
    """Mean multi-class Brier score, sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_label + 1, over the
    samples whose label's log-probability is known; nan when none is."""
    import numpy as np

    logp = np.asarray(label_logp, dtype=np.float64)
    sq = np.asarray(prob_sq_sum, dtype=np.float64)
    known = ~np.isnan(logp)
    if not known.any():
        return math.nan
    return float((sq[known] - 2.0 * np.exp(logp[known]) + 1.0).mean())


def logit(p: Any, clip: float = LOGIT_CLIP):
    """ln(p / (1 - p)) of accuracies as fractions, clipped to [clip, 1 - clip] first."""
    import numpy as np

    q = np.clip(np.asarray(p, dtype=np.float64), clip, 1.0 - clip)
    return np.log(q / (1.0 - q))


def inverse_logit(x: Any):
    """1 / (1 + exp(-x))."""
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True)
class LineFit:
    """y = slope x + intercept by least squares, with its coefficient of determination."""

    slope: float
    intercept: float
    r2: float
    n: int


def fit_line(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Ordinary least squares of y on x. r^2 = 1 - SS_res / SS_tot (1 when y is constant and
    fitted exactly)."""
    import numpy as np

    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mx, my = xs.mean(), ys.mean()
    sxx = ((xs - mx) ** 2).sum()
    slope = float(((xs - mx) * (ys - my)).sum() / sxx) if sxx > 0 else 0.0
    intercept = float(my - slope * mx)
    residual = ((ys - (slope * xs + intercept)) ** 2).sum()
    total = ((ys - my) ** 2).sum()
    r2 = float(1.0 - residual / total) if total > 0 else 1.0
    return LineFit(slope=slope, intercept=intercept, r2=r2, n=int(xs.size))


def effective_robustness(base_top1: Sequence[float], top1: Sequence[float]) -> tuple[LineFit, Any, Any]:
    """Taori et al. (2020): fit logit(shifted) = slope logit(base) + intercept over the models'
    top-1 (percent); returns the fit, each model's predicted shifted top-1 (percent, the line
    mapped back through the inverse logit) and its effective robustness in accuracy points
    (its shifted top-1 minus the predicted)."""
    import numpy as np

    base = np.asarray(base_top1, dtype=np.float64) / 100.0
    shifted = np.asarray(top1, dtype=np.float64) / 100.0
    fit = fit_line(logit(base), logit(shifted))
    predicted = 100.0 * inverse_logit(fit.slope * logit(base) + fit.intercept)
    return fit, predicted, 100.0 * shifted - predicted
