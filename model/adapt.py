"""Adaptation to an unseen target task from a few labelled users (paper sections 3.2, 4.1).

Three ways to score query users for a target task, all plain functions over numpy batch
dicts (model/spec.py keys; labels and mask not needed) and a ``[L]`` 0/1 label vector:

(a) :func:`prototype_scores` — no training: the labelled users are the support set, their
    embeddings are averaged into a positive (and, if any, a negative) prototype, and each
    query gets the relation logit r(q, p⁺) − r(q, p⁻). This is meta-testing proper.
(b) :func:`fine_tune_scores` — copy the meta-trained model and keep training profile network
    and relation module on the target task: episodes over the single task, supports (K per
    class) and a query batch both drawn from the labelled set (a user is never a query of
    the episode it is a support of), binary cross-entropy (Eq. 1 with one task), a few
    epochs; then score as in (a).
(c) :func:`scratch_scores` — the paper's baseline "normal training": the same architecture
    and relation module, randomly initialised, trained with exactly the procedure and budget
    of (b); then score as in (a).

Scores are relation logits (higher = more likely positive); they rank users, and
``sigmoid`` turns them into probabilities where a calibrated number is wanted.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from model.episodes import sample_support, support_order
from model.losses import masked_multitask_loss
from model.network import MetaProfileModel, ModelConfig, build_meta_model, feature_keys
from model.spec import InputSpec
from model.train import episode_logits


@dataclass(frozen=True)
class AdaptConfig:
    """Fine-tuning budget, shared by (b) and the from-scratch baseline (c)."""

    epochs: int = 5  # passes over the labelled set, counted in query users
    batch_size: int = 32  # query users per episode (fewer if the labelled set is small)
    k_shot: int = 1  # supports per class per episode
    learning_rate: float = 1e-4  # constant Adam rate: a few epochs leave no room for a schedule
    seed: int = 0
    embed_batch_size: int = 256  # users per forward pass when embedding


def take(batch: dict, rows: np.ndarray) -> dict:
    """The rows of every array of a batch dict."""
    return {k: np.take(v, rows, axis=0) for k, v in batch.items()}


def embed(model: MetaProfileModel, batch: dict, batch_size: int = 256) -> np.ndarray:
    """User embeddings ``[U, E]`` in inference mode, ``batch_size`` users at a time."""
    keys = feature_keys(model.spec)
    users = len(batch[keys[0]])
    parts = [model({k: batch[k][i:i + batch_size] for k in keys}, training=False).numpy()
             for i in range(0, users, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.profile.output.shape[-1]),
                                                         np.float32)


def _binary_labels(labels) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float32).reshape(-1)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("target labels must be 0 or 1")
    if labels.sum() < 1:
        raise ValueError("the labelled set has no positive user; a prototype needs one")
    return labels


def prototype_scores(model: MetaProfileModel, support_batch: dict, support_labels,
                     query_batch: dict, batch_size: int = 256) -> np.ndarray:
    """(a) Relation logits ``[Q]`` of the queries against the labelled set's prototypes."""
    labels = _binary_labels(support_labels)
    support = embed(model, support_batch, batch_size)  # [L, E]
    pos = support[labels == 1].mean(axis=0, keepdims=True)  # [1, E]
    neg = support[labels == 0].mean(axis=0, keepdims=True) if (labels == 0).any() else None
    query = embed(model, query_batch, batch_size)  # [Q, E]
    logits = model.score(query, pos, neg)  # [Q, 1]
    return keras.ops.convert_to_numpy(logits)[:, 0]


def fine_tune(model: MetaProfileModel, model_cfg: ModelConfig, labelled_batch: dict, labels,
              cfg: AdaptConfig, learner: "Learner | None" = None) -> MetaProfileModel:
    """``model`` trained on the target task (``model`` itself is not changed): a copy, or
    ``learner``'s model reset to ``model``'s weights."""
    labels = _binary_labels(labels)
    if learner is None:
        learner = Learner(model.spec, model_cfg, cfg.learning_rate)
    learner.reset(model.get_weights())
    learner.train(labelled_batch, labels, cfg)
    return learner.model


def fine_tune_scores(model: MetaProfileModel, model_cfg: ModelConfig, labelled_batch: dict,
                     labels, query_batch: dict, cfg: AdaptConfig = AdaptConfig(),
                     learner: "Learner | None" = None) -> np.ndarray:
    """(b) Fine-tune a copy of the meta-trained model, then score the queries ``[Q]``."""
    tuned = fine_tune(model, model_cfg, labelled_batch, labels, cfg, learner)
    return prototype_scores(tuned, labelled_batch, labels, query_batch, cfg.embed_batch_size)


def initial_weights(spec: InputSpec, model_cfg: ModelConfig, seed: int) -> list[np.ndarray]:
    """The weights of a meta-model freshly initialised under ``seed``."""
    keras.utils.set_random_seed(seed)
    return build_meta_model(spec, dataclasses.replace(model_cfg, precision="float32")
                            ).get_weights()


def scratch_scores(spec: InputSpec, model_cfg: ModelConfig, labelled_batch: dict, labels,
                   query_batch: dict, cfg: AdaptConfig = AdaptConfig(),
                   learner: "Learner | None" = None) -> np.ndarray:
    """(c) The baseline: a randomly initialised model trained exactly like (b), then scored."""
    labels = _binary_labels(labels)
    if learner is None:
        learner = Learner(spec, model_cfg, cfg.learning_rate)
    learner.reset(initial_weights(spec, model_cfg, cfg.seed))
    learner.train(labelled_batch, labels, cfg)
    return prototype_scores(learner.model, labelled_batch, labels, query_batch,
                            cfg.embed_batch_size)


class Learner:
    """One float32 meta-model, its Adam optimizer and its traced train steps, reused across
    adaptations of one architecture.

    Tracing a train step costs seconds, and an evaluation runs hundreds of fine-tunings and
    from-scratch trainings of the same network. Each run starts with :meth:`reset`, which
    assigns the starting weights and returns every optimizer variable (step count, moments)
    to its value after ``build``, so a run is the same as on a new model and optimizer.
    """

    def __init__(self, spec: InputSpec, model_cfg: ModelConfig, learning_rate: float):
        self.model = build_meta_model(spec, dataclasses.replace(model_cfg, precision="float32"))
        self.learning_rate = learning_rate
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.optimizer.variables]
        self._steps: dict[tuple[int, bool], Callable] = {}

    def reset(self, weights: list[np.ndarray]) -> None:
        self.model.set_weights(weights)
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    def _step(self, k_shot: int, negatives: bool) -> Callable:
        if (k_shot, negatives) not in self._steps:
            model, optimizer = self.model, self.optimizer

            @tf.function(reduce_retracing=True)
            def step(support, query, query_labels):
                with tf.GradientTape() as tape:
                    logits = episode_logits(model, support, query, 1, k_shot, negatives,
                                            training=True)  # [B, 1]
                    loss = masked_multitask_loss(query_labels, logits,
                                                 tf.ones_like(query_labels))
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))
                return loss

            self._steps[(k_shot, negatives)] = step
        return self._steps[(k_shot, negatives)]

    def train(self, batch: dict, labels: np.ndarray, cfg: AdaptConfig) -> None:
        """Episodes over one task: K supports per class and a disjoint query batch per step."""
        if cfg.learning_rate != self.learning_rate:
            raise ValueError(f"learning rate {cfg.learning_rate} differs from this learner's "
                             f"{self.learning_rate}")
        rng = np.random.default_rng(cfg.seed)
        negatives = bool((labels == 0).sum() >= cfg.k_shot)
        n_support = cfg.k_shot * (2 if negatives else 1)
        queries = min(cfg.batch_size, len(labels) - n_support)
        if queries < 1:
            raise ValueError(f"{len(labels)} labelled users leave no query after {n_support} "
                             "supports; label more users or lower k_shot")
        steps = cfg.epochs * math.ceil(len(labels) / queries)
        features = {k: batch[k] for k in feature_keys(self.model.spec)}
        column = labels[:, None]  # [L, 1]
        everyone = np.ones_like(column)
        step = self._step(cfg.k_shot, negatives)
        for _ in range(steps):
            pos, neg = sample_support(column, everyone, cfg.k_shot, rng, ("target",), negatives)
            chosen = support_order(pos, neg)
            rest = np.setdiff1d(np.arange(len(labels)), chosen)
            rows = rng.choice(rest, size=queries, replace=False)
            step(take(features, chosen), take(features, rows), column[rows])
