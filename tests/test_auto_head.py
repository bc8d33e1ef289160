"""lookalike.head: auto (model/auto_head.py): per campaign, the head whose cross-validated
AUPR on its own seeds is best."""
from __future__ import annotations

import numpy as np

from model.auto_head import choose, fit_auto_head, prototype_cv_aupr
from model.scoring import RelationWeights


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
