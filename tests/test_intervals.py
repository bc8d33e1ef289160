"""The bootstrap behind the evaluation's 95 % intervals (evaluation/intervals.py)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from evaluation.intervals import (
    bootstrap_weights,
    percentile_interval,
    ratio_intervals,
    replicate_aupr,
    weighted_average_precision,
)


def test_weighted_average_precision_equals_scikit_learn_with_ties_and_zero_weights():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.2
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # coarse: many tied scores
    weights = rng.integers(0, 4, size=(7, 300)).astype(np.float64)
    got = weighted_average_precision(labels, scores, weights, chunk=3)
    want = [average_precision_score(labels, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert weighted_average_precision(labels, scores, np.ones(300))[0] == pytest.approx(
        average_precision_score(labels, scores))


def test_a_copy_without_a_positive_is_nan():
    labels = np.array([1, 0, 0, 1])
    assert np.isnan(weighted_average_precision(labels, np.arange(4.0), [[0, 1, 1, 0]])[0])


def test_bootstrap_copies_keep_each_class_count_and_are_reproducible():
    labels = np.r_[np.ones(30), np.zeros(170)].astype(bool)
    weights = bootstrap_weights(labels, 50, seed=1, task="t")
    assert weights.shape == (50, 200)
    np.testing.assert_array_equal(weights[:, labels].sum(axis=1), 30)
    np.testing.assert_array_equal(weights[:, ~labels].sum(axis=1), 170)
    np.testing.assert_array_equal(weights, bootstrap_weights(labels, 50, seed=1, task="t"))
    assert not np.array_equal(weights, bootstrap_weights(labels, 50, seed=2, task="t"))


def _world(gain: float, tasks: int = 6, repeats: int = 3, users: int = 400):
    """Replicates and points of a meta method whose scores carry ``gain`` more signal than
    the classic method's, on shared bootstrap copies."""
    rng = np.random.default_rng(5)
    replicates, points = {}, {}
    for r in range(repeats):
        for t in range(tasks):
            labels = rng.random(users) < 0.15
            weights = bootstrap_weights(labels, 200, seed=r, task=f"t{t}")
            noise = rng.normal(size=users)
            for method, signal in (("meta", 1.0 + gain), ("classic", 1.0)):
                scores = signal * labels + noise + rng.normal(scale=0.3, size=users)
                key = (f"t{t}", "seeds_pu", 10.0, method, r)
                replicates[key] = replicate_aupr(labels, scores, weights)
                points[key] = float(average_precision_score(labels, scores))
    return replicates, points


def test_the_ratio_interval_excludes_one_for_a_clear_win_and_holds_it_for_a_tie():
    replicates, points = _world(gain=1.0)
    (clear,) = ratio_intervals(replicates, points, "seeds_pu", ["meta"], ["classic"])
    assert clear["meta_method"] == "meta" and clear["classic_method"] == "classic"
    assert 1.0 < clear["ratio_low"] < clear["ratio"] < clear["ratio_high"]
    assert (clear["tasks"], clear["repeats"], clear["replicates"]) == (6, 3, 200)
    replicates, points = _world(gain=0.0)
    (tie,) = ratio_intervals(replicates, points, "seeds_pu", ["meta"], ["classic"])
    assert tie["ratio_low"] < 1.0 < tie["ratio_high"]


def test_percentile_interval_ignores_nan():
    assert percentile_interval(np.r_[np.arange(101.0), np.nan]) == pytest.approx((2.5, 97.5))
    assert all(np.isnan(percentile_interval(np.array([np.nan]))))
