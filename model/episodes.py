"""N-way K-shot episodes over the source tasks (paper section 3.2), as small pure functions.

An episode is a data point ``d = <S, B>``: a support set S of K labelled users per task and
class, and a query mini-batch B from the training stream. The network embeds both, averages
the supports into prototypes (``model/relation.py``) and scores every query against every
task, ``[B, N]``; Eq. 1 then uses the queries' own labels. The paper's setting is N = 9
source tasks, K = 1, B = 32 (the :data:`DEFAULT_*` values).

Supports come from a *support pool*: labelled users kept aside from the first batches of the
training stream (:func:`build_support_pool`), held in memory as numpy arrays. Sampling is
by index into the pool, with an injected ``numpy.random.Generator`` so an episode is a pure
function of the generator's state (which training checkpoints, so a resumed run draws the
same episodes).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from schemas.input_spec import InputSpec

log = logging.getLogger(__name__)

DEFAULT_SHOTS = 1  # K
DEFAULT_QUERY_BATCH = 32  # B


@dataclass(frozen=True)
class SupportPool:
    """Labelled users to draw supports from: every batch key as a ``[P, ...]`` array.

    Memory: a full-size user is 365·24·(12 + 4) float32 heatmap cells ≈ 560 KB dense, so a
    pool is ≈ 0.55 MB per user — at most ``2·T·pool_per_class`` users (9 tasks, 16 per class:
    ≤ 288 users ≈ 160 MB; usually far fewer, as one user is labelled in several tasks).
    """

    features: dict[str, np.ndarray]  # batch key -> [P, ...], 'user_id' included
    labels: np.ndarray  # [P, T]
    mask: np.ndarray  # [P, T]
    tasks: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.features.values()))

    def class_counts(self) -> dict[str, tuple[int, int]]:
        """``{task: (labelled positives, labelled negatives)}``."""
        return {task: (len(class_members(self.labels, self.mask, t, True)),
                       len(class_members(self.labels, self.mask, t, False)))
                for t, task in enumerate(self.tasks)}

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The pool rows at ``indices`` (any shape, flattened in C order), every key."""
        flat = np.asarray(indices).reshape(-1)
        return {key: np.take(values, flat, axis=0) for key, values in self.features.items()}


def class_members(labels: np.ndarray, mask: np.ndarray, task: int, positive: bool) -> np.ndarray:
    """Pool indices of users labelled for ``task`` with the given class, ascending."""
    wanted = 1.0 if positive else 0.0
    return np.flatnonzero((mask[:, task] > 0) & (labels[:, task] == wanted))


def sample_support(labels: np.ndarray, mask: np.ndarray, k: int, rng: np.random.Generator,
                   tasks: Sequence[str] | None = None, negatives: bool = True,
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """K distinct labelled users per task and class: indices ``[T, K]`` positive and
    ``[T, K]`` negative (``None`` when ``negatives`` is false).

    Raises ``ValueError`` naming the task and its counts when a task has fewer than K
    labelled users of a needed class: silently skipping a task would change N between
    episodes, and with it what the loss means.
    """
    labels = np.asarray(labels)
    mask = np.asarray(mask)
    if labels.shape != mask.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and mask {mask.shape} must both be [P, T]")
    if k < 1:
        raise ValueError(f"k={k}: need at least one shot")
    names = list(tasks) if tasks is not None else [f"task {t}" for t in range(labels.shape[1])]
    if len(names) != labels.shape[1]:
        raise ValueError(f"{len(names)} task names for {labels.shape[1]} label columns")
    _check_enough(labels, mask, k, names, negatives)
    pos = np.stack([rng.choice(class_members(labels, mask, t, True), size=k, replace=False)
                    for t in range(labels.shape[1])])  # [T, K]
    if not negatives:
        return pos, None
    neg = np.stack([rng.choice(class_members(labels, mask, t, False), size=k, replace=False)
                    for t in range(labels.shape[1])])  # [T, K]
    return pos, neg


def _check_enough(labels: np.ndarray, mask: np.ndarray, k: int, names: Sequence[str],
                  negatives: bool) -> None:
    short = []
    for t, name in enumerate(names):
        n_pos = len(class_members(labels, mask, t, True))
        n_neg = len(class_members(labels, mask, t, False))
        if n_pos < k or (negatives and n_neg < k):
            short.append(f"{name!r} has {n_pos} labelled positives and {n_neg} negatives")
    if short:
        raise ValueError(f"cannot sample {k}-shot supports: {'; '.join(short)} (need {k} of "
                         "each); use a larger support pool (pool_per_class, pool_batches) or "
                         "a smaller k")


def support_order(pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
    """Pool indices in the order the network embeds them: positives task-major, then
    negatives task-major — ``[T·K]`` or ``[2·T·K]``."""
    return pos.reshape(-1) if neg is None else np.concatenate([pos.reshape(-1),
                                                               neg.reshape(-1)])


# --------------------------------------------------------------------------- the pool


def build_support_pool(batches: Iterable[dict], spec: InputSpec, pool_per_class: int,
                       ) -> SupportPool:
    """Keep labelled users from ``batches`` (numpy batch dicts, e.g.
    ``dataset.take(n).as_numpy_iterator()``) until every task has ``pool_per_class``
    positives and negatives, or the batches run out.

    A user is kept when they fill a class that is still short; they then count for every
    class they are labelled in. Rows are copied out of the batch, so the batches themselves
    are not held. Check the result with :meth:`SupportPool.class_counts` (sampling raises
    for a class with fewer than K users).
    """
    if pool_per_class < 1:
        raise ValueError(f"pool_per_class={pool_per_class} must be at least 1")
    tasks = len(spec.tasks)
    counts = np.zeros((tasks, 2), dtype=np.int64)  # [T, (negatives, positives)]
    kept: list[dict[str, np.ndarray]] = []
    seen = 0
    for batch in batches:
        rows = _rows_to_keep(batch["labels"], batch["mask"], counts, pool_per_class)
        seen += len(batch["labels"])
        if rows.size:
            kept.append({key: np.take(values, rows, axis=0) for key, values in batch.items()})
        if counts.min() >= pool_per_class:
            break
    if not kept:
        raise ValueError(f"no labelled users in the {seen} users scanned for the support pool")
    features = {key: np.concatenate([part[key] for part in kept]) for key in kept[0]}
    pool = SupportPool(features=features, labels=features["labels"].astype(np.float32),
                       mask=features["mask"].astype(np.float32), tasks=tuple(spec.tasks))
    log.info("support pool: %s users from %s scanned, %.1f MB; per task (+, -): %s",
             pool.size, seen, pool.nbytes / 1e6, pool.class_counts())
    return pool


def save_support_pool(pool: SupportPool, path: str) -> None:
    """Write the pool as one compressed ``.npz`` (heatmaps are mostly zeros), atomically."""
    # Strings come out of TensorFlow as object arrays, which .npz stores only by pickling.
    arrays = {f"feature:{key}": values.astype(np.bytes_) if values.dtype == object else values
              for key, values in pool.features.items()}
    arrays["tasks"] = np.array(pool.tasks)
    staging = f"{path}.tmp.npz"
    np.savez_compressed(staging, **arrays)
    os.replace(staging, path)


def load_support_pool(path: str) -> SupportPool:
    with np.load(path, allow_pickle=False) as stored:
        features = {name[len("feature:"):]: stored[name] for name in stored.files
                    if name.startswith("feature:")}
        tasks = tuple(str(t) for t in stored["tasks"])
    return SupportPool(features=features, labels=features["labels"].astype(np.float32),
                       mask=features["mask"].astype(np.float32), tasks=tasks)


def _rows_to_keep(labels: np.ndarray, mask: np.ndarray, counts: np.ndarray,
                  pool_per_class: int) -> np.ndarray:
    """Rows of one batch that fill a short class; updates ``counts`` ([T, 2]) in place."""
    keep = []
    for row in range(labels.shape[0]):
        labelled = np.flatnonzero(mask[row] > 0)
        classes = (labels[row, labelled] > 0.5).astype(np.int64)
        if labelled.size and (counts[labelled, classes] < pool_per_class).any():
            counts[labelled, classes] += 1
            keep.append(row)
    return np.asarray(keep, dtype=np.int64)
