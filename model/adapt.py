"""Adaptation to an unseen target task from a few labelled users (paper sections 3.2, 4.1).

Three ways to score query users for a target task, all plain functions over numpy batch
dicts (schemas/input_spec.py keys; labels and mask not needed) and a ``[L]`` 0/1 label vector:

(a) :func:`prototype_scores` — no training: the labelled users are the support set, their
    embeddings are averaged into a positive (and, if any, a negative) prototype, and each
    query gets the relation logit r(q, p⁺) − r(q, p⁻). This is meta-testing proper.
(b) :func:`fine_tune_scores` — copy the meta-trained model and keep training profile network
    and relation module on the target task: episodes over the single task, supports (K per
    class) and a query batch both drawn from the labelled set (a user is never a query of
    the episode it is a support of), binary cross-entropy (Eq. 1 with one task),
    early-stopped on a validation fold of the labelled set (:class:`AdaptConfig`); then
    score as in (a).
(c) :func:`scratch_scores` — the paper's baseline "normal training": the same architecture
    and relation module, randomly initialised, trained with the procedure of (b) (its own
    learning rate; random weights need larger steps); then score as in (a).

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
from model.network import MetaProfileModel, build_meta_model, feature_keys
from model.settings import ModelConfig
from model.train import episode_logits
from schemas.input_spec import InputSpec


@dataclass(frozen=True)
class AdaptConfig:
    """Training budget on a target task, shared by (b) and the from-scratch baseline (c).

    Training is early-stopped: ``validation_fraction`` of the labelled users (stratified,
    at least one of each class) are held out, the relation-prototype AUPR on them is
    measured before training and after every epoch, and training stops after ``patience``
    epochs without a better value or at ``max_epochs``. The best epoch's weights are kept,
    and the final prototypes use every labelled user. A labelled set too small to hold out
    a validation fold (fewer than 3 users of a class) trains for ``min_epochs`` instead.
    """

    max_epochs: int = 20  # passes over the training part, counted in query users
    patience: int = 2  # epochs without a better validation AUPR before stopping
    min_epochs: int = 2  # the budget when no validation fold can be held out
    validation_fraction: float = 0.2
    batch_size: int = 32  # query users per episode (fewer if the labelled set is small)
    k_shot: int = 1  # supports per class per episode
    learning_rate: float = 1e-4  # constant Adam rate
    seed: int = 0
    embed_batch_size: int = 256  # users per forward pass when embedding
    # Batch-norm moving statistics are an exponential average. At Keras' 0.99 a run of a few
    # dozen steps leaves them near their initial (0, 1), so a model trained from scratch is
    # scored in inference mode with statistics it never had: the cause of the chance-level
    # baseline of earlier evaluations. 0.9 settles within ~30 steps.
    bn_momentum: float = 0.9
    prototype_users: int = 256  # training users embedded per validation (stratified sample)

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.min_epochs < 1 or self.patience < 1:
            raise ValueError("max_epochs, min_epochs and patience must be at least 1")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction {self.validation_fraction} must lie in (0, 1)")


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
        learner = Learner(model.spec, model_cfg, cfg.learning_rate, cfg.bn_momentum)
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
        learner = Learner(spec, model_cfg, cfg.learning_rate, cfg.bn_momentum)
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
    After :meth:`train`, ``curve`` holds the run's validation AUPR per epoch (epoch 0 is
    before the first step) and ``best_epoch`` the epoch whose weights were kept.
    """

    def __init__(self, spec: InputSpec, model_cfg: ModelConfig, learning_rate: float,
                 bn_momentum: float | None = None):
        changes = {"precision": "float32"}
        if bn_momentum is not None:
            changes["bn_momentum"] = bn_momentum
        self.model = build_meta_model(spec, dataclasses.replace(model_cfg, **changes))
        self.learning_rate = learning_rate
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.optimizer.variables]
        self._steps: dict[tuple[int, bool], Callable] = {}
        self.curve: list[tuple[int, float]] = []
        self.best_epoch: int | None = None

    def reset(self, weights: list[np.ndarray]) -> None:
        self.model.set_weights(weights)
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)
        self.curve, self.best_epoch = [], None

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

    def _validation_aupr(self, batch: dict, labels: np.ndarray, train: np.ndarray,
                         validation: np.ndarray, cfg: AdaptConfig) -> float:
        from sklearn.metrics import average_precision_score
        support = train_sample(labels, train, cfg.prototype_users, cfg.seed)
        scores = prototype_scores(self.model, take(batch, support), labels[support],
                                  take(batch, validation), cfg.embed_batch_size)
        return float(average_precision_score(labels[validation], scores))

    def train(self, batch: dict, labels: np.ndarray, cfg: AdaptConfig) -> None:
        """Episodes over one task (K supports per class and a disjoint query batch per step),
        early-stopped on a held-out validation fold when the labelled set allows one."""
        if cfg.learning_rate != self.learning_rate:
            raise ValueError(f"learning rate {cfg.learning_rate} differs from this learner's "
                             f"{self.learning_rate}")
        rng = np.random.default_rng(cfg.seed)
        features = {k: batch[k] for k in feature_keys(self.model.spec)}
        train, validation = validation_split(labels, cfg.validation_fraction, rng)
        if validation is None:
            self._epochs(features, labels, np.arange(len(labels)), cfg, rng, cfg.min_epochs)
            self.best_epoch = cfg.min_epochs
            return
        best = self._validation_aupr(features, labels, train, validation, cfg)
        self.curve, self.best_epoch = [(0, best)], 0
        best_weights = self.model.get_weights()
        for epoch in range(1, cfg.max_epochs + 1):
            self._epochs(features, labels, train, cfg, rng, 1)
            value = self._validation_aupr(features, labels, train, validation, cfg)
            self.curve.append((epoch, value))
            if value > best:
                best, self.best_epoch, best_weights = value, epoch, self.model.get_weights()
            elif epoch - self.best_epoch >= cfg.patience:
                break
        self.model.set_weights(best_weights)

    def _epochs(self, features: dict, labels: np.ndarray, users: np.ndarray, cfg: AdaptConfig,
                rng: np.random.Generator, epochs: int) -> None:
        column = labels[users][:, None]  # [L, 1]
        negatives = bool((column == 0).sum() >= cfg.k_shot)
        n_support = cfg.k_shot * (2 if negatives else 1)
        queries = min(cfg.batch_size, len(users) - n_support)
        if queries < 1:
            raise ValueError(f"{len(users)} labelled users leave no query after {n_support} "
                             "supports; label more users or lower k_shot")
        everyone = np.ones_like(column)
        step = self._step(cfg.k_shot, negatives)
        for _ in range(epochs * math.ceil(len(users) / queries)):
            pos, neg = sample_support(column, everyone, cfg.k_shot, rng, ("target",), negatives)
            chosen = support_order(pos, neg)
            rest = np.setdiff1d(np.arange(len(users)), chosen)
            rows = rng.choice(rest, size=queries, replace=False)
            step(take(features, users[chosen]), take(features, users[rows]), column[rows])


def validation_split(labels: np.ndarray, fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """(training, validation) positions, stratified: each class gives ``max(1, round(
    fraction · n))`` users to validation and keeps at least two for training. ``None`` for
    validation when a class has fewer than 3 users."""
    train, validation = [], []
    for cls in (1, 0):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < 3:
            return np.arange(len(labels)), None
        held = min(max(1, round(fraction * len(members))), len(members) - 2)
        validation.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def train_sample(labels: np.ndarray, train: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most ``size`` training positions for the validation prototypes, keeping every
    positive first (they are the rarer class) and filling with negatives."""
    if len(train) <= size:
        return train
    rng = np.random.default_rng(seed)
    pos = train[labels[train] == 1]
    neg = train[labels[train] == 0]
    pos = rng.choice(pos, size=min(len(pos), size // 2), replace=False)
    neg = rng.choice(neg, size=min(len(neg), size - len(pos)), replace=False)
    return np.sort(np.concatenate([pos, neg]))
