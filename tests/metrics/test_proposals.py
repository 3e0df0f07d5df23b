"""Proposal recall against a literal loop."""
import numpy as np
import pytest

from groundkit.metrics.proposals import proposal_recall


def literal_hit(props, target):
    for p in props:
        iw = max(0.0, min(p[2], target[2]) - max(p[0], target[0]))
        ih = max(0.0, min(p[3], target[3]) - max(p[1], target[1]))
        inter = iw * ih
        area_p = (p[2] - p[0]) * (p[3] - p[1])
        area_t = (target[2] - target[0]) * (target[3] - target[1])
        union = area_p + area_t - inter
        if inter / union > 0.5:
            return True
    return False


def test_matches_literal_on_random_sets():
    rng = np.random.default_rng(0)
    props, targets = [], []
    for _ in range(40):
        t = rng.integers(0, 20, 2).astype(float)
        target = np.concatenate([t, t + rng.integers(7, 14, 2)])  # jitter keeps it valid
        k = int(rng.integers(0, 6))  # proposals: the target jittered by up to 3 px per side
        props.append(target + rng.integers(-3, 4, (k, 4)))
        targets.append(target)
    out = proposal_recall(props, targets)
    hits = [literal_hit(p, t) for p, t in zip(props, targets)]
    assert out["recall"] == sum(hits) / 40 and 0 < out["recall"] < 1
    assert out["mean_proposals"] == np.mean([len(p) for p in props]) and out["n"] == 40


def test_strict_half_and_several_targets():
    target = np.array([0, 0, 10, 10.0])
    half = np.array([[0, 0, 5, 10.0]])  # IoU exactly 0.5: not recalled
    assert proposal_recall([half], [target])["recall"] == 0.0
    contexts = np.array([[0, 0, 10, 10.0], [50, 50, 60, 60]])  # one of two objects covered
    out = proposal_recall([np.array([[0, 0, 9, 10.0]])], [contexts])
    assert out == {"recall": 0.5, "mean_proposals": 1.0, "n": 2}
    with pytest.raises(ValueError, match="proposal sets"):
        proposal_recall([half], [])
