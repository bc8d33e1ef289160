"""The relation module f_θ (paper section 3.2): a ReLU MLP that scores (query, support) pairs.

K-shot rule. The K support embeddings of one task and class are averaged into a prototype
(as in prototypical networks), and a query's logit for a binary task is

    logit(q, task n) = r(q, p⁺_n) − r(q, p⁻_n)     when the task has negative supports,
    logit(q, task n) = r(q, p⁺_n)                  when it has positives only,

where r is the MLP over ``concat(q, p)``. Why prototypes rather than scoring each of the K
supports and pooling the scores: the cost of scoring is then independent of K — the nightly
job scores every user (millions) against every active campaign, and a campaign's seed list can
hold thousands of users. Averaging is also what makes the split below possible: a task is
one vector, so its half of the first layer is computed once. The difference of the two
relation scores is a log-odds-like comparison "closer to the positives than to the
negatives", and it degrades to a plain similarity when a campaign has seeds only.

Split first layer. ``Dense(concat(q, p)) = q·W_q + p·W_p + b``, so the first layer is exposed
in two halves: :meth:`RelationModule.user_part` (``[B, H]``, once per user) and
:meth:`RelationModule.support_part` (``[N, H]``, once per task or campaign, bias included);
:meth:`RelationModule.head` applies the ReLU and the remaining layers to their broadcast sum
``[B, N, H]`` and returns logits ``[B, N]``. The B·N pairs then cost only the (small) head,
never a ``[B·N, 2E]`` concatenation. :meth:`RelationModule.pair_logits` is the naive
concat evaluation, kept as the reference the split is tested against.

The module computes in float32 even under a mixed-precision policy: it is small, and the
logits feed the loss directly.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

PACKAGE = "metaprofile"


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelationModule(keras.layers.Layer):
    """f_θ with hidden ReLU layers ``units`` (the first over ``concat(q, p)``) and a linear
    output unit. Build it with the embedding shape ``(None, E)``."""

    def __init__(self, units: Sequence[int] = (256,), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not units or min(int(u) for u in units) < 1:
            raise ValueError(f"relation units {units!r}: need one or more positive sizes")
        self.units = tuple(int(u) for u in units)
        self.hidden = [keras.layers.Dense(u, activation="relu", dtype=self.dtype_policy,
                                          name=f"hidden_{i}")
                       for i, u in enumerate(self.units[1:], start=2)]
        self.output_layer = keras.layers.Dense(1, dtype=self.dtype_policy, name="logit")

    def build(self, embedding_shape):
        dim = int(embedding_shape[-1])
        first = self.units[0]
        # One kernel over concat(q, p): rows [:E] multiply the query, rows [E:] the support.
        self.pair_kernel = self.add_weight(shape=(2 * dim, first), name="pair_kernel",
                                           initializer="glorot_uniform")  # [2E, H]
        self.pair_bias = self.add_weight(shape=(first,), name="pair_bias",
                                         initializer="zeros")  # [H]
        width = first
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))
        self.embedding_dim = dim

    # ------------------------------------------------------------------ split first layer

    def user_part(self, query_embedding):
        """``[B, E] → [B, H]``: the query's half of the first layer (no bias)."""
        q = ops.cast(query_embedding, self.compute_dtype)
        return ops.matmul(q, self.pair_kernel[: self.embedding_dim])  # [B, H]

    def support_part(self, prototype):
        """``[N, E] → [N, H]``: the support's half of the first layer, bias included."""
        p = ops.cast(prototype, self.compute_dtype)
        return ops.matmul(p, self.pair_kernel[self.embedding_dim:]) + self.pair_bias  # [N, H]

    def head(self, pre_activation):
        """``[..., H]`` first-layer pre-activations → logits ``[...]`` (last axis dropped)."""
        x = ops.relu(pre_activation)  # [..., H]
        for layer in self.hidden:
            x = layer(x)  # [..., H_i]
        return ops.squeeze(self.output_layer(x), axis=-1)  # [...]

    # ------------------------------------------------------------------ scoring

    def pair_scores(self, query_embedding, prototype):
        """r(q, p) for every query × prototype: ``[B, E], [N, E] → [B, N]``."""
        user = self.user_part(query_embedding)  # [B, H]
        support = self.support_part(prototype)  # [N, H]
        return self.head(user[:, None, :] + support[None, :, :])  # [B, N]

    def pair_logits(self, query_embedding, prototype):
        """The naive evaluation of :meth:`pair_scores`: Dense over ``concat(q, p)``."""
        q = ops.cast(query_embedding, self.compute_dtype)  # [B, E]
        p = ops.cast(prototype, self.compute_dtype)  # [N, E]
        b, n = ops.shape(q)[0], ops.shape(p)[0]
        pairs = ops.concatenate([ops.repeat(q[:, None, :], n, axis=1),
                                 ops.repeat(p[None, :, :], b, axis=0)], axis=-1)  # [B, N, 2E]
        return self.head(ops.matmul(pairs, self.pair_kernel) + self.pair_bias)  # [B, N]

    def relation_logits(self, query_embedding, pos_prototype, neg_prototype=None,
                        has_negatives=None):
        """Task logits ``[B, N]``: r(q, p⁺) − r(q, p⁻), or r(q, p⁺) without negatives.

        ``has_negatives`` (``[N]``, bool or 0/1) marks which tasks' ``neg_prototype`` rows are
        real, for a mix of campaigns with and without explicit negatives.
        """
        logits = self.pair_scores(query_embedding, pos_prototype)  # [B, N]
        if neg_prototype is None:
            return logits
        negative = self.pair_scores(query_embedding, neg_prototype)  # [B, N]
        if has_negatives is not None:
            negative = negative * ops.cast(has_negatives, self.compute_dtype)[None, :]
        return logits - negative  # [B, N]

    def call(self, query_embedding, pos_prototype, neg_prototype=None):
        return self.relation_logits(query_embedding, pos_prototype, neg_prototype)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": list(self.units)}


def class_prototypes(support_embedding, tasks: int, shots: int):
    """Mean embedding per task: ``[N·K, E]`` in task-major order → ``[N, E]``."""
    per_task = ops.reshape(support_embedding, (tasks, shots, -1))  # [N, K, E]
    return ops.mean(per_task, axis=1)  # [N, E]
