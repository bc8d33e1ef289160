"""Eq. 1 of the paper: the masked multi-task loss over a query mini-batch.

    J(θ) = Σ_n Σ_i  w_ni / (Σ_i w_ni) · J_ni(θ)

``J_ni`` is the binary cross-entropy of user i on task n (on the logit), ``w_ni`` is 1 where
user i is labelled for task n and 0 otherwise (the batch's ``mask``). Each task's loss is the
mean over its labelled users in the batch, and tasks are summed, so a sparsely labelled task
weighs as much as a densely labelled one. A task with no labelled user in the batch has
``Σ_i w_ni = 0``; its term is defined as 0 (``divide_no_nan``), never NaN. An unlabelled
(user, task) cell gets exactly zero gradient, whatever placeholder its label holds.
"""
from __future__ import annotations

from keras import ops


def per_task_loss(labels, logits, mask):
    """``[B, T]`` labels, logits and 0/1 mask → per-task masked mean BCE ``[T]``."""
    labels = ops.cast(labels, "float32")
    logits = ops.cast(logits, "float32")
    mask = ops.cast(mask, "float32")
    cross_entropy = ops.binary_crossentropy(labels, logits, from_logits=True)  # [B, T]
    # where(), not a product alone: an unlabelled cell contributes 0 even if its logit is inf.
    weighted = ops.where(mask > 0, cross_entropy * mask, 0.0)  # [B, T]
    return ops.divide_no_nan(ops.sum(weighted, axis=0), ops.sum(mask, axis=0))  # [T]


def masked_multitask_loss(labels, logits, mask):
    """Eq. 1: the sum over tasks of :func:`per_task_loss` — a scalar."""
    return ops.sum(per_task_loss(labels, logits, mask))
