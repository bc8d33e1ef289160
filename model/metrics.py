"""Ranking metrics on numpy arrays: scikit-learn's, with NaN where a class is absent (a
validation batch or a small task can lack one), for training validation and evaluation."""
from __future__ import annotations

import numpy as np


def as_arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as a bool vector and ``scores`` as a float64 vector of the same length."""
    labels = np.asarray(labels).astype(bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    return labels, scores


def auroc(labels, scores) -> float:
    """scikit-learn's ROC AUC (ties count half); NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score
    labels, scores = as_arrays(labels, scores)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def per_task_auroc(labels: np.ndarray, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """AUROC per task ``[T]`` over the users labelled for it (``[U, T]`` inputs)."""
    return np.array([auroc(labels[mask[:, t] > 0, t], scores[mask[:, t] > 0, t])
                     for t in range(labels.shape[1])])
