"""``lookalike.head: auto``: per campaign, the head that ranks its own seeds best.

Four candidates, each judged by its AUPR under the same stratified cross-validation of
the campaign's support (its seeds as 1, its explicit negatives and unlabelled background
users as 0: the ``seeds_pu`` rule):

* ``centroid``: the cosine similarity of a user's standardised aggregates to the seeds'
  centroid, the DMP's other head (the evaluation's ``cosine``), with nothing to fit. With a
  few dozen seeds it is often the best classic head (docs/evaluation.md), and a linear head
  fitted on them does not reach it;
* ``probe``: the logistic regression on the Meta-Profile embedding beside the aggregates
  (the default head);
* ``aggregates``: the same logistic regression on the aggregates alone, which is what a
  DMP fits from the same seeds. It is kept in the probe's form, with zero weights on the
  embedding, so scoring does not change;
* ``prototype``: the relation module f_θ against the mean embedding of the seeds (and of
  the negatives that ``prototype_negatives`` marks), with no fitting.

The heads with few or no fitted weights (centroid, aggregates, prototypes) compete on
their mean fold AUPR; the best of them is chosen (exact ties in that order). The probe,
which fits a weight for each of the embedding's columns, replaces it only when its mean is
higher by more than the standard error of its own folds: a one-standard-error rule for
the one head that can win the folds on noise. A plain "highest mean" rule over all heads
picked the probe on noise and lost to the logistic regression alone at 10–50 seeds; a
one-standard-error rule over all of them, in the order of their simplicity, kept the
centroid at 300 seeds where the logistic regression is 10 % better (docs/evaluation.md,
hypotheses 13 and 17). The two linear heads' figures are those of the best strength of
their grid, which flatters them a little; the centroid and the prototypes have nothing to
tune.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from model.baselines import centroid_cosine_scores, cosine_to, fit_linear_head, standardiser

CANDIDATES = ("centroid", "aggregates", "prototype", "probe")
SIMPLE = CANDIDATES[:3]  # few or no fitted weights; also the order of exact ties


def choose(cv_folds: Mapping[str, Sequence[float] | None]) -> tuple[str, str]:
    """The candidate the rule picks from each candidate's fold AUPRs (see the module
    docstring), and one line of why. Candidates without fold scores take no part.

    The heads with few or no fitted weights (``SIMPLE``: the centroid, the aggregates' logistic
    regression, the prototypes) compete on their mean fold AUPR alone. The probe, which
    fits a weight per embedding column, replaces the best of them only when its mean is
    higher by more than the standard error of its own folds."""
    folds = {k: np.asarray(v, np.float64) for k, v in cv_folds.items()
             if v is not None and len(v) and np.isfinite(v).all()}
    if not folds:
        return "probe", "no candidate could be cross-validated (too few seeds); the probe"
    means = {k: float(v.mean()) for k, v in folds.items()}
    simple = [k for k in SIMPLE if k in means]
    if not simple:
        return "probe", f"cross-validated AUPR {means['probe']:.3f}, the only candidate"
    chosen = max(simple, key=lambda k: (means[k], -SIMPLE.index(k)))
    spread = folds.get("probe", np.zeros(0))
    error = float(spread.std(ddof=1) / np.sqrt(len(spread))) if len(spread) > 1 else 0.0
    if "probe" in means and means["probe"] > means[chosen] + error:
        why = (f"cross-validated AUPR {means['probe']:.3f}, above the best simpler head, "
               f"{chosen} {means[chosen]:.3f}, by more than its standard error {error:.3f}")
        chosen = "probe"
    else:
        why = (f"cross-validated AUPR {means[chosen]:.3f}, the best of the simpler heads"
               + (f"; the probe's {means['probe']:.3f} is within one standard error "
                  f"({error:.3f}) of it" if "probe" in means else ""))
    others = ", ".join(f"{k} {v:.3f}" for k, v in sorted(means.items())
                       if k not in (chosen, "probe"))
    return chosen, why + (f"; others: {others}" if others else "")


def prototype_cv_aupr(relation, embeddings: np.ndarray, labels: np.ndarray,
                      prototype_negatives: np.ndarray, folds: int, seed: int = 0
                      ) -> float | None:
    """Mean AUPR over stratified folds of the relation module's prototype score: each held-out
    fold is scored against the mean embedding of the other folds' positives (and of their
    rows that ``prototype_negatives`` marks, when there are some). ``relation`` is a
    :class:`model.scoring.RelationWeights`. None with fewer than 2 folds."""

    if folds < 2:
        return None
    return float(np.mean(prototype_cv_folds(relation, embeddings, labels, prototype_negatives,
                                            folds, seed)))


def prototype_cv_folds(relation, embeddings: np.ndarray, labels: np.ndarray,
                       prototype_negatives: np.ndarray, folds: int, seed: int = 0
                       ) -> list[float]:
    """The prototype score's AUPR on each of ``folds`` stratified folds (see
    :func:`prototype_cv_aupr`)."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

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
        values.append(float(average_precision_score(labels[test], logits)))
    return values


def centroid_cv_folds(features: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                      folds: int, seed: int = 0) -> list[float]:
    """The centroid head's AUPR on each of ``folds`` stratified folds: each held-out fold is
    scored by its cosine to the other folds' positives' centroid, the aggregates
    standardised with ``reference``'s statistics."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels).astype(np.int8)
    mean, std = standardiser(reference)
    rows = (np.asarray(features, np.float64) - mean) / std
    return [float(average_precision_score(
                labels[test], centroid_cosine_scores(rows[train], labels[train], rows[test])))
            for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
                rows, labels)]


def centroid_head(features: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> dict:
    """The centroid head as ``support.json`` stores it: the standardisation (``mean``,
    ``std``, the background's) and the seeds' centroid in standardised units. It scores
    ``(1 + cosine) / 2``, in [0, 1] like the other heads (:class:`model.scoring.CampaignHeads`)."""
    mean, std = standardiser(reference)
    rows = (np.asarray(features, np.float64) - mean) / std
    centroid = rows[np.asarray(labels) == 1].mean(axis=0)
    return {"kind": "centroid", "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "centroid": [float(v) for v in centroid]}


def centroid_scores(head: dict, features: np.ndarray) -> np.ndarray:
    """``[B]`` scores in [0, 1] of the users' aggregates ``features`` ``[B, F]`` under a
    centroid head."""
    rows = ((np.asarray(features, np.float64) - np.asarray(head["mean"]))
            / np.asarray(head["std"]))
    return 0.5 * (1.0 + cosine_to(rows, head["centroid"]))


def fit_auto_head(rows: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                  embedding_dim: int, relation=None,
                  prototype_negatives: np.ndarray | None = None, seed: int = 0) -> dict:
    """The chosen head of one campaign, as ``support.json`` stores a head.

    ``rows`` are ``[n, E + F]`` (embedding, then aggregates), ``labels`` 0/1, ``reference``
    the background rows whose statistics standardise the columns. Without ``relation`` the
    prototypes take no part. The result is a probe head (``kind: probe``, the weights over
    all ``E + F`` columns), a centroid head (:func:`centroid_head`, on the ``F`` aggregates)
    or ``{"kind": "prototype"}``. Either way, ``auto`` holds each candidate's
    cross-validated AUPR, the choice and why."""
    labels = np.asarray(labels).astype(np.int8)
    probe = fit_linear_head(rows, labels, reference, seed)
    aggregates = fit_linear_head(rows[:, embedding_dim:], labels, reference[:, embedding_dim:],
                                 seed)
    folds = min(5, int(np.bincount(labels, minlength=2).min()))
    cv_folds = {"probe": probe.cv_folds, "aggregates": aggregates.cv_folds, "prototype": None,
                "centroid": None}
    if folds >= 3:
        cv_folds["centroid"] = tuple(centroid_cv_folds(
            rows[:, embedding_dim:], labels, reference[:, embedding_dim:], folds, seed))
    if relation is not None and folds >= 3:
        negatives = (np.zeros(len(labels), bool) if prototype_negatives is None
                     else np.asarray(prototype_negatives, bool))
        cv_folds["prototype"] = tuple(prototype_cv_folds(
            relation, rows[:, :embedding_dim], labels, negatives, folds, seed))
    chosen, why = choose(cv_folds)
    cv = {k: None if not v else float(np.mean(v)) for k, v in cv_folds.items()}
    auto = {"chosen": chosen, "why": why, "cv_aupr": cv}
    if chosen == "prototype":
        return {"kind": "prototype", "auto": auto}
    if chosen == "centroid":
        return {**centroid_head(rows[:, embedding_dim:], labels, reference[:, embedding_dim:]),
                "auto": auto}
    head = probe if chosen == "probe" else dataclasses.replace(
        aggregates, weights=np.r_[np.zeros(embedding_dim), aggregates.weights])
    return {"kind": "probe", **head.to_dict(), "auto": auto}
