"""Lookalike scorers that need no gradient step: the classic DMP baselines on per-user
aggregates, and the linear probe head on Meta-Profile embeddings. All scikit-learn.

A DMP builds a lookalike from a few dozen aggregates per user. :func:`aggregate_features`
makes those from a batch of heatmaps: per modality the year's channel totals and hour-of-day
totals (sign-preserving log1p of the summed cell values), the numeric demographics with
their missing flags, and the categorical demographics one-hot (a column for "missing").

Scorers (higher = more likely positive) take the support users' feature rows, their 0/1
labels and the query rows. Features are standardised with a *reference* set's statistics,
feature values only (the evaluation passes every adaptation-side user, labelled or not):

* :func:`fit_linear_head` — ``LogisticRegressionCV``: the L2 strength is chosen by
  stratified cross-validation on the support set (AUPR), with as many folds as the rarer
  class allows (at most 5). With fewer than 3 users of a class there is nothing to
  cross-validate, and ``C = 1`` is used. The fit is folded onto the raw columns
  (:class:`LinearHead`), which the nightly probe heads store.
* :func:`boosting_scores` — ``HistGradientBoostingClassifier`` with a leaf size that
  shrinks with the support set, so 10 seeds still get splits.
* :func:`centroid_cosine_scores` — the cosine similarity to the positive seeds' centroid.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from common.features import signed_log1p
from schemas.input_spec import InputSpec

LOGREG = "logreg"
HGB = "hgb"
COSINE = "cosine"
CLASSIC_METHODS = (LOGREG, HGB, COSINE)
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 8))  # inverse L2 strengths tried by CV
SMALL_FIT_ROWS = 20_000  # below this many support users a fit runs on one thread


def aggregate_feature_names(spec: InputSpec) -> list[str]:
    names = []
    for name, channels in spec.modalities:
        names += [f"{name}/channel_{c}" for c in range(channels)]
        names += [f"{name}/hour_{h:02d}" for h in range(spec.hours)]
    if spec.numeric:
        names += [f"demo/{n}" for n in spec.numeric] + [f"demo/{n}_missing" for n in spec.numeric]
    for name, vocabulary in spec.categorical:
        names += [f"demo/{name}=missing"] + [f"demo/{name}={v}" for v in range(1, vocabulary + 1)]
    return names


def heatmap_totals(heatmap) -> tuple[np.ndarray, np.ndarray]:
    """A dense heatmap batch ``[B, D, 24, C]`` → its channel totals ``[B, C]`` and its
    hour-of-day totals ``[B, 24]``, float64."""
    # One pass over the dense heatmap, summed in float64 without a float64 copy of it (the
    # copy and two passes cost as much as the profile network at the demo width).
    by_hour = np.asarray(heatmap).sum(axis=1, dtype=np.float64)  # [B, 24, C]
    return by_hour.sum(axis=1), by_hour.sum(axis=2)


def sparse_heatmap_totals(owners: np.ndarray, cells: np.ndarray, values: np.ndarray,
                          rows: int, shape: tuple[int, int, int]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`heatmap_totals` from a batch's sparse cells, without the dense heatmap:
    ``owners[i]`` is the row of cell ``i``, ``cells[i]`` its flat index
    ``(day·24 + hour)·C + channel``, ``values[i]`` its transformed value."""
    _, hours, channels = shape
    owners = np.asarray(owners, np.int64)
    cells = np.asarray(cells, np.int64)
    weights = np.asarray(values, np.float64)
    by_channel = np.bincount(owners * channels + cells % channels, weights,
                             minlength=rows * channels)  # [B * C]
    by_hour = np.bincount(owners * hours + (cells // channels) % hours, weights,
                          minlength=rows * hours)  # [B * 24]
    return by_channel.reshape(rows, channels), by_hour.reshape(rows, hours)


def aggregate_features(batch: dict, spec: InputSpec,
                       totals: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                       ) -> np.ndarray:
    """Classic DMP features ``[B, F]`` in :func:`aggregate_feature_names` order.

    ``totals`` gives, per heatmap key, its (channel, hour-of-day) totals where the caller
    has them from the sparse cells (:func:`sparse_heatmap_totals`: the nightly embedding);
    otherwise they are summed from the batch's dense heatmaps.
    """
    parts = []
    for key in spec.heatmap_keys:
        by_channel, by_hour = (totals or {}).get(key) or heatmap_totals(batch[key])
        parts.append(signed_log1p(by_channel))  # [B, C]
        parts.append(signed_log1p(by_hour))  # [B, 24]
    if spec.numeric:
        parts.append(np.asarray(batch["demo/numeric"], dtype=np.float64))  # [B, F]
        parts.append(np.asarray(batch["demo/numeric_missing"], dtype=np.float64))  # [B, F]
    for name, vocabulary in spec.categorical:
        ids = np.asarray(batch[f"demo/{name}"], dtype=np.int64).reshape(-1)  # [B], 0 = missing
        parts.append(np.eye(vocabulary + 1)[np.clip(ids, 0, vocabulary)])  # [B, V + 1]
    return np.concatenate(parts, axis=1)


def standardiser(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (1 where a column is constant)."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def _labels(labels) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1).astype(np.int8)
    if not (labels == 1).any():
        raise ValueError("no positive seed")
    return labels


def centroid_cosine_scores(support: np.ndarray, labels, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each query to the mean of the positive supports."""
    labels = _labels(labels)
    centroid = np.asarray(support, dtype=np.float64)[labels == 1].mean(axis=0)
    return cosine_to(query, centroid)


def cosine_to(rows: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """``[n]`` cosine similarity of each row to one vector (0 for a zero row)."""
    rows = np.asarray(rows, dtype=np.float64)
    centroid = np.asarray(centroid, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(centroid)
    return (rows @ centroid) / np.maximum(norms, 1e-12)


def _need_negatives(labels: np.ndarray, method: str) -> None:
    if not (labels == 0).any():
        raise ValueError(f"{method} needs at least one negative user")


@dataclass(frozen=True)
class LinearHead:
    """A fitted logistic regression folded back onto the raw feature columns:
    ``decision(x) = x · weights + bias`` on unstandardised rows, so a scorer needs one
    matrix product and no scikit-learn (the nightly ``score`` job runs it in numpy)."""

    weights: np.ndarray  # [D]
    bias: float
    strength: float  # the inverse L2 strength C that cross-validation chose
    cv_aupr: float | None  # its mean cross-validated AUPR (None: too few to cross-validate)
    cv_folds: tuple[float, ...] = ()  # that strength's AUPR on each fold

    def decision(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, np.float64) @ self.weights + self.bias  # [B]

    def to_dict(self) -> dict:
        return {"weights": [float(w) for w in self.weights], "bias": float(self.bias),
                "strength": self.strength, "cv_aupr": self.cv_aupr}

    @classmethod
    def from_dict(cls, doc: dict) -> "LinearHead":
        return cls(np.asarray(doc["weights"], np.float64), float(doc["bias"]),
                   float(doc["strength"]), doc.get("cv_aupr"))


def fit_linear_head(support: np.ndarray, labels, reference: np.ndarray | None = None,
                    seed: int = 0) -> LinearHead:
    """An L2 logistic regression on ``support`` standardised with ``reference``'s column
    statistics (``None``: rows used as they are), its strength chosen by stratified
    cross-validation on AUPR (as many folds as the rarer class allows, at most 5; ``C = 1``
    below 3 users of a class)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    labels = _labels(labels)
    _need_negatives(labels, LOGREG)
    support = np.asarray(support, np.float64)
    mean, std = (standardiser(reference) if reference is not None
                 else (np.zeros(support.shape[1]), np.ones(support.shape[1])))
    support = (support - mean) / std
    folds = min(5, int(np.bincount(labels, minlength=2).min()))
    with warnings.catch_warnings():
        # A separable support set makes lbfgs warn at the weakest penalties of the grid;
        # cross-validation then picks a stronger one, so the warning says nothing here.
        warnings.simplefilter("ignore", category=UserWarning)
        if folds >= 3:
            model = LogisticRegressionCV(
                Cs=list(C_GRID), cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                scoring="average_precision", max_iter=2000, l1_ratios=(0.0,),
                use_legacy_attributes=False)
        else:
            model = LogisticRegression(C=1.0, max_iter=2000)
        with small_fit_threads(len(labels)):
            model.fit(support, labels)
    coef = np.asarray(model.coef_, np.float64).reshape(-1)  # on standardised columns
    cv_folds: tuple[float, ...] = ()
    if folds >= 3:
        strength = float(np.ravel(model.C_)[0])
        fold_scores = np.asarray(model.scores_[1] if isinstance(model.scores_, dict)
                                 else model.scores_, np.float64).reshape(folds, -1)
        best = int(fold_scores.mean(axis=0).argmax())
        cv_aupr = float(fold_scores[:, best].mean())
        cv_folds = tuple(float(v) for v in fold_scores[:, best])
    else:
        strength, cv_aupr = 1.0, None
    weights = coef / std
    bias = float(np.ravel(model.intercept_)[0] - (coef * mean / std).sum())
    return LinearHead(weights, bias, strength, cv_aupr, cv_folds)


def small_fit_threads(rows: int):
    """A context that runs a fit on ``rows`` users with one OpenMP/BLAS thread when the set
    is small. A support set of a few hundred users is too small to split across threads:
    gradient-boosted trees fitted 20 to 200 users 8 to 20 times faster on one thread than on
    two here (same scores: their sums do not depend on the thread count)."""
    import contextlib

    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1) if rows < SMALL_FIT_ROWS else contextlib.nullcontext()


def boosting_scores(support: np.ndarray, labels, query: np.ndarray, seed: int = 0
                    ) -> np.ndarray:
    """Positive-class probabilities of gradient-boosted trees."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    labels = _labels(labels)
    _need_negatives(labels, HGB)
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
        min_samples_leaf=int(np.clip(len(labels) // 20, 2, 20)), l2_regularization=1.0,
        early_stopping=len(labels) >= 1000, random_state=seed)
    with small_fit_threads(len(labels)):
        model.fit(np.asarray(support, np.float64), labels)
        return model.predict_proba(np.asarray(query, np.float64))[:, 1]


def classic_scores(method: str, support: np.ndarray, labels, query: np.ndarray,
                   reference: np.ndarray, seed: int = 0) -> np.ndarray:
    """``method``'s scores of the queries, features standardised with ``reference``'s
    column statistics (feature values only, no labels)."""
    if method == LOGREG:
        return fit_linear_head(support, labels, reference, seed).decision(query)
    mean, std = standardiser(reference)
    support = (np.asarray(support, np.float64) - mean) / std
    query = (np.asarray(query, np.float64) - mean) / std
    if method == HGB:
        return boosting_scores(support, labels, query, seed)
    if method == COSINE:
        return centroid_cosine_scores(support, labels, query)
    raise ValueError(f"{method!r} is not a classic baseline ({', '.join(CLASSIC_METHODS)})")


def probe_scores(support_embedding: np.ndarray, support_features: np.ndarray, labels,
                 query_embedding: np.ndarray, query_features: np.ndarray,
                 reference_embedding: np.ndarray, reference_features: np.ndarray,
                 seed: int = 0) -> np.ndarray:
    """The linear-probe head: a cross-validated logistic regression on the frozen
    Meta-Profile embedding beside the aggregates, both standardised with the reference."""
    support = np.hstack([support_embedding, support_features])
    query = np.hstack([query_embedding, query_features])
    reference = np.hstack([reference_embedding, reference_features])
    return classic_scores(LOGREG, support, labels, query, reference, seed)
