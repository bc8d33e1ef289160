"""The network's own reading of its source tasks, as a compact user representation.

A head fitted on 10–100 seeds over a 128-column embedding has too many directions to choose
from; the source tasks the network was meta-trained on name the few directions it learned
to read. :func:`source_prototypes` averages the embeddings of the users labelled for each
source task (every labelled user, not K of them) into a positive and a negative prototype,
and :func:`task_score_features` gives every user the relation logit r(q, p⁺) − r(q, p⁻) of
each source task (Eq. 1's scores): ``[U, T]``, one column per source task. A head then sees
these T columns beside the aggregates (``evaluation`` method ``meta_profile_tasks``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SourcePrototypes:
    """Per source task, the mean embedding of its labelled positives and negatives."""

    tasks: tuple[str, ...]  # the source tasks that have both classes, in spec order
    positive: np.ndarray  # [T, E]
    negative: np.ndarray  # [T, E]
    counts: tuple[tuple[int, int], ...]  # (positives, negatives) per kept task
    skipped: tuple[str, ...]  # source tasks without a labelled user of one class


def source_prototypes(embeddings: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                      tasks: tuple[str, ...], min_per_class: int = 5) -> SourcePrototypes:
    """Prototypes of ``tasks`` from ``embeddings`` ``[U, E]`` and their source labels and
    masks ``[U, T]``; a task with fewer than ``min_per_class`` labelled users of a class is
    skipped (named in ``skipped``)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels, mask = np.asarray(labels), np.asarray(mask)
    if labels.shape != mask.shape or labels.shape != (len(embeddings), len(tasks)):
        raise ValueError(f"labels {labels.shape} and mask {mask.shape} must both be "
                         f"[{len(embeddings)} users, {len(tasks)} tasks]")
    kept, pos, neg, counts, skipped = [], [], [], [], []
    for t, task in enumerate(tasks):
        labelled = mask[:, t] > 0
        positive = labelled & (labels[:, t] > 0.5)
        negative = labelled & ~(labels[:, t] > 0.5)
        n_pos, n_neg = int(positive.sum()), int(negative.sum())
        if min(n_pos, n_neg) < min_per_class:
            skipped.append(task)
            continue
        kept.append(task)
        pos.append(embeddings[positive].mean(axis=0))
        neg.append(embeddings[negative].mean(axis=0))
        counts.append((n_pos, n_neg))
    width = embeddings.shape[1]
    return SourcePrototypes(
        tasks=tuple(kept),
        positive=np.asarray(pos, np.float32).reshape(len(kept), width),
        negative=np.asarray(neg, np.float32).reshape(len(kept), width),
        counts=tuple(counts), skipped=tuple(skipped))


def task_score_features(model, embeddings: np.ndarray, prototypes: SourcePrototypes,
                        batch_size: int = 4096) -> np.ndarray:
    """``[U, T]`` relation logits of every user against every source task's prototypes
    (``model.score``, the meta-trained relation module); ``[U, 0]`` without a task."""
    from keras import ops
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if not prototypes.tasks:
        return np.zeros((len(embeddings), 0), np.float32)
    parts = [ops.convert_to_numpy(model.score(embeddings[i:i + batch_size],
                                              prototypes.positive, prototypes.negative))
             for i in range(0, len(embeddings), batch_size)]
    if not parts:
        return np.zeros((0, len(prototypes.tasks)), np.float32)
    return np.concatenate(parts).astype(np.float32)  # [U, T]
