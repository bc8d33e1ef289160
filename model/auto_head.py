"""``lookalike.head: auto``: per campaign, the head that ranks its own seeds best.

Three candidates, each judged by its AUPR under the same stratified cross-validation of
the campaign's support (its seeds as 1, its explicit negatives and unlabelled background
users as 0: the ``seeds_pu`` rule):

* ``probe``: the logistic regression on the Meta-Profile embedding beside the aggregates
  (the default head);
* ``aggregates``: the same logistic regression on the aggregates alone, which is what a
  DMP fits from the same seeds. It is kept in the probe's form, with zero weights on the
  embedding, so scoring does not change;
* ``prototype``: the relation module f_θ against the mean embedding of the seeds (and of
  the negatives that ``prototype_negatives`` marks), with no fitting.

The two linear heads report the best fold-mean AUPR over their strength grid
(``LogisticRegressionCV``, :func:`model.baselines.fit_linear_head`). That choice of the
best strength flatters them a little. The prototypes have nothing to tune, so they win
only when they are clearly better. A tie goes to the simpler head, in the order
aggregates, probe, prototype. So a campaign whose seeds the embedding does not help gets
the DMP's own head, and the product is never worse than the DMP on the seeds it was given.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from model.baselines import fit_linear_head

CANDIDATES = ("aggregates", "probe", "prototype")  # also the tie order: simplest first


def choose(cv_aupr: Mapping[str, float | None]) -> tuple[str, str]:
    """The candidate with the highest cross-validated AUPR (the first in :data:`CANDIDATES`
    on a tie), and one line of why. Candidates with no figure take no part."""
    scored = {k: v for k, v in cv_aupr.items() if v is not None and np.isfinite(v)}
    if not scored:
        return "probe", "no candidate could be cross-validated (too few seeds); the probe"
    best = max(scored.values())
    chosen = next(k for k in CANDIDATES if scored.get(k) == best)
    others = ", ".join(f"{k} {v:.3f}" for k, v in sorted(scored.items()) if k != chosen)
    return chosen, f"cross-validated AUPR {best:.3f} against {others or 'no other candidate'}"


def prototype_cv_aupr(relation, embeddings: np.ndarray, labels: np.ndarray,
                      prototype_negatives: np.ndarray, folds: int, seed: int = 0
                      ) -> float | None:
    """Mean AUPR over stratified folds of the relation module's prototype score: each held-out
    fold is scored against the mean embedding of the other folds' positives (and of their
    rows that ``prototype_negatives`` marks, when there are some). ``relation`` is a
    :class:`model.scoring.RelationWeights`. None with fewer than 2 folds."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        return None
    labels = np.asarray(labels).astype(np.int8)
    values = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
            embeddings, labels):
        positive = embeddings[train][labels[train] == 1].mean(axis=0, keepdims=True)
        negatives = embeddings[train][prototype_negatives[train]]
        user = relation.user_part(embeddings[test])  # [n, H]
        negative_part = (relation.support_part(negatives.mean(axis=0, keepdims=True))
                         if len(negatives) else None)
        logits = relation.logits(user, relation.support_part(positive), negative_part)[:, 0]
        values.append(average_precision_score(labels[test], logits))
    return float(np.mean(values))


def fit_auto_head(rows: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                  embedding_dim: int, relation=None,
                  prototype_negatives: np.ndarray | None = None, seed: int = 0) -> dict:
    """The chosen head of one campaign, as ``support.json`` stores a head.

    ``rows`` are ``[n, E + F]`` (embedding, then aggregates), ``labels`` 0/1, ``reference``
    the background rows whose statistics standardise the columns. Without ``relation`` the
    prototypes take no part. The result is a probe head (``kind: probe``, the weights over
    all ``E + F`` columns) or ``{"kind": "prototype"}``. Either way, ``auto`` holds each
    candidate's cross-validated AUPR, the choice and why."""
    labels = np.asarray(labels).astype(np.int8)
    probe = fit_linear_head(rows, labels, reference, seed)
    aggregates = fit_linear_head(rows[:, embedding_dim:], labels, reference[:, embedding_dim:],
                                 seed)
    folds = min(5, int(np.bincount(labels, minlength=2).min()))
    cv = {"probe": probe.cv_aupr, "aggregates": aggregates.cv_aupr, "prototype": None}
    if relation is not None and folds >= 3:
        negatives = (np.zeros(len(labels), bool) if prototype_negatives is None
                     else np.asarray(prototype_negatives, bool))
        cv["prototype"] = prototype_cv_aupr(relation, rows[:, :embedding_dim], labels,
                                            negatives, folds, seed)
    chosen, why = choose(cv)
    auto = {"chosen": chosen, "why": why, "cv_aupr": cv}
    if chosen == "prototype":
        return {"kind": "prototype", "auto": auto}
    head = probe if chosen == "probe" else dataclasses.replace(
        aggregates, weights=np.r_[np.zeros(embedding_dim), aggregates.weights])
    return {"kind": "probe", **head.to_dict(), "auto": auto}
