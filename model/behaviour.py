"""Behaviour source tasks derived from the heatmaps themselves (paper section 3.3.3).

A survey labels a few hundred users for a handful of tasks; the logs label every user for as
many tasks as there are channels. :func:`with_behaviour_tasks` turns a training batch into
one whose last ``horizon`` days are the *label period* of the behaviour tasks and whose
heatmaps end before it:

    heatmap [B, D, 24, C]  ──►  input  = days [0, D−h) shifted to [h, D), zeros before
                                label  = activity in the channel within days [D−h, D)

so the network learns, from the window before, who turns to a channel next — the shape of a
lookalike target task. The survey tasks keep their labels and see the same shifted input.
The rules come from ``tasks.behaviour`` of the pipeline config
(:class:`schemas.config.BehaviourTasksConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from schemas.config import BehaviourTasksConfig, PipelineConfig
from schemas.input_spec import InputSpec


@dataclass(frozen=True)
class BehaviourTask:
    name: str  # "behaviour/<kind>/<modality>/<channel>"
    kind: str  # new_buyer | active
    key: str  # heatmap batch key of the modality
    channel: int  # channel index within the modality


def behaviour_tasks(config: PipelineConfig, spec: InputSpec) -> tuple[BehaviourTask, ...]:
    """The behaviour tasks of ``config`` in a fixed order (kind, then channel order)."""
    rules: BehaviourTasksConfig = config.behaviour
    if not rules.enabled:
        return ()
    wanted = set(rules.channels)
    keys = dict(zip((m for m, _ in spec.modalities), spec.heatmap_keys))
    out = []
    for kind in rules.kinds:
        for modality in config.modalities:
            for index, channel in enumerate(modality.channels):
                name = f"{modality.name}/{channel.name}"
                if wanted and name not in wanted:
                    continue
                out.append(BehaviourTask(f"behaviour/{kind}/{name}", kind,
                                         keys[modality.name], index))
    return tuple(out)


def behaviour_labels(heat_before, heat_after) -> tuple:
    """(new_buyer label, new_buyer mask, active label) ``[B]`` each, from one channel's
    cells before and within the horizon (``[B, ...]`` non-negative values)."""
    before = tf.reduce_sum(tf.abs(heat_before), axis=[1, 2]) > 0  # [B]
    after = tf.reduce_sum(tf.abs(heat_after), axis=[1, 2]) > 0  # [B]
    new_buyer = tf.cast(after & ~before, tf.float32)
    return new_buyer, tf.cast(~before, tf.float32), tf.cast(after, tf.float32)


def with_behaviour_tasks(batch: dict, spec: InputSpec, tasks: tuple[BehaviourTask, ...],
                         horizon: int, cut=0, source_cuts: tuple[int, ...] = ()) -> dict:
    """``batch`` with heatmaps shifted by ``cut + horizon`` days and the behaviour tasks'
    labels and masks appended after the survey tasks' (``[B, T + len(tasks)]``).

    ``cut`` (a Python or a scalar tensor int) is the backtest cut, in days before the
    window's end: the label period is days ``[D − cut − horizon, D − cut)``, and the input
    is the days before it, shifted to end at ``D`` (zeros before). Days after the cut are
    in the cut's future and are left out.

    ``source_cuts`` (one per survey column, or empty) is each source task's own cut
    (``schemas.config.source_cut``), −1 for a task whose labels hold at every cut: a task
    labelled at another cut than the batch's is masked out of it."""
    out = dict(batch)
    survey_mask = batch["mask"]
    if source_cuts:
        own = tf.constant(source_cuts, tf.int32)[None, :]  # [1, T]
        at_cut = (own < 0) | (own == tf.cast(cut, tf.int32))
        survey_mask = survey_mask * tf.cast(at_cut, survey_mask.dtype)  # [B, T]
    labels, masks = [batch["labels"]], [survey_mask]
    days = spec.days
    shift = tf.cast(cut, tf.int32) + horizon
    day = tf.range(days)
    before = tf.cast(day < days - shift, tf.float32)[None, :, None]  # [1, D, 1]
    within = tf.cast((day >= days - shift) & (day < days - shift + horizon),
                     tf.float32)[None, :, None]  # [1, D, 1]
    for task in tasks:
        heat = batch[task.key][..., task.channel]  # [B, D, 24]
        new_buyer, new_mask, active = behaviour_labels(heat * before, heat * within)
        if task.kind == "new_buyer":
            labels.append(new_buyer[:, None])
            masks.append(new_mask[:, None])
        else:
            labels.append(active[:, None])
            masks.append(tf.ones_like(active)[:, None])
    for key in spec.heatmap_keys:
        heat = batch[key]  # [B, D, 24, C]
        kept = heat * before[..., None]  # [B, D, 24, C]: the days before the label period
        out[key] = tf.roll(kept, shift=shift, axis=1)  # they wrap to the front as zeros
    out["labels"] = tf.concat(labels, axis=1)  # [B, T']
    out["mask"] = tf.concat(masks, axis=1)  # [B, T']
    return out


def cut_of_batch(index, cuts: tuple[int, ...], seed: int):
    """The backtest cut of training batch ``index``: drawn from ``cuts`` by a stateless
    generator keyed on (seed, index), so a resumed run sees the same cuts."""
    if len(cuts) == 1:
        return tf.constant(cuts[0], tf.int32)
    pick = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64),
                                                          tf.cast(index, tf.int64)]),
                                       maxval=len(cuts), dtype=tf.int32)
    return tf.gather(tf.constant(cuts, tf.int32), pick)


def usable_tasks(labels: np.ndarray, mask: np.ndarray, names: tuple[str, ...],
                 always: Sequence[int], min_per_class: int) -> tuple[list[int], list[str]]:
    """Indices of the task columns to keep and a reason per dropped task: the columns in
    ``always`` (the survey tasks) are kept; any other (a behaviour task, or a source task at
    a backtest cut) needs ``min_per_class`` labelled positives and negatives in the scanned
    batches."""
    keep, dropped = [], []
    for t in range(labels.shape[1]):
        labelled = mask[:, t] > 0
        pos = int((labels[labelled, t] > 0).sum())
        neg = int(labelled.sum()) - pos
        if t in always or min(pos, neg) >= min_per_class:
            keep.append(t)
        else:
            dropped.append(f"{names[t]} ({pos} positives, {neg} negatives in the first "
                           f"{len(labels)} training users; needs {min_per_class} of each)")
    return keep, dropped
