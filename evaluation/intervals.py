"""95 % intervals for AUPR and for the ratio of the best Meta-Profile method to the best
classic baseline: a paired bootstrap over the test users of each task, then over tasks.

**Within a task** (:func:`bootstrap_weights`): for each repeat and task, ``B`` bootstrap copies
of the test set are drawn once, as per-user multiplicities (positives and negatives
resampled apart, so every copy keeps the task's prevalence). Every method and every level is
scored on the *same* copies (:func:`replicate_aupr`), so the methods' replicates are paired,
and a ratio's interval does not count the test set's luck twice.

**Over tasks** (:func:`ratio_intervals`): replicate ``b`` also draws the target tasks with
replacement. A method's value in replicate ``b`` is its mean over the drawn tasks within each
repeat, then the mean over repeats, as the point estimate is. The interval is the 2.5th and
97.5th percentile of ``best Meta-Profile / best classic`` over the replicates, with the two
methods chosen once, on the point estimates.

Pure numpy; :func:`weighted_average_precision` equals scikit-learn's
``average_precision_score`` with ``sample_weight`` (tested), row by row.
"""
from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np

REPLICATES = 200  # bootstrap copies per (repeat, task); the percentiles move < 0.01 beyond
LEVEL = 0.95


def bootstrap_weights(labels: np.ndarray, replicates: int, seed: int, task: str) -> np.ndarray:
    """``[replicates, n]`` float32 multiplicities of the ``n`` test users: a stratified
    bootstrap (positives and negatives each resampled to their own count), drawn from a
    generator seeded by the repeat's seed and the task, so reruns give the same copies."""
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    weights = np.zeros((replicates, labels.size), np.float32)
    for members in (np.flatnonzero(labels), np.flatnonzero(~labels)):
        if members.size:
            weights[:, members] = rng.multinomial(
                members.size, np.full(members.size, 1.0 / members.size), size=replicates)
    return weights


def weighted_average_precision(labels: np.ndarray, scores: np.ndarray,
                               weights: np.ndarray, chunk: int = 50) -> np.ndarray:
    """Average precision of ``scores`` under each row of ``weights`` (``[B, n]``): ``[B]``.

    Tied scores form one threshold, as in scikit-learn. A row without a weighted positive
    gives NaN."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(-scores, kind="mergesort")
    ends = np.r_[np.flatnonzero(np.diff(scores[order]) != 0), scores.size - 1]  # [G]
    positive = labels[order]
    out = np.empty(weights.shape[0])
    for start in range(0, weights.shape[0], chunk):
        w = weights[start:start + chunk, order]  # [b, n]
        tp = np.cumsum(w * positive, axis=1)[:, ends]  # [b, G]
        fp = np.cumsum(w * ~positive, axis=1)[:, ends]  # [b, G]
        total = tp[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            recall_step = np.diff(np.c_[np.zeros(len(w)), tp], axis=1) / total
            out[start:start + chunk] = np.where(total[:, 0] > 0,
                                                (recall_step * precision).sum(axis=1), np.nan)
    return out


def replicate_aupr(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` float32 AUPRs of one method's test scores on the shared bootstrap copies."""
    return weighted_average_precision(labels, scores, weights).astype(np.float32)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` (NaN, NaN if none)."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def ratio_intervals(replicates: Mapping[tuple, np.ndarray], points: Mapping[tuple, float],
                    experiment: str, meta_methods: Sequence[str],
                    classic_methods: Sequence[str], seed: int = 0) -> list[dict]:
    """Per level of ``experiment``: the best Meta-Profile and the best classic method (on the
    point estimates), their mean AUPRs, the ratio and its 95 % interval.

    ``replicates`` maps ``(task, experiment, level, method, repeat)`` to ``[B]`` replicate
    AUPRs, ``points`` the same keys to the AUPR on the test set itself. A level uses the tasks where every method of the level has replicates in every
    repeat, as :func:`evaluation.summary.over_tasks` averages methods over the same tasks."""
    out = []
    keys = [k for k in replicates if k[1] == experiment]
    for level in sorted({k[2] for k in keys}):
        at = {(k[0], k[3], k[4]): replicates[k] for k in keys if k[2] == level}
        methods = sorted({m for _, m, _ in at})
        repeats = sorted({r for _, _, r in at})
        tasks = sorted(t for t in {t for t, _, _ in at}
                       if all((t, m, r) in at and np.isfinite(at[(t, m, r)]).all()
                              for m in methods for r in repeats))
        meta = [m for m in methods if m in meta_methods]
        classic = [m for m in methods if m in classic_methods]
        if not tasks or not meta or not classic:
            continue
        size = min(len(at[(tasks[0], methods[0], repeats[0])]), *(
            len(at[(t, m, r)]) for t in tasks for m in methods for r in repeats))
        cube = {m: np.stack([np.stack([at[(t, m, r)][:size] for t in tasks])  # [R, T, B]
                             for r in repeats]).astype(np.float64) for m in meta + classic}
        point = {m: _point(points, experiment, level, m, tasks, repeats) for m in cube}
        best_meta = max(meta, key=lambda m: point[m])
        best_classic = max(classic, key=lambda m: point[m])
        rng = np.random.default_rng([seed, zlib.crc32(f"{experiment}:{level}".encode())])
        drawn = rng.integers(0, len(tasks), size=(size, len(tasks)))  # [B, T']
        values = {m: _replicate_means(cube[m], drawn) for m in (best_meta, best_classic)}
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = values[best_meta] / values[best_classic]
        low, high = percentile_interval(ratios)
        out.append({"experiment": experiment, "level": float(level),
                    "meta_method": best_meta, "meta_aupr": point[best_meta],
                    "classic_method": best_classic, "classic_aupr": point[best_classic],
                    "ratio": point[best_meta] / point[best_classic]
                    if point[best_classic] else float("nan"),
                    "ratio_low": low, "ratio_high": high, "tasks": len(tasks),
                    "repeats": len(repeats), "replicates": int(size)})
    return out


def _replicate_means(cube: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """``[B]``: per replicate b, the mean over repeats of the mean over the tasks drawn for b
    (``cube`` is ``[R, T, B]``, ``drawn`` ``[B, T']`` task indices)."""
    b = np.arange(drawn.shape[0])
    picked = cube[:, drawn, b[:, None]]  # [R, B, T']
    return picked.mean(axis=2).mean(axis=0)


def _point(points: Mapping, experiment: str, level: float, method: str,
           tasks: Sequence[str], repeats: Sequence[int]) -> float:
    """The AUPR on the test sets themselves, averaged like the summary: over tasks within a
    repeat, then over repeats."""
    per_repeat = [np.mean([points[(t, experiment, level, method, r)] for t in tasks])
                  for r in repeats]
    return float(np.mean(per_repeat))
