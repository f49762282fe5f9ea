"""The accuracy metric, computed from stored predictions, against a brute-force loop over the
logits: plain labels, class subsets, label sets."""

from __future__ import annotations

import random

import pytest
import torch

from rbench import ViewSpec
from rbench.plugins.metrics.accuracy import compute as compute_stored

from .conftest import predictions_of


def compute(logits, labels, view: ViewSpec):
    """The metric as rbench runs it: logits reduced to stored predictions, then scored."""
    return compute_stored(predictions_of(logits, labels, view=view), view)


def brute_force(logits, labels, classes=None):
    hits1 = hits5 = counted = 0
    allowed = list(range(logits.shape[1])) if classes is None else list(classes)
    for scores, label in zip(logits.tolist(), labels):
        accepted = set(label) if isinstance(label, tuple) else {label}
        if not accepted:
            continue
        ranked = sorted(allowed, key=lambda c: -scores[c])
        counted += 1
        hits1 += ranked[0] in accepted
        hits5 += bool(accepted & set(ranked[:5]))
    return 100 * hits1 / counted, 100 * hits5 / counted


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(300, 50)


def test_plain_labels(logits):
    labels = [random.Random(i).randrange(50) for i in range(300)]
    labels[:40] = logits[:40].argmax(1).tolist()  # some right answers
    got = compute(logits, labels, ViewSpec(name="v"))
    top1, top5 = brute_force(logits, labels)
    assert got["top1"] == pytest.approx(top1) and got["top5"] == pytest.approx(top5)
    assert got["top1_err"] == pytest.approx(100 - top1) and got["top5_err"] == pytest.approx(100 - top5)
    assert 10 < top1 < 30


def test_class_subset_restricts_the_argmax(logits):
    classes = list(range(0, 50, 3))
    labels = [classes[i % len(classes)] for i in range(300)]
    got = compute(logits, labels, ViewSpec(name="v", classes=classes))
    top1, top5 = brute_force(logits, labels, classes)
    assert (got["top1"], got["top5"]) == pytest.approx((top1, top5))
    unrestricted = brute_force(logits, labels)
    assert top1 > unrestricted[0]  # the restriction matters on this data


def test_label_sets_any_hit_counts_and_empty_sets_are_left_out(logits):
    rng = random.Random(7)
    labels = [tuple(rng.sample(range(50), rng.randrange(0, 4))) for _ in range(300)]
    got = compute(logits, labels, ViewSpec(name="v"))
    top1, top5 = brute_force(logits, labels)
    assert (got["top1"], got["top5"]) == pytest.approx((top1, top5))
    assert any(len(label) == 0 for label in labels)


@pytest.mark.parametrize("size", [1, 3])
def test_label_sets_of_one_length_are_scored(logits, size):
    """Every label set of the view the same length (as an ObjectNet-style view can have): numpy
    reads them as one rectangular array, which must still be scored as sets."""
    rng = random.Random(size)
    labels = [tuple(rng.sample(range(50), size)) for _ in range(300)]
    labels[:30] = [(int(row.argmax()), *label[1:]) for row, label in zip(logits[:30], labels[:30])]  # some hits
    got = compute(logits, labels, ViewSpec(name="v"))
    top1, top5 = brute_force(logits, labels)
    assert (got["top1"], got["top5"]) == pytest.approx((top1, top5))
    assert top1 >= 10
