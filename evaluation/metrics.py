"""AUROC, AUPR and the curves of one scored test set (scikit-learn)."""
from __future__ import annotations

import logging

import numpy as np

from model.metrics import as_arrays

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- metrics


def average_precision(labels, scores) -> float:
    """AUPR as scikit-learn's average precision (tied scores form one threshold); NaN when
    there is no positive."""
    from sklearn.metrics import average_precision_score
    labels, scores = as_arrays(labels, scores)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve as sk_roc_curve
    labels, scores = as_arrays(labels, scores)
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct score, highest score first."""
    from sklearn.metrics import precision_recall_curve as sk_pr_curve
    labels, scores = as_arrays(labels, scores)
    precision, recall, _ = sk_pr_curve(labels, scores, drop_intermediate=False)
    return recall[:-1][::-1], precision[:-1][::-1]
