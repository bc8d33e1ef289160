"""lookalike.head: auto (model/auto_head.py): per campaign, the head whose cross-validated
AUPR on its own seeds is best."""
from __future__ import annotations

import numpy as np

from model.auto_head import (
    centroid_cv_folds,
    centroid_scores,
    choose,
    fit_auto_head,
    prototype_cv_aupr,
)
from model.baselines import centroid_cosine_scores, standardiser
from model.scoring import CampaignHeads, RelationWeights


def _relation(dim: int) -> RelationWeights:
    """f_θ that scores a user by minus the distance of its first embedding value to the
    prototype's: ReLU(q₀ − p₀) and ReLU(p₀ − q₀), both weighted −1."""
    user = np.zeros((dim, 2), np.float32)
    user[0] = [1.0, -1.0]
    return RelationWeights(user_kernel=user, support_kernel=-user,
                           bias=np.zeros(2, np.float32), hidden=(),
                           output=(-np.ones((2, 1), np.float32), np.zeros(1, np.float32)))


def _support(signal_in: str, n: int = 600, dim: int = 4, features: int = 5, seed: int = 0):
    """Rows [embedding (dim), aggregates (features)] where only ``signal_in`` separates the
    labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.2).astype(np.int8)
    embedding = rng.normal(size=(n, dim))
    aggregates = rng.normal(size=(n, features))
    target = embedding if signal_in == "embedding" else aggregates
    target[:, 0] += 2.0 * labels
    return np.hstack([embedding, aggregates]), labels


def test_choose_keeps_the_simplest_head_within_one_standard_error_of_the_best():
    steady = (0.50, 0.50, 0.50, 0.50)
    assert choose({"probe": (0.4,) * 4, "aggregates": steady, "prototype": (0.3,) * 4})[0] \
        == "aggregates"
    assert choose({"probe": steady, "aggregates": steady, "prototype": steady})[0] \
        == "aggregates"
    # the probe's mean is higher, but its folds disagree by more than the gap
    noisy = (0.9, 0.3, 0.8, 0.2)  # mean 0.55, standard error 0.17
    chosen, why = choose({"probe": noisy, "aggregates": steady, "prototype": None})
    assert chosen == "aggregates" and "within one standard error" in why, why
    # a clear win is taken
    chosen, why = choose({"probe": (0.3,) * 4, "aggregates": (0.2,) * 4,
                          "prototype": (0.6, 0.61, 0.59, 0.6)})
    assert chosen == "prototype" and "0.600" in why and "aggregates 0.200" in why, why
    assert choose({"probe": None, "aggregates": (), "prototype": None})[0] == "probe"
    # the seed centroid is the simplest head: it is kept on a tie, and loses a clear gap
    assert choose({"centroid": steady, "aggregates": steady, "probe": noisy})[0] == "centroid"
    assert choose({"centroid": (0.2,) * 4, "aggregates": steady, "probe": None})[0] \
        == "aggregates"
    # the simpler heads compete on their means, however noisy: no head is a default
    assert choose({"centroid": (0.45,) * 4, "aggregates": (0.8, 0.3, 0.7, 0.4),
                   "prototype": (0.5, 0.5, 0.5, 0.51)})[0] == "aggregates"
    # the probe needs a margin of its own standard error over the best of them
    assert choose({"aggregates": steady, "probe": (0.56, 0.54, 0.56, 0.54)})[0] == "probe"


def _directions(n: int = 600, features: int = 5, seed: int = 0):
    """Aggregates whose direction, not size, tells the seeds: every user is a random size
    times a direction, the seeds' near one shared direction, the others' anywhere. A linear
    head ranks a small seed low; the cosine to the seeds' centroid does not."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.2).astype(np.int8)
    size = rng.lognormal(0.0, 1.0, size=(n, 1))
    direction = rng.normal(size=(n, features))
    direction[labels == 1] = 1.0 + 0.3 * direction[labels == 1]
    return size * direction, labels


def test_a_campaign_whose_seeds_the_embedding_does_not_separate_gets_the_aggregates_head():
    rows, labels = _support("aggregates")
    head = fit_auto_head(rows, labels, rows, embedding_dim=4)
    assert head["auto"]["chosen"] == "aggregates", head["auto"]
    assert head["kind"] == "probe" and len(head["weights"]) == 9
    assert head["weights"][:4] == [0.0] * 4 and any(w != 0 for w in head["weights"][4:])
    assert head["auto"]["cv_aupr"]["prototype"] is None  # no relation module given


def test_the_embedding_wins_where_it_carries_the_signal():
    rows, labels = _support("embedding")
    head = fit_auto_head(rows, labels, rows, embedding_dim=4, relation=_relation(4))
    cv = head["auto"]["cv_aupr"]
    assert head["auto"]["chosen"] in ("probe", "prototype"), head["auto"]
    assert cv["aggregates"] < 0.35 < min(cv["probe"], cv["prototype"]), cv


def test_prototype_cv_scores_held_out_folds_against_the_other_folds_prototype():
    rows, labels = _support("embedding")
    embedding = rows[:, :4]
    none = np.zeros(len(labels), bool)
    good = prototype_cv_aupr(_relation(4), embedding, labels, none, folds=5)
    shuffled = np.random.default_rng(1).permutation(labels)
    chance = prototype_cv_aupr(_relation(4), embedding, shuffled, none, folds=5)
    assert good > 0.45 and chance < 0.3, (good, chance)  # base rate 0.2
    # a negative prototype at the positives' place takes their advantage away
    at_positives = labels == 1
    assert prototype_cv_aupr(_relation(4), embedding, labels, at_positives, 5) < good
    assert prototype_cv_aupr(_relation(4), embedding, labels, none, folds=1) is None


def test_a_campaign_told_by_direction_gets_the_centroid_head_and_it_scores_like_cosine():
    aggregates, labels = _directions()
    rows = np.hstack([np.random.default_rng(2).normal(size=(len(labels), 4)), aggregates])
    head = fit_auto_head(rows, labels, rows, embedding_dim=4)
    cv = head["auto"]["cv_aupr"]
    assert head["auto"]["chosen"] == "centroid" and head["kind"] == "centroid", head["auto"]
    assert cv["centroid"] > cv["aggregates"] + 0.05, cv
    assert len(head["centroid"]) == len(head["mean"]) == len(head["std"]) == 5
    # the evaluation's `cosine` baseline ranks exactly as the head scores, on [0, 1]
    mean, std = standardiser(aggregates)
    z = (aggregates - mean) / std
    scores = centroid_scores(head, aggregates[:50])
    np.testing.assert_allclose(scores, 0.5 * (1 + centroid_cosine_scores(z, labels, z[:50])))
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    # the nightly scorer's block gives the same column, beside a probe column
    heads = CampaignHeads(columns=2, probe_columns=np.array([0]),
                          probe_weights=np.zeros((9, 1)), probe_bias=np.zeros(1),
                          centroid_columns=np.array([1]), centroid_heads=(head,))
    assert heads.needs_features
    block = heads.scores(rows[:50, :4], aggregates[:50])
    np.testing.assert_allclose(block[:, 1], scores)
    np.testing.assert_allclose(block[:, 0], 0.5)


def test_centroid_cv_scores_each_fold_against_the_other_folds_centroid():
    aggregates, labels = _directions()
    good = centroid_cv_folds(aggregates, labels, aggregates, folds=5)
    shuffled = np.random.default_rng(1).permutation(labels)
    chance = centroid_cv_folds(aggregates, shuffled, aggregates, folds=5)
    assert len(good) == 5 and min(good) > 0.6 and np.mean(chance) < 0.35, (good, chance)


def test_the_score_job_builds_centroid_columns_and_refuses_a_centroid_of_another_width():
    from types import SimpleNamespace

    import pytest

    from jobs.score import ScoreError, campaign_heads
    aggregates, labels = _directions()
    rows = np.hstack([np.zeros((len(labels), 4)), aggregates])
    centroid = fit_auto_head(rows, labels, rows, embedding_dim=4)
    probe = {"kind": "probe", "weights": [0.0] * 9, "bias": 0.0}
    ready = {"a": SimpleNamespace(head=probe), "b": SimpleNamespace(head=centroid)}
    heads = campaign_heads(ready, {"a": 0, "b": 1}, "unused", None, 4, 5)
    assert list(heads.centroid_columns) == [1] and list(heads.probe_columns) == [0]
    np.testing.assert_allclose(heads.scores(rows[:9, :4], aggregates[:9])[:, 1],
                               centroid_scores(centroid, aggregates[:9]))
    with pytest.raises(ScoreError, match="its centroid has 5 values but the embedding table "
                                         "has 6 features"):
        campaign_heads({"b": ready["b"]}, {"b": 0}, "unused", None, 3, 6)
