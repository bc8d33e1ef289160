"""Behaviour source tasks (model/behaviour.py): labels from the horizon, inputs before it."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from model.behaviour import BehaviourTask, usable_tasks, with_behaviour_tasks
from model.testing import tiny_spec

SPEC = tiny_spec(days=10, tasks=1)
HORIZON = 3


def batch() -> dict:
    """Three users of one purchases channel: new in the horizon, active before and in it,
    never active."""
    purchases = np.zeros((3, 10, 24, 3), np.float32)
    purchases[0, 8, 12, 1] = 5.0  # user 0: first active on day 8 (inside the horizon)
    purchases[1, 2, 9, 1] = 1.0  # user 1: day 2 ...
    purchases[1, 9, 9, 1] = 1.0  # ... and day 9
    return {"heatmap/purchases": tf.constant(purchases),
            "heatmap/points": tf.ones((3, 10, 24, 1)),
            "labels": tf.constant([[1.0], [0.0], [1.0]]),
            "mask": tf.constant([[1.0], [1.0], [0.0]])}


def test_new_buyer_and_active_labels_and_the_shifted_input():
    tasks = (BehaviourTask("behaviour/new_buyer/purchases/c1", "new_buyer", "heatmap/purchases", 1),
             BehaviourTask("behaviour/active/purchases/c1", "active", "heatmap/purchases", 1))
    out = with_behaviour_tasks(batch(), SPEC, tasks, HORIZON)
    np.testing.assert_array_equal(out["labels"].numpy(), [[1, 1, 1], [0, 0, 1], [1, 0, 0]])
    # new_buyer labels only users never active before the horizon; active labels everyone
    np.testing.assert_array_equal(out["mask"].numpy(), [[1, 1, 1], [1, 0, 1], [0, 1, 1]])
    shifted = out["heatmap/purchases"].numpy()
    assert shifted.shape == (3, 10, 24, 3)
    assert shifted[:, :HORIZON].sum() == 0  # zero-padded start
    assert shifted[1, 2 + HORIZON, 9, 1] == 1.0  # day 2 moved to day 5
    assert shifted[0].sum() == 0 and shifted[1].sum() == 1.0  # the horizon is cut away
    assert out["heatmap/points"].numpy()[:, HORIZON:].all()


def test_a_backtest_cut_moves_the_label_period_and_drops_the_days_after_it():
    tasks = (BehaviourTask("behaviour/new_buyer/purchases/c1", "new_buyer", "heatmap/purchases", 1),)
    # cut 2: label period days [5, 8); input days [0, 5) shifted to [5, 10)
    out = with_behaviour_tasks(batch(), SPEC, tasks, HORIZON, tf.constant(2))
    # user 0's first purchase (day 8) is after the cut: never active up to it, so a
    # negative; user 1 was active before (day 2): unlabelled; user 2 never active
    np.testing.assert_array_equal(out["labels"].numpy()[:, 1], [0, 0, 0])
    np.testing.assert_array_equal(out["mask"].numpy()[:, 1], [1, 0, 1])
    shifted = out["heatmap/purchases"].numpy()
    assert shifted[1, 2 + 5, 9, 1] == 1.0 and shifted[1].sum() == 1.0  # day 9 left out
    assert shifted[:, :5].sum() == 0 and shifted[0].sum() == 0
    # cut 1: label period days [6, 9) holds user 0's day 8: a new buyer
    out = with_behaviour_tasks(batch(), SPEC, tasks, HORIZON, 1)
    np.testing.assert_array_equal(out["labels"].numpy()[:, 1], [1, 0, 0])


def test_each_batch_draws_its_cut_the_same_way_every_run():
    from model.behaviour import cut_of_batch
    draws = [int(cut_of_batch(i, (0, 90, 180), seed=7)) for i in range(60)]
    assert set(draws) == {0, 90, 180}
    assert draws == [int(cut_of_batch(i, (0, 90, 180), seed=7)) for i in range(60)]
    assert int(cut_of_batch(5, (30,), seed=7)) == 30


def test_tasks_without_both_classes_are_dropped_with_a_reason():
    labels = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)
    mask = np.ones_like(labels)
    keep, dropped = usable_tasks(labels, mask, ("survey", "everyone", "rare"), [0], 2)
    assert keep == [0]
    assert dropped[0].startswith("everyone (4 positives, 0 negatives")
    assert dropped[1].startswith("rare (1 positives, 3 negatives")
