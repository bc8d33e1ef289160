"""Tiny in-memory batches with a planted signal, for model tests, benchmarks and evaluation.

Each source task n has a *signature*: a (modality, channel, hour band). A user positive for
task n gets, on about half of the days, an extra event in that channel at an hour of that
band; everybody gets sparse background events everywhere. So a network that learns "activity
in channel c between hours h0 and h1" separates the classes — which a few dozen training
steps of a narrow Table 2 tower do. A separate *target* task (not a source task) has its own
signature, for adaptation tests on an unseen task.

Batches follow schemas/input_spec.py exactly (key names, dtypes, shapes, 0 = missing categorical id,
labels 0 where unlabelled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import heatmap_key


@dataclass(frozen=True)
class Signature:
    modality: int  # index into spec.modalities
    channel: int
    hours: tuple[int, int]  # [start, end)


def tiny_spec(days: int = 14, tasks: int = 3) -> InputSpec:
    """Two modalities (3 and 1 channels), one numeric and one categorical field."""
    return InputSpec(days=days, modalities=(("purchases", 3), ("points", 1)),
                     numeric=("age",), categorical=(("gender", 3),),
                     tasks=tuple(f"task_{t}" for t in range(tasks)))


def _slots(spec: InputSpec) -> list[tuple[int, int]]:
    """Every (modality, channel), in config order."""
    return [(m, c) for m, (_, channels) in enumerate(spec.modalities) for c in range(channels)]


def task_signatures(spec: InputSpec) -> tuple[Signature, ...]:
    """One signature per source task, in distinct 4-hour bands cycling over the channels."""
    slots = _slots(spec)
    return tuple(Signature(*slots[t % len(slots)], hours=(2 + (4 * t) % 16, 6 + (4 * t) % 16))
                 for t in range(len(spec.tasks)))


def target_signature(spec: InputSpec) -> Signature:
    """The unseen target task: the channel after the source tasks' (free when there are more
    channels than tasks, as in :func:`tiny_spec`), late evening — no source task uses 18-22."""
    slots = _slots(spec)
    return Signature(*slots[len(spec.tasks) % len(slots)], hours=(18, 22))


def planted_users(spec: InputSpec, users: int, seed: int, *, labelled: float = 0.7,
                  background: float = 0.02) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A batch dict of ``users`` users and their target-task labels ``[users]``.

    Every source-task and the target class is a fair coin per user; a user is labelled for a
    source task with probability ``labelled`` (mask), and unlabelled cells hold label 0.
    """
    rng = np.random.default_rng(seed)
    tasks = len(spec.tasks)
    truth = rng.random((users, tasks)) < 0.5  # [U, T]
    target = rng.random(users) < 0.5  # [U]
    batch: dict[str, np.ndarray] = {
        "user_id": np.array([f"user-{seed}-{i:06d}".encode() for i in range(users)])}
    for m, (name, channels) in enumerate(spec.modalities):
        heat = _background(rng, users, spec.days, spec.hours, channels, background)
        for t, signature in enumerate(task_signatures(spec)):
            if signature.modality == m:
                _plant(rng, heat, truth[:, t], signature)
        if target_signature(spec).modality == m:
            _plant(rng, heat, target, target_signature(spec))
        batch[heatmap_key(name)] = heat
    batch.update(_demographics(rng, spec, users))
    mask = (rng.random((users, tasks)) < labelled).astype(np.float32)  # [U, T]
    batch["labels"] = truth.astype(np.float32) * mask
    batch["mask"] = mask
    return batch, target.astype(np.float32)


def _background(rng: np.random.Generator, users: int, days: int, hours: int, channels: int,
                rate: float) -> np.ndarray:
    cells = rng.random((users, days, hours, channels)) < rate
    values = np.log1p(rng.lognormal(mean=2.0, sigma=0.7, size=cells.shape))
    return np.where(cells, values, 0.0).astype(np.float32)  # [U, D, 24, C]


def _plant(rng: np.random.Generator, heat: np.ndarray, positive: np.ndarray,
           signature: Signature) -> None:
    users, days = heat.shape[:2]
    active = (rng.random((users, days)) < 0.5) & positive[:, None]  # [U, D]
    hour = rng.integers(*signature.hours, size=(users, days))  # [U, D]
    value = np.log1p(rng.lognormal(mean=5.5, sigma=0.3, size=(users, days))).astype(np.float32)
    u, d = np.nonzero(active)
    heat[u, d, hour[u, d], signature.channel] += value[u, d]


def _demographics(rng: np.random.Generator, spec: InputSpec, users: int) -> dict[str, np.ndarray]:
    out = {}
    if spec.numeric:
        missing = rng.random((users, len(spec.numeric))) < 0.1
        out["demo/numeric"] = np.where(missing, 0.0,
                                       rng.normal(size=missing.shape)).astype(np.float32)
        out["demo/numeric_missing"] = missing.astype(np.float32)
    for name, vocabulary in spec.categorical:
        out[f"demo/{name}"] = rng.integers(0, vocabulary + 1, size=users).astype(np.int32)
    return out


def planted_dataset(spec: InputSpec, users: int, seed: int, batch_size: int, *,
                    repeat: bool, shuffle: bool = True):
    """A ``tf.data.Dataset`` of planted batch dicts (the shape ``model.inputs`` yields)."""
    batch, _ = planted_users(spec, users, seed)
    dataset = tf.data.Dataset.from_tensor_slices(batch)
    if shuffle:
        dataset = dataset.shuffle(users, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=repeat)
