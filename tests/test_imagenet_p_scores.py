"""ImageNet-P's Flip Probability and Top-5 Distance on hand-made prediction sequences, against
values worked out here and against a literal oracle of the reference test.py's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from rbench.plugins.datasets import imagenet_p


def test_compared_pairs():
    assert imagenet_p.compared_pairs(5, noise=True) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert imagenet_p.compared_pairs(5, noise=True, difficulty=3) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert imagenet_p.compared_pairs(5, noise=False) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert imagenet_p.compared_pairs(5, noise=False, difficulty=2) == [(0, 2), (1, 3), (2, 4)]


def test_flip_probability_by_hand():
    """Sequence A = 3 3 4 3 4, sequence B = 1 1 1 1 2.
    Noise (against frame 0): A flips at frames 2 and 4 -> 2/4; B at 4 -> 1/4; mean 3/8.
    Difficulty 1 (neighbours): A 0,1,1,1 -> 3/4; B 0,0,0,1 -> 1/4; mean 1/2.
    Difficulty 2 (pairs 0-2, 1-3, 2-4): A 1,0,0 -> 1/3; B 0,0,1 -> 1/3; mean 1/3."""
    top1 = [[3, 3, 4, 3, 4], [1, 1, 1, 1, 2]]
    assert imagenet_p.flip_probability(top1, noise=True) == pytest.approx(3 / 8)
    assert imagenet_p.flip_probability(top1, noise=True, difficulty=2) == pytest.approx(3 / 8)
    assert imagenet_p.flip_probability(top1, noise=False) == pytest.approx(1 / 2)
    assert imagenet_p.flip_probability(top1, noise=False, difficulty=2) == pytest.approx(1 / 3)


# Frame a: class 0 first, then 1 and 2 tied at 4 (ordinal: 1 before 2), 3, 4.
# Frame b: 7, 2, 1, 3, 4 (class 0 falls to rank 7).
FRAME_A = [5, 4, 4, 3, 2, 1, 0, 0]
FRAME_B = [0, 4, 5, 3, 2, 1, 0, 9]


def test_top5_ordinal_breaks_ties_by_class_order():
    assert imagenet_p.top5_ordinal(FRAME_A).tolist() == [0, 1, 2, 3, 4]
    assert imagenet_p.top5_ordinal(FRAME_B).tolist() == [7, 2, 1, 3, 4]
    assert imagenet_p.top5_ordinal([1.0] * 6).tolist() == [0, 1, 2, 3, 4]
    assert imagenet_p.top5_ordinal([[0, 2, 2, 2, 2, 2, 1]]).tolist() == [[1, 2, 3, 4, 5]]


def test_top5_distance_by_hand():
    """a -> b: a's class 0 is b's rank 7, capped at 6: |0 - 5| = 5; class 1 is b's rank 3:
    |1 - 2| = 1; class 2 rank 2: |2 - 1| = 1; classes 3 and 4 keep ranks 4 and 5: 0. Total 7.
    Had the tie in a gone the other way (2 before 1) the total would be 5: the tie rule counts.
    b -> a: b's 7 is a's rank 7 (capped): 5; 2 is rank 3: |1 - 2| = 1; 1 is rank 2: 1; 3, 4: 0.
    Total 7 as well."""
    a, b = imagenet_p.top5_ordinal(FRAME_A), imagenet_p.top5_ordinal(FRAME_B)
    assert imagenet_p.pair_top5_distance(a, b) == 7
    assert imagenet_p.pair_top5_distance([0, 2, 1, 3, 4], b) == 5
    assert imagenet_p.pair_top5_distance(b, a) == 7
    assert imagenet_p.pair_top5_distance(a, a) == 0
    # A sequence a, b, a, a: noise pairs (0,1) (0,2) (0,3) -> 7, 0, 0: 7/3; difficulty 1:
    # (a,b) (b,a) (a,a) -> 7, 7, 0: 14/3; difficulty 2: (a,a) (b,a) -> 0, 7: 7/2.
    seq = np.array([[a, b, a, a]])
    assert imagenet_p.top5_distance(seq, noise=True) == pytest.approx(7 / 3)
    assert imagenet_p.top5_distance(seq, noise=False) == pytest.approx(14 / 3)
    assert imagenet_p.top5_distance(seq, noise=False, difficulty=2) == pytest.approx(7 / 2)
    # Two sequences: the mean of the per-sequence means.
    two = np.array([[a, b, a, a], [a, a, a, a]])
    assert imagenet_p.top5_distance(two, noise=False) == pytest.approx(7 / 3)


def literal_scores(logits: np.ndarray, noise: bool, difficulty: int) -> tuple[float, float]:
    """test.py's arithmetic written out: ordinal ranks of -logits (scipy), argmax, the
    sub-sequence walk, `cumsum([0] + [1] * 5 + [0] * rest)`, per-video means over videos."""
    from scipy.stats import rankdata

    classes = logits.shape[-1]
    cum = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (classes - 6)))
    step = 1 if noise else difficulty
    fp = t5 = 0.0
    for video in logits:
        ranks = [np.uint16(rankdata(-frame, method="ordinal")) for frame in video]
        preds = video.argmax(1)
        flips, dists = [], []
        for i in range(step):
            prev, perm1 = preds[i], ranks[i]
            for pred, perm2 in zip(preds[i::step][1:], ranks[i::step][1:]):
                sigma = perm2[np.argsort(perm1)]
                flips.append(int(prev != pred))
                dists.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
                if not noise:
                    prev, perm1 = pred, perm2
        fp += np.mean(flips) / len(logits)
        t5 += np.mean(dists) / len(logits)
    return fp, t5


@pytest.mark.parametrize("noise,difficulty", [(True, 1), (False, 1), (False, 2), (False, 3)])
def test_scores_equal_the_literal_oracle_with_many_ties(noise, difficulty):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(difficulty + 10 * noise)
    logits = rng.integers(0, 4, size=(6, 11, 20)).astype(np.float32)  # ties everywhere
    fp, t5 = literal_scores(logits, noise, difficulty)
    top5 = imagenet_p.top5_ordinal(logits)
    assert imagenet_p.flip_probability(top5[..., 0], noise, difficulty) == pytest.approx(fp, abs=1e-12)
    assert imagenet_p.top5_distance(top5, noise, difficulty) == pytest.approx(t5, abs=1e-12)
    assert 0 < fp < 1 and t5 > 0
