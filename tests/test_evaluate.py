"""evaluation/: metrics, subsamplers, baselines, leakage guards and the decision; the
end-to-end run is in test_evaluate_e2e.py."""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from conftest import SYNTHETIC_CONFIG

from evaluation.decision import check_targets, decide, gap_slope
from evaluation.metrics import average_precision, precision_recall_curve, roc_curve
from evaluation.protocol import zero_training_scores
from evaluation.sampling import (
    adaptation_mask,
    check_disjoint_users,
    check_label_periods,
    check_tasks_disjoint,
    imbalance_subsample,
    mask_labels,
    max_imbalance_total,
    positive_seeds,
    seed_subsample,
    unlabelled_background,
)
from evaluation.settings import (
    AUTO,
    IMBALANCE_RATIOS,
    MASKING,
    PROBE,
    SCRATCH,
    SEEDS_PU,
    TABLE3,
    ZERO,
    LeakageError,
)
from evaluation.store import UserStore
from evaluation.summary import summarise, table3
from model import baselines as bl
from model.baselines import HGB, LOGREG
from model.metrics import auroc
from schemas.config import load_config

# Keras' weight saving converts TensorFlow variables with np.array(); numpy 2 warns about it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

IDS = np.array([f"u{i:04d}" for i in range(1000)], dtype=object)
LABELS_10PCT = (np.arange(1000) % 10 == 0).astype(np.int8)  # 100 positives, 900 negatives


# --------------------------------------------------------------------------- metrics


def test_average_precision_and_auroc_known_answers():
    labels, scores = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    # ranks 1..4: precision 1/1 at recall 1/2, then 2/3 at recall 1 -> (1 + 2/3) / 2
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    assert auroc(np.array(labels), np.array(scores)) == pytest.approx(0.75)
    assert average_precision([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1, 1], [0.1, 0.8, 0.9]) == pytest.approx(1.0)
    # a tie across classes at the top: one threshold with precision 1/2
    assert average_precision([1, 0, 0], [0.9, 0.9, 0.1]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0, 0], [0.3, 0.4]))


def test_roc_and_precision_recall_curves():
    fpr, tpr = roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    recall, precision = precision_recall_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.5])


# --------------------------------------------------------------------------- baselines


def test_metrics_agree_with_scikit_learn_and_the_training_auroc():
    from sklearn.metrics import average_precision_score, roc_auc_score
    rng = np.random.default_rng(4)
    labels = (rng.random(300) < 0.2).astype(int)
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding makes ties
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores))
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(auroc([1, 1], [0.3, 0.4]))


def test_logistic_regression_learns_a_separable_toy_with_its_strength_chosen_by_cv():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] - 2 * x[:, 1] > 0).astype(np.int8)
    scores = bl.fit_linear_head(x, y).decision(x)
    assert auroc(y, scores) > 0.99
    assert ((scores > 0) == (y == 1)).mean() > 0.95


def test_logistic_regression_with_two_users_and_many_features():
    x = np.array([[1.0] * 30, [-1.0] * 30])
    scores = bl.fit_linear_head(x, [1, 0]).decision(x)  # too few to cross-validate: C = 1
    assert np.all(np.isfinite(scores)) and scores[0] > scores[1]


def test_gradient_boosting_learns_an_interaction_from_few_seeds():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    y = ((x[:, 0] > 0) & (x[:, 1] > 0)).astype(np.int8)  # no linear model ranks this well
    query = rng.normal(size=(400, 3))
    truth = ((query[:, 0] > 0) & (query[:, 1] > 0)).astype(np.int8)
    assert auroc(truth, bl.boosting_scores(x, y, query)) > 0.8


def test_classic_baselines_need_a_negative_except_cosine():
    x = np.eye(3)
    with pytest.raises(ValueError, match="negative"):
        bl.classic_scores(bl.LOGREG, x, [1, 1, 1], x, x)
    assert bl.classic_scores(bl.COSINE, x, [1, 1, 1], x, x).shape == (3,)
    with pytest.raises(ValueError, match="not a classic baseline"):
        bl.classic_scores("magic", x, [1, 0, 1], x, x)


def test_cosine_baseline_ranks_by_angle_to_the_positive_centroid():
    support = np.array([[1.0, 0.0], [1.0, 0.2], [-1.0, 0.0]])
    query = np.array([[2.0, 0.2], [0.0, 1.0], [-3.0, 0.0]])
    scores = bl.centroid_cosine_scores(support, [1, 1, 0], query)
    assert scores[0] == pytest.approx(1.0) and scores[0] > scores[1] > scores[2]


def test_aggregate_features_are_channel_and_hour_totals_and_one_hot_categories():
    from model.testing import tiny_spec
    spec = tiny_spec(days=3)
    batch = {"heatmap/purchases": np.zeros((2, 3, 24, 3), np.float32),
             "heatmap/points": np.zeros((2, 3, 24, 1), np.float32),
             "demo/numeric": np.array([[0.5], [0.0]], np.float32),
             "demo/numeric_missing": np.array([[0.0], [1.0]], np.float32),
             "demo/gender": np.array([2, 0], np.int32)}
    batch["heatmap/purchases"][0, 0, 10, 2] = 3.0
    batch["heatmap/purchases"][0, 2, 10, 2] = 4.0
    features = bl.aggregate_features(batch, spec)
    names = bl.aggregate_feature_names(spec)
    assert features.shape == (2, len(names)) == (2, 3 + 24 + 1 + 24 + 2 + 4)
    assert features[0, names.index("purchases/channel_2")] == pytest.approx(np.log1p(7.0))
    assert features[0, names.index("purchases/hour_10")] == pytest.approx(np.log1p(7.0))
    assert features[0, names.index("demo/age")] == pytest.approx(0.5)
    gender = [names.index(f"demo/gender={v}") for v in ("missing", 1, 2, 3)]
    assert features[:, gender].tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]


def test_sparse_cell_totals_equal_the_dense_heatmaps_totals():
    from common.features import densify
    rng = np.random.default_rng(5)
    rows, shape = 7, (5, 24, 3)
    size = shape[0] * shape[1] * shape[2]
    owners = np.sort(rng.integers(0, rows - 1, 300))  # the last row has no cell
    cells = rng.integers(0, size, 300)  # some repeat within a row: they add up
    values = rng.normal(size=300).astype(np.float32)
    dense = densify(owners, cells, values, rows, shape)
    by_channel, by_hour = bl.sparse_heatmap_totals(owners, cells, values, rows, shape)
    dense_channel, dense_hour = bl.heatmap_totals(dense)
    np.testing.assert_allclose(by_channel, dense_channel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_hour, dense_hour, rtol=1e-5, atol=1e-5)
    assert by_channel.shape == (rows, 3) and by_hour.shape == (rows, 24)
    assert not by_channel[-1].any() and not by_hour[-1].any()


def test_probe_uses_the_embedding_beside_the_aggregates():
    rng = np.random.default_rng(2)
    labels = (rng.random(200) < 0.3).astype(np.int8)
    embedding = rng.normal(size=(200, 4)) + labels[:, None]  # the signal is in the embedding
    features = rng.normal(size=(200, 5))  # the aggregates carry none
    query = rng.normal(size=(300, 4))
    truth = (rng.random(300) < 0.3).astype(np.int8)
    query += truth[:, None]
    scores = bl.probe_scores(embedding, features, labels, query, rng.normal(size=(300, 5)),
                             embedding, features)
    assert auroc(truth, scores) > 0.85


# --------------------------------------------------------------------------- subsamplers


def test_adaptation_split_is_deterministic_and_task_independent():
    first = adaptation_mask(IDS, seed=0, fraction=0.5)
    assert np.array_equal(first, adaptation_mask(IDS, seed=0, fraction=0.5))
    assert 0.45 < first.mean() < 0.55
    assert not np.array_equal(first, adaptation_mask(IDS, seed=1, fraction=0.5))
    # a user's side depends on the user, not on which users are listed with it
    assert np.array_equal(first[::7], adaptation_mask(IDS[::7], seed=0, fraction=0.5))


@pytest.mark.parametrize("fraction", [1.0, 0.8, 0.2, 0.05, 0.01, 0.005])
def test_masking_keeps_the_prevalence_and_one_of_each_class(fraction):
    kept = mask_labels(IDS, LABELS_10PCT, fraction, key="0:task")
    positives = int(LABELS_10PCT[kept].sum())
    assert positives == max(1, round(fraction * 100))
    assert len(kept) - positives == max(1, round(fraction * 900))
    assert np.array_equal(kept, mask_labels(IDS, LABELS_10PCT, fraction, key="0:task"))
    assert len(np.unique(kept)) == len(kept)


def test_masking_levels_are_nested_and_depend_on_the_seed():
    levels = [mask_labels(IDS, LABELS_10PCT, f, key="0:task") for f in (0.8, 0.4, 0.05)]
    assert set(levels[2]) <= set(levels[1]) <= set(levels[0])
    other = mask_labels(IDS, LABELS_10PCT, 0.4, key="1:task")
    assert not np.array_equal(levels[1], other)


def test_imbalance_subsampler_fixes_the_total_and_reaches_each_ratio():
    total = max_imbalance_total(100, 900, IMBALANCE_RATIOS)
    assert total == 103  # 32:1 needs 100 positives and 3 negatives
    for ratio in IMBALANCE_RATIOS:
        rows = imbalance_subsample(IDS, LABELS_10PCT, ratio, total, key="0:t")
        positives = int(LABELS_10PCT[rows].sum())
        negatives = len(rows) - positives
        assert len(rows) == total and positives >= 1 and negatives >= 1
        assert positives / negatives == pytest.approx(ratio, rel=0.25)
        assert np.array_equal(rows, imbalance_subsample(IDS, LABELS_10PCT, ratio, total,
                                                           key="0:t"))
    with pytest.raises(ValueError, match="needs 1.. positives|positives"):
        imbalance_subsample(IDS, LABELS_10PCT, 32.0, 500, key="0:t")


def test_seed_sweep_draws_n_of_each_class_capped_and_nested():
    five = seed_subsample(IDS, LABELS_10PCT, 5, key="0:t")
    fifty = seed_subsample(IDS, LABELS_10PCT, 50, key="0:t")
    assert LABELS_10PCT[five].sum() == 5 and len(five) == 10
    assert set(five) <= set(fifty)
    capped = seed_subsample(IDS, LABELS_10PCT, 200, key="0:t")
    assert LABELS_10PCT[capped].sum() == 100 and len(capped) == 300


def test_pu_seeds_and_their_unlabelled_background_are_nested_and_disjoint():
    ten = positive_seeds(IDS, LABELS_10PCT, 10, key="0:t")
    fifty = positive_seeds(IDS, LABELS_10PCT, 50, key="0:t")
    assert LABELS_10PCT[ten].all() and len(ten) == 10 and set(ten) <= set(fifty)
    assert len(positive_seeds(IDS, LABELS_10PCT, 1000, key="0:t")) == 100  # capped
    rows = np.arange(1000) * 3  # store rows of the pool
    background = unlabelled_background(rows, IDS, rows[ten], 200, key="0:t")
    assert len(background) == 200 and not set(background) & set(rows[ten])
    assert set(unlabelled_background(rows, IDS, rows[ten], 50, key="0:t")) <= set(background)


def test_subsamplers_need_both_classes():
    with pytest.raises(ValueError, match="one positive and one negative"):
        mask_labels(IDS[:5], np.zeros(5), 0.5, key="k")


# --------------------------------------------------------------------------- leakage guards


def test_target_labels_must_come_after_the_feature_window():
    config = load_config(SYNTHETIC_CONFIG)
    tasks = [t.name for t in config.target_tasks]
    check_label_periods(config, config.window.end, tasks)  # the shipped config is fine
    with pytest.raises(LeakageError, match="after window.end"):
        check_label_periods(config, config.window.end + dt.timedelta(days=1), tasks)
    early = dataclasses.replace(config.target_tasks[0], label_period_start=config.window.end)
    moved = dataclasses.replace(config, target_tasks=(early, *config.target_tasks[1:]))
    with pytest.raises(LeakageError, match=f"{early.name}.*not after the feature window"):
        check_label_periods(moved, config.window.end, tasks)
    with pytest.raises(LeakageError, match="not a target task"):
        check_label_periods(config, config.window.end, ["married"])


def test_source_and_target_tasks_must_be_disjoint():
    check_tasks_disjoint(["married", "pet_owner"], ["brand_a"])
    with pytest.raises(LeakageError, match=r"\['married'\].*unseen"):
        check_tasks_disjoint(["married", "pet_owner"], ["brand_a", "married"])


def test_scored_users_never_include_adaptation_users():
    check_disjoint_users(["u1", "u2"], ["u3"], "brand_a", "table3")
    with pytest.raises(LeakageError, match="brand_a.*masking.*1 scored user"):
        check_disjoint_users(["u1", "u2"], ["u2", "u3"], "brand_a", "masking")


# --------------------------------------------------------------------------- decision


def test_decision_against_the_published_model_and_the_scratch_fallback():
    cand = {"path": "m/new", "version": "new", f"mean_{ZERO}_aupr": 0.40,
            f"mean_{SCRATCH}_aupr": 0.30}
    pub = {"path": "m/old", "version": "old", f"mean_{ZERO}_aupr": 0.35}
    assert decide(cand, pub)["better"] is True
    worse = decide(cand, {**pub, f"mean_{ZERO}_aupr": 0.45})
    assert worse["better"] is False and "not higher" in worse["reason"]
    assert worse["published"]["version"] == "old"
    none = decide(cand, None, "no published model: models/published.json does not exist")
    assert none["better"] is True and "no published model" in none["reason"]
    assert none["published"] is None and "scratch" in none["reason"]
    assert decide({**cand, f"mean_{SCRATCH}_aupr": 0.5}, None, "none")["better"] is False
    assert decide(cand, {**pub, "path": "m/new"})["better"] is False
    assert decide({"path": "m/new"}, pub)["better"] is False
    # The nightly head decides: with the probe deployed, its AUPR is what must improve.
    probe = {**cand, f"mean_{PROBE}_aupr": 0.50}
    assert decide(probe, {**pub, f"mean_{PROBE}_aupr": 0.55}, method=PROBE)[
        "better"] is False
    assert decide({**probe, f"mean_{ZERO}_aupr": 0.2}, None, "none",
                     method=PROBE)["better"] is True
    missing = decide(cand, None, "none", method=PROBE)
    assert missing["better"] is False and PROBE in missing["reason"]


def test_table3_reports_the_difference_and_growth_rate_as_the_paper():
    rows = [{"task": t, "experiment": TABLE3, "level": 1.0, "method": m, "repeat": r,
             "auroc": a, "aupr": p}
            for t, m, r, a, p in [("a", SCRATCH, 0, 0.70, 0.40),
                                  ("a", SCRATCH, 1, 0.70, 0.50),
                                  ("a", ZERO, 0, 0.80, 0.50), ("a", ZERO, 1, 0.80, 0.50),
                                  ("b", SCRATCH, 0, 0.60, 0.20),
                                  ("b", ZERO, 0, 0.60, 0.25)]]
    table = table3(summarise(rows), ["a", "b"])
    a, b = table["rows"]
    assert a[f"{SCRATCH}_aupr"] == pytest.approx(0.45)
    assert a[f"{SCRATCH}_aupr_std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert a["diff_aupr"] == pytest.approx(0.05) and a["growth_aupr"] == pytest.approx(0.05 / 0.45)
    assert b["growth_aupr"] == pytest.approx(0.25)
    assert table["average"]["growth_aupr"] == pytest.approx((0.05 / 0.45 + 0.25) / 2)
    assert table["average"]["tasks_primary_better_aupr"] == 2


def _curve(experiment, gaps, levels, scratch=0.3):
    """Curve entries where Meta-Profile leads scratch by ``gaps`` at ``levels``."""
    out = []
    for level, gap in zip(levels, gaps):
        out += [{"experiment": experiment, "level": level, "method": SCRATCH,
                 "aupr_mean": scratch},
                {"experiment": experiment, "level": level, "method": ZERO,
                 "aupr_mean": scratch + gap}]
    return out


def _table(diffs, scratch=0.4):
    rows = [{"task": f"t{i}", "diff_aupr": d, "growth_aupr": d / scratch}
            for i, d in enumerate(diffs)]
    return {"rows": rows, "average": {"growth_aupr": float(np.mean([r["growth_aupr"]
                                                                     for r in rows]))}}


def _sweep(experiment, levels):
    return [{"experiment": experiment, "level": n, "method": m, "aupr_mean": v}
            for n, values in levels for m, v in zip((ZERO, PROBE, LOGREG, HGB),
                                                    values)]


def test_targets_are_met_only_when_the_figures_say_so():
    masking = _curve(MASKING, [0.01, 0.02, 0.05], [1.0, 0.2, 0.01])  # widens as labels go
    pu = _sweep(SEEDS_PU, ((5, (0.1, 0.1, 0.5, 0.5)),  # below the range: not checked
                           (10, (0.5, 0.6, 0.5, 0.4)), (100, (0.5, 0.56, 0.5, 0.4)),
                           (300, (0.5, 0.52, 0.5, 0.4)), (1000, (0.48, 0.49, 0.5, 0.4))))
    curves = {MASKING: masking, SEEDS_PU: pu}
    spans = {SEEDS_PU: [{"level": 10, "ratio_low": 1.05, "ratio_high": 1.3},
                        {"level": 100, "ratio_low": 0.98, "ratio_high": 1.25}]}
    table = _table([0.05, 0.04, -0.01])
    table["average"].update({f"{PROBE}_aupr": 0.6, f"{LOGREG}_aupr": 0.5,
                             f"{SCRATCH}_auroc": 0.6})
    whole, few, many, scratch, every, masked, auto = check_targets(table, curves, spans)
    assert whole["met"] is True and "1.20" in whole["evidence"]
    # 1.20 [1.05, 1.30] at 10 seeds; 1.12 at 100, but its interval reaches below 1
    assert few["met"] is False and "missed at 100" in few["evidence"], few
    assert "= 1.20 [1.05, 1.30]" in few["evidence"]
    assert many["met"] is False and "missed at 1000" in many["evidence"]  # 0.98 < 1
    assert scratch["met"] is True
    assert every["met"] is False and "not on t2" in every["evidence"]
    assert masked["met"] is True
    assert auto["met"] is None  # no auto_head in this run
    table["average"][f"{AUTO}_aupr"] = 0.52
    pu.append({"experiment": SEEDS_PU, "level": 10, "method": AUTO, "aupr_mean": 0.49})
    auto = check_targets(table, curves, spans)[6]
    assert auto["met"] is False and "missed: 10 PU seeds" in auto["evidence"], auto
    assert "whole set: 0.520 / logreg 0.500 = 1.04" in auto["evidence"]
    spans[SEEDS_PU][1]["ratio_low"] = 1.01
    assert check_targets(table, curves, spans)[1]["met"] is True
    # without intervals the few-shot target is not measured; the others are
    assert check_targets(table, curves)[1]["met"] is None
    assert check_targets(table, curves)[2]["met"] is False
    every = check_targets(_table([0.05, 0.04]), curves)[4]
    assert every["met"] is False  # above on every task, but (0.125 + 0.1) / 2 = 11 % < 15 %
    every = check_targets(_table([0.1, 0.1]), curves)[4]
    assert every["met"] is True


def test_the_whole_set_ratio_is_measured_without_training_from_scratch():
    whole = [{"experiment": TABLE3, "level": 1.0, "method": m, "aupr_mean": v}
             for m, v in ((ZERO, 0.30), (PROBE, 0.393), (LOGREG, 0.431))]
    spans = {TABLE3: [{"level": 1.0, "ratio_low": 0.868, "ratio_high": 0.944}]}
    target = check_targets({"rows": [], "average": {}}, {TABLE3: whole}, spans)[0]
    assert target["met"] is False
    assert target["evidence"] == "meta_profile_probe 0.393 / logreg 0.431 = 0.91 [0.87, 0.94]"


def test_targets_not_measured_are_reported_as_such():
    targets = check_targets({"rows": [], "average": {}}, {})
    assert [t["met"] for t in targets] == [None] * 7


def test_gap_slope_follows_the_level_order_given():
    entries = _curve(MASKING, [0.0, 0.1], [1.0, 0.5])
    assert gap_slope(entries, [1.0, 0.5])[1] == pytest.approx(0.1)
    assert gap_slope(entries, [0.5, 1.0])[1] == pytest.approx(-0.1)


# --------------------------------------------------------------------------- store, zero-training


def test_user_store_round_trips_dense_batches_and_indexes_lazily():
    from model.network import feature_keys
    from model.testing import planted_users, tiny_spec
    spec = tiny_spec(days=7)
    batch, _ = planted_users(spec, 20, seed=3)
    store = UserStore(spec, feature_keys(spec))
    store.add({k: v[:12] for k, v in batch.items()})
    store.add({k: v[12:] for k, v in batch.items()})
    store.finish()
    rows = store.rows(["user-3-000005", "user-3-000017"])
    dense = store.batch(rows)
    for key in feature_keys(spec):
        np.testing.assert_array_equal(dense[key], batch[key][[5, 17]])
    lazy = store.lazy(np.arange(20))["heatmap/purchases"]
    assert len(lazy) == 20 and lazy.shape == batch["heatmap/purchases"].shape
    np.testing.assert_array_equal(np.take(lazy, [3, 1], axis=0), batch["heatmap/purchases"][[3, 1]])
    np.testing.assert_array_equal(lazy[4:9], batch["heatmap/purchases"][4:9])
    np.testing.assert_array_equal(np.asarray(lazy), batch["heatmap/purchases"])
    assert store.nbytes < sum(v.nbytes for v in batch.values())


def test_zero_training_on_stored_embeddings_equals_prototype_scores():
    import keras

    from model.adapt import embed, prototype_scores
    from model.network import build_meta_model
    from model.settings import ModelConfig
    from model.testing import planted_users, tiny_spec
    keras.utils.set_random_seed(2)
    spec = tiny_spec(days=7)
    model = build_meta_model(spec, ModelConfig(width=1 / 32, embedding_dim=8,
                                               relation_units=(8, 4), demo_units=4))
    batch, labels = planted_users(spec, 24, seed=4)
    support = {k: v[:12] for k, v in batch.items()}
    query = {k: v[12:] for k, v in batch.items()}
    expected = prototype_scores(model, support, labels[:12], query)
    got = zero_training_scores(model, embed(model, support), labels[:12], embed(model, query))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_user_store_keeps_source_labels_masks_and_splits():
    from model.network import feature_keys
    from model.testing import planted_users, tiny_spec
    spec = tiny_spec(days=7)
    batch, _ = planted_users(spec, 20, seed=3)
    store = UserStore(spec, feature_keys(spec))
    store.add({k: v[:12] for k, v in batch.items()}, "train")
    store.add({k: v[12:] for k, v in batch.items()}, "test")
    store.finish()
    np.testing.assert_array_equal(store.source_labels, batch["labels"])
    np.testing.assert_array_equal(store.source_mask, batch["mask"])
    assert list(store.splits) == ["train"] * 12 + ["test"] * 8


def test_source_prototypes_average_every_labelled_user_and_skip_one_class_tasks():
    from model.task_scores import source_prototypes
    embeddings = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [9.0, 9.0]])
    labels = np.array([[1, 1], [1, 1], [0, 1], [0, 1], [1, 0]])
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [0, 0]])  # user 4 is unlabelled
    protos = source_prototypes(embeddings, labels, mask, ("a", "b"), min_per_class=2)
    assert protos.tasks == ("a",) and protos.skipped == ("b",)
    np.testing.assert_allclose(protos.positive, [[2.0, 0.0]])
    np.testing.assert_allclose(protos.negative, [[0.0, 3.0]])
    assert protos.counts == ((2, 2),)
    with pytest.raises(ValueError, match="must both be"):
        source_prototypes(embeddings, labels[:4], mask[:4], ("a", "b"))


def test_task_score_features_are_the_relation_logits_against_the_source_prototypes():
    import keras

    from model.network import build_meta_model
    from model.settings import ModelConfig
    from model.task_scores import source_prototypes, task_score_features
    from model.testing import tiny_spec
    keras.utils.set_random_seed(5)
    spec = tiny_spec(days=7)
    model = build_meta_model(spec, ModelConfig(width=1 / 32, embedding_dim=8,
                                               relation_units=(8, 4), demo_units=4))
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(30, 8)).astype(np.float32)
    labels = rng.integers(0, 2, size=(30, 3))
    protos = source_prototypes(embeddings, labels, np.ones_like(labels), spec.tasks)
    got = task_score_features(model, embeddings, protos, batch_size=7)  # several batches
    assert got.shape == (30, 3)
    for t in range(3):
        expected = keras.ops.convert_to_numpy(model.score(
            embeddings, protos.positive[t:t + 1], protos.negative[t:t + 1]))[:, 0]
        np.testing.assert_allclose(got[:, t], expected, rtol=1e-5, atol=1e-5)
    assert task_score_features(model, embeddings, source_prototypes(
        embeddings, labels, np.zeros_like(labels), spec.tasks)).shape == (30, 0)


def test_a_trained_methods_support_is_capped_keeping_the_prevalence_and_nesting():
    from evaluation.protocol import Support, capped_support
    ids = np.array([f"u{i}" for i in range(100)], dtype=object)
    labels = np.r_[np.ones(20, np.int8), np.zeros(80, np.int8)]
    support = Support(np.arange(100), labels, np.arange(100))
    assert capped_support(support, None, ids, 0) is support
    assert capped_support(support, 100, ids, 0) is support
    small, large = capped_support(support, 10, ids, 0), capped_support(support, 50, ids, 0)
    assert len(small.rows) == 10 and small.labels.sum() == 2  # 20 % positives kept
    assert len(large.rows) == 50 and large.labels.sum() == 10
    assert set(small.rows) <= set(large.rows)
    np.testing.assert_array_equal(small.labels, labels[small.rows])
    np.testing.assert_array_equal(large.reference, support.reference)
