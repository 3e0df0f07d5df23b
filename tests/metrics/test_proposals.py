"""Proposal recall against a literal loop."""
import numpy as np
import pytest

from groundkit.metrics.proposals import proposal_recall, recall_at_k


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


def test_recall_at_k_matches_a_literal_loop_over_the_first_k():
    rng = np.random.default_rng(1)
    props, targets = [], []
    for _ in range(60):
        t = rng.integers(0, 20, 2).astype(float)
        target = np.concatenate([t, t + rng.integers(7, 14, 2)])
        k = int(rng.integers(0, 8))  # proposals: random boxes, some near the target
        near = target + rng.integers(-3, 4, (k, 4))
        far = np.concatenate([rng.integers(30, 40, (k, 2)), rng.integers(45, 60, (k, 2))], 1)
        props.append(np.where(rng.random((k, 1)) < 0.3, near, far).astype(float))
        targets.append(target)
    out = recall_at_k(props, targets, ks=(1, 2, 3, 5))
    for k in (1, 2, 3, 5):
        hits = [literal_hit(p[:k], t) for p, t in zip(props, targets)]
        assert out[f"recall@{k}"] == sum(hits) / 60
    assert 0 < out["recall@1"] < out["recall@5"] < 1
    assert out["mean_proposals"] == np.mean([len(p) for p in props]) and out["n"] == 60


def test_recall_at_k_literal_values():
    target = np.array([0, 0, 10, 10.0])
    ranked = np.array([[50, 50, 60, 60.0], [0, 0, 5, 10], [1, 0, 10, 10]])  # a miss, IoU 0.5, 0.9
    out = recall_at_k([ranked, np.zeros((0, 4))], [target, target], ks=(1, 2, 3, 5))
    assert out == {"recall@1": 0.0, "recall@2": 0.0, "recall@3": 0.5, "recall@5": 0.5,
                   "mean_proposals": 1.5, "n": 2}
    with pytest.raises(ValueError, match="positive integers"):
        recall_at_k([ranked], [target], ks=(0,))
