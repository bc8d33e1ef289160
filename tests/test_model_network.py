"""Model parts at tiny shapes: towers, relation module, Eq. 1, schedule, episode sampler."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.episodes import (
    SupportPool,
    build_support_pool,
    class_members,
    sample_support,
    support_order,
)
from model.losses import masked_multitask_loss, per_task_loss
from model.metrics import auroc
from model.network import (
    build_demographic_tower,
    build_meta_model,
    build_profile_network,
    build_tower,
    describe,
    feature_keys,
    full_size_parameter_count,
    select_inputs,
    tower_output_shapes,
)
from model.relation import RelationModule, class_prototypes
from model.schedules import CyclicThenRestarts, build_schedule
from model.settings import ModelConfig, ScheduleConfig
from model.testing import planted_users, tiny_spec
from schemas.input_spec import InputSpec

TINY = ModelConfig(width=1 / 16, embedding_dim=8, relation_units=(8, 4), demo_units=4)


@pytest.fixture(scope="module")
def spec():
    return tiny_spec(days=14)


@pytest.fixture(scope="module")
def users(spec):
    return planted_users(spec, 24, seed=3)[0]


# --------------------------------------------------------------------------- towers


def test_full_size_tower_follows_table_2():
    tower = build_tower("purchases", (365, 24, 12), ModelConfig())
    shapes = dict(tower_output_shapes(tower))
    assert shapes["conv_1"] == (365, 24, 64)
    assert shapes["max_pool_1"] == (52, 12, 64)
    assert shapes["conv_2"] == (52, 12, 128)
    assert shapes["max_pool_2"] == (13, 6, 128)
    assert shapes["conv_3"] == (13, 6, 256)
    assert shapes["max_pool_3"] == (4, 3, 256)
    assert shapes["conv_4"] == (4, 3, 512)
    assert shapes["max_pool_4"] == (1, 1, 512)
    assert shapes["flatten"] == (512,)
    kernels = [tower.get_layer(f"conv_{i}").kernel_size for i in range(1, 5)]
    assert kernels == [(7, 2), (4, 2), (3, 2), (1, 1)]
    pools = [tower.get_layer(f"max_pool_{i}").pool_size for i in range(1, 5)]
    assert pools == [(7, 2), (4, 2), (3, 2), (4, 3)]


@pytest.mark.parametrize("days", [14, 28, 60])
def test_short_windows_clip_the_pools_to_one_cell(days):
    tower = build_tower("points", (days, 24, 2), TINY)
    shapes = dict(tower_output_shapes(tower))
    assert shapes["max_pool_4"][:2] == (1, 1)
    assert shapes["flatten"] == (32,)  # round(512 / 16)


def test_a_window_longer_than_a_year_ends_in_a_global_max_pool():
    tower = build_tower("points", (730, 24, 1), TINY)
    shapes = dict(tower_output_shapes(tower))
    assert shapes["max_pool_4"][:2] != (1, 1)
    assert shapes["global_max_pool"] == (32,)


def test_totals_branch_adds_log_channel_and_hour_sums_beside_the_max_pools(spec, users):
    import dataclasses

    from model.network import HeatmapTotals
    heat = np.zeros((1, 3, 24, 2), np.float32)
    heat[0, 0, 5, 1], heat[0, 2, 5, 1], heat[0, 1, 7, 0] = 2.0, 3.0, 1.0
    totals = np.asarray(HeatmapTotals()(heat))
    assert totals.shape == (1, 2 + 24)
    np.testing.assert_allclose(totals[0, :2], np.log1p([1.0, 5.0]), rtol=1e-6)
    np.testing.assert_allclose(totals[0, 2 + 5], np.log1p(5.0), rtol=1e-6)
    with_totals = dataclasses.replace(TINY, totals_units=3)
    plain = build_tower("purchases", spec.heatmap_shape("purchases"), TINY)
    tower = build_tower("purchases", spec.heatmap_shape("purchases"), with_totals)
    assert tower.output.shape[-1] == plain.output.shape[-1] + 3
    network = build_profile_network(spec, with_totals)
    assert network(select_inputs(users, spec)).shape == (24, TINY.embedding_dim)


def test_profile_network_embeds_a_batch_dict(spec, users):
    profile = build_profile_network(spec, TINY)
    embedding = profile(select_inputs(users, spec))
    assert embedding.shape == (24, 8)
    assert embedding.dtype == "float32"
    assert np.isfinite(embedding.numpy()).all()


def test_demographic_tower_embeds_missing_as_id_zero(spec, users):
    tower = build_demographic_tower(spec, TINY)
    table = tower.get_layer("embed_gender")
    assert table.input_dim == 3 + 1  # the vocabulary plus id 0 = missing
    out = tower({k.replace("/", "__"): users[k] for k in feature_keys(spec)
                 if k.startswith("demo/")})
    assert out.shape == (24, 4)


def test_no_demographics_means_no_demographic_tower():
    bare = InputSpec(days=14, modalities=(("purchases", 2),), numeric=(), categorical=(),
                     tasks=("a",))
    assert build_demographic_tower(bare, TINY) is None
    batch = {"heatmap/purchases": np.zeros((3, 14, 24, 2), np.float32)}
    assert build_profile_network(bare, TINY)(select_inputs(batch, bare)).shape == (3, 8)


def test_missing_feature_is_named(spec, users):
    partial = {k: v for k, v in users.items() if k != "heatmap/points"}
    with pytest.raises(KeyError, match="heatmap/points"):
        select_inputs(partial, spec)


def test_model_config_round_trip_and_validation():
    cfg = ModelConfig(width=0.5, relation_units=(32, 8))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="width"):
        ModelConfig(width=0)
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({"widht": 1.0})


def test_full_size_parameter_count_matches_the_documented_figure():
    counts = full_size_parameter_count()
    parts = counts["parts"]
    assert counts["total"] == 1_612_745
    assert parts["tower_purchases"]["trainable"] == 393_216 + 896 * 12 + 1_920
    assert parts["tower_points"]["trainable"] == 393_216 + 896 * 4 + 1_920
    assert parts["fusion"]["trainable"] == (512 + 512 + 32) * 512 + 512
    assert parts["relation"]["trainable"] == 1024 * 256 + 256 + 256 + 1


def test_describe_lists_every_part(spec):
    text = describe(spec, TINY)
    for part in ("tower_purchases", "tower_points", "demographics", "fusion", "relation",
                 "total"):
        assert part in text


# --------------------------------------------------------------------------- relation


def _relation(dim=6, units=(5, 3)):
    relation = RelationModule(units)
    relation.build((None, dim))
    return relation


def test_split_relation_equals_the_naive_concat_evaluation():
    relation = _relation()
    rng = np.random.default_rng(0)
    query = rng.normal(size=(7, 6)).astype(np.float32)
    prototypes = rng.normal(size=(4, 6)).astype(np.float32)
    split = relation.head(relation.user_part(query)[:, None, :]
                          + relation.support_part(prototypes)[None, :, :])
    naive = relation.pair_logits(query, prototypes)
    assert split.shape == (7, 4)
    np.testing.assert_allclose(split, naive, rtol=1e-5, atol=1e-6)
    # and the naive form is literally Dense(concat(q, p)) followed by the head
    first = np.concatenate([query[2], prototypes[1]]) @ relation.pair_kernel.numpy()
    one = relation.head((first + relation.pair_bias.numpy())[None, :])
    np.testing.assert_allclose(one[0], naive[2, 1], rtol=1e-5, atol=1e-6)


def test_relation_logits_subtract_the_negative_score_only_where_negatives_exist():
    relation = _relation()
    rng = np.random.default_rng(1)
    q, pos, neg = (rng.normal(size=s).astype(np.float32) for s in ((5, 6), (3, 6), (3, 6)))
    positive_only = relation.relation_logits(q, pos)
    both = relation.relation_logits(q, pos, neg)
    np.testing.assert_allclose(both, positive_only - relation.pair_scores(q, neg), atol=1e-6)
    mixed = relation.relation_logits(q, pos, neg, has_negatives=np.array([1, 0, 1]))
    np.testing.assert_allclose(mixed[:, 1], positive_only[:, 1], atol=1e-6)
    np.testing.assert_allclose(mixed[:, 0], both[:, 0], atol=1e-6)


def test_prototypes_are_task_major_means():
    support = np.arange(2 * 3 * 2, dtype=np.float32).reshape(6, 2)  # 3 tasks x 2 shots
    np.testing.assert_allclose(class_prototypes(support, 3, 2),
                               [[1, 2], [5, 6], [9, 10]])


def test_meta_model_scores_an_episode(spec, users):
    model = build_meta_model(spec, TINY)
    embedding = model(users)  # [24, 8]
    logits = model.score(embedding[:10], embedding[10:13], embedding[13:16])
    assert logits.shape == (10, 3)


# --------------------------------------------------------------------------- Eq. 1


def test_eq1_normalises_per_task_and_sums_tasks():
    labels = np.array([[1, 0], [0, 0], [1, 1]], np.float32)
    mask = np.array([[1, 1], [1, 0], [0, 1]], np.float32)
    logits = np.array([[0.5, -1.0], [2.0, 3.0], [-0.3, 0.7]], np.float32)
    bce = np.logaddexp(0, logits) - labels * logits  # with logits
    expected = [(bce[0, 0] + bce[1, 0]) / 2, (bce[0, 1] + bce[2, 1]) / 2]
    np.testing.assert_allclose(per_task_loss(labels, logits, mask), expected, rtol=1e-6)
    assert float(masked_multitask_loss(labels, logits, mask)) == pytest.approx(sum(expected))


def test_eq1_task_without_labels_contributes_zero_not_nan():
    labels = np.zeros((4, 2), np.float32)
    mask = np.array([[1, 0]] * 4, np.float32)
    logits = np.ones((4, 2), np.float32)
    per_task = per_task_loss(labels, logits, mask).numpy()
    assert per_task[1] == 0.0 and np.isfinite(per_task).all()


def test_eq1_unlabelled_user_gets_zero_gradient_for_that_task():
    labels = tf.constant([[1.0, 1.0], [0.0, 1.0]])
    mask = tf.constant([[1.0, 0.0], [1.0, 1.0]])  # user 0 is unlabelled for task 1
    logits = tf.Variable([[0.2, 0.4], [-0.1, 0.3]])
    with tf.GradientTape() as tape:
        loss = masked_multitask_loss(labels, logits, mask)
    grad = tape.gradient(loss, logits).numpy()
    assert grad[0, 1] == 0.0
    assert np.all(grad[[0, 1, 1], [0, 0, 1]] != 0.0)


# --------------------------------------------------------------------------- schedule


def test_schedule_triangular_phase_then_warm_restarts():
    schedule = CyclicThenRestarts(base_lr=0.1, max_lr=1.0, step_size=10, cycles=1,
                                  first_period=10, t_mul=2.0, m_mul=0.5, min_lr=0.0)
    value = lambda step: float(schedule(step))  # noqa: E731
    assert value(0) == pytest.approx(0.1)
    assert value(5) == pytest.approx(0.55)
    assert value(10) == pytest.approx(1.0)
    assert value(15) == pytest.approx(0.55)
    assert value(20) == pytest.approx(1.0)  # SGDR period 0 starts at max_lr
    assert value(25) == pytest.approx(0.5)  # half-way down the first cosine
    assert value(29) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)), rel=1e-5)
    assert value(30) == pytest.approx(0.5)  # restart: period 1, peak x m_mul, 20 steps long
    assert value(40) == pytest.approx(0.25)
    assert value(50) == pytest.approx(0.25)  # period 2 starts at 10 + 20 steps
    assert value(20 + 10 + 20 + 40) == pytest.approx(0.125)  # period 3 starts
    assert value(20 + 10 + 20 + 40 + 80) == pytest.approx(0.0625)  # period 4 starts


def test_schedule_with_constant_periods_and_a_floor():
    schedule = build_schedule(ScheduleConfig(base_lr=0.01, max_lr=0.02, step_size=5, cycles=0,
                                             first_period=8, t_mul=1.0, m_mul=1.0,
                                             min_lr=0.001, restart_lr=0.01))
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(4)) == pytest.approx(0.0055)
    assert float(schedule(8)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(float(schedule(4)))


def test_schedule_serialises():
    schedule = build_schedule(ScheduleConfig())
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()
    for step in (0, 333, 801, 2500):
        assert float(restored(step)) == pytest.approx(float(schedule(step)))
    with pytest.raises(ValueError, match="base_lr"):
        ScheduleConfig(base_lr=1.0, max_lr=0.1)


# --------------------------------------------------------------------------- episodes


def _pool_labels(rng, users=40, tasks=4):
    mask = (rng.random((users, tasks)) < 0.6).astype(np.float32)
    labels = (rng.random((users, tasks)) < 0.4).astype(np.float32) * mask
    return labels, mask


def test_sampler_invariants_over_many_draws():
    rng = np.random.default_rng(7)
    labels, mask = _pool_labels(rng)
    for k in (1, 2, 3):
        for _ in range(200):
            pos, neg = sample_support(labels, mask, k, rng)
            assert pos.shape == neg.shape == (4, k)
            for t in range(4):
                assert len(set(pos[t])) == k and len(set(neg[t])) == k  # distinct users
                assert (mask[pos[t], t] == 1).all() and (labels[pos[t], t] == 1).all()
                assert (mask[neg[t], t] == 1).all() and (labels[neg[t], t] == 0).all()
    assert support_order(pos, neg).tolist() == pos.reshape(-1).tolist() + neg.reshape(-1).tolist()


def test_sampler_is_deterministic_given_the_seed_and_covers_the_class():
    labels, mask = _pool_labels(np.random.default_rng(8))
    draws = lambda seed: [sample_support(labels, mask, 1, np.random.default_rng(seed))  # noqa: E731
                          for _ in range(3)]
    first, again = draws(11), draws(11)
    for (p1, n1), (p2, n2) in zip(first, again):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(n1, n2)
    rng = np.random.default_rng(12)
    seen = {int(sample_support(labels, mask, 1, rng)[0][0, 0]) for _ in range(400)}
    assert seen == set(class_members(labels, mask, 0, True).tolist())


def test_sampler_positives_only():
    labels, mask = _pool_labels(np.random.default_rng(9))
    pos, neg = sample_support(labels, mask, 2, np.random.default_rng(0), negatives=False)
    assert pos.shape == (4, 2) and neg is None


def test_sampler_names_the_task_that_lacks_labels():
    labels = np.array([[1, 0], [0, 0], [1, 0]], np.float32)
    mask = np.array([[1, 1], [1, 1], [1, 0]], np.float32)
    with pytest.raises(ValueError, match=r"'married' has 0 labelled positives and 2 negatives"):
        sample_support(labels, mask, 1, np.random.default_rng(0), tasks=("kids", "married"))
    with pytest.raises(ValueError, match=r"'kids' has 2 labelled positives and 1 negatives"):
        sample_support(labels, mask, 2, np.random.default_rng(0), tasks=("kids", "married"),
                       negatives=True)
    sample_support(labels[:, :1], mask[:, :1], 2, np.random.default_rng(0), tasks=("kids",),
                   negatives=False)


def test_support_pool_keeps_enough_labelled_users_and_gathers_rows(spec):
    batch, _ = planted_users(spec, 64, seed=5)
    batches = [{k: v[i:i + 16] for k, v in batch.items()} for i in range(0, 64, 16)]
    pool = build_support_pool(batches, spec, pool_per_class=3)
    assert isinstance(pool, SupportPool)
    for positives, negatives in pool.class_counts().values():
        assert positives >= 3 and negatives >= 3
    assert pool.size < 64  # stopped once every class was filled
    rows = pool.gather(np.array([[0, 2]]))
    assert rows["heatmap/purchases"].shape == (2, 14, 24, 3)
    np.testing.assert_array_equal(rows["user_id"], pool.features["user_id"][[0, 2]])
    ids = set(pool.features["user_id"].tolist())
    assert ids <= set(batch["user_id"].tolist())


def test_support_pool_without_labels_is_an_error(spec):
    batch, _ = planted_users(spec, 8, seed=5)
    batch["mask"][:] = 0
    with pytest.raises(ValueError, match="no labelled users"):
        build_support_pool([batch], spec, pool_per_class=2)


def test_auroc_with_ties_and_a_missing_class():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(auroc([1, 1], [0.1, 0.2]))
