"""evaluation/: metrics, subsamplers, baselines, leakage guards, the decision, and one
tiny end-to-end evaluation over TFRecords written here with TensorFlow's own writer."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SYNTHETIC_CONFIG

from evaluation.decision import check_targets, decide, gap_slope
from evaluation.metrics import average_precision, precision_recall_curve, roc_curve
from evaluation.protocol import ScratchCache, zero_training_scores
from evaluation.run import evaluate
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
    IMBALANCE_RATIOS,
    MASKING,
    METHODS,
    PROBE,
    RESULT_COLUMNS,
    SCRATCH,
    SEEDS,
    SEEDS_PU,
    TABLE3,
    TRAINED_METHODS,
    ZERO,
    EvalConfig,
    LeakageError,
)
from evaluation.store import UserStore
from evaluation.summary import summarise, table3
from model import baselines as bl
from model.baselines import COSINE, HGB, LOGREG
from model.metrics import auroc
from schemas.config import load_config
from schemas.contracts import LABELS

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
    seeds = _sweep(SEEDS, ((5, (0.1, 0.1, 0.5, 0.5)),  # below the range: not checked
                              (10, (0.5, 0.6, 0.5, 0.4)), (300, (0.5, 0.7, 0.6, 0.6))))
    pu = _sweep(SEEDS_PU, ((10, (0.5, 0.6, 0.5, 0.4)), (100, (0.5, 0.52, 0.5, 0.4))))
    curves = {MASKING: masking, SEEDS: seeds, SEEDS_PU: pu}
    table = _table([0.05, 0.04, -0.01])
    table["average"].update({f"{PROBE}_aupr": 0.6, f"{LOGREG}_aupr": 0.5,
                             f"{SCRATCH}_auroc": 0.6})
    whole, swept, swept_pu, scratch, every, masked = check_targets(table, curves)
    assert whole["met"] is True and "1.20" in whole["evidence"]
    assert swept["met"] is True and "= 1.17" in swept["evidence"]
    assert swept_pu["met"] is False and "missed at 100" in swept_pu["evidence"]  # 1.04
    assert scratch["met"] is True
    assert every["met"] is False and "not on t2" in every["evidence"]
    assert masked["met"] is True
    every = check_targets(_table([0.05, 0.04]), curves)[4]
    assert every["met"] is False  # above on every task, but (0.125 + 0.1) / 2 = 11 % < 15 %
    every = check_targets(_table([0.1, 0.1]), curves)[4]
    assert every["met"] is True


def test_targets_not_measured_are_reported_as_such():
    targets = check_targets({"rows": [], "average": {}}, {})
    assert [t["met"] for t in targets] == [None] * 6


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
    from model.network import ModelConfig, build_meta_model
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


# --------------------------------------------------------------------------- end to end

DS = dt.date(2026, 6, 30)
DAYS = 14
TASKS = ("brand_luxe_cosmetics", "brand_trail_shoes")


def _write_heatmaps(config, users: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Planted users as GZIP TFRecord shards + manifest, written with tf.io.TFRecordWriter."""
    import tensorflow as tf

    from model.testing import planted_users
    from schemas.input_spec import InputSpec
    from schemas.tfrecord_spec import spec_document
    spec = InputSpec.from_config(config)
    batch, target = planted_users(spec, users, seed=11)
    ids = np.array([u.decode() for u in batch["user_id"]], dtype=object)
    root = f"{config.storage.uri('heatmaps')}/ds={DS}"
    splits = {"train": [], "validation": [], "test": []}
    for i in range(users):
        splits[("train", "train", "validation", "test")[i % 4]].append(i)
    manifest = {"spec": spec_document(config), "splits": {},
                "numeric_normalisation": {n: {"mean": 0.0, "std": 1.0} for n in spec.numeric}}
    for split, rows in splits.items():
        os.makedirs(f"{root}/{split}")
        path = f"{split}/part-00000.tfrecord.gz"
        with tf.io.TFRecordWriter(f"{root}/{path}", tf.io.TFRecordOptions(
                compression_type="GZIP")) as writer:
            for i in rows:
                writer.write(_example(batch, spec, i).SerializeToString())
        data = open(f"{root}/{path}", "rb").read()
        manifest["splits"][split] = {"examples": len(rows), "shards": [
            {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    with open(f"{root}/_manifest.json", "w") as fh:
        json.dump(manifest, fh)
    open(f"{root}/_SUCCESS", "w").close()
    return ids, target


def _example(batch: dict, spec, i: int):
    import tensorflow as tf

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def text(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {"user_id": text(batch["user_id"][i])}
    for name, _ in spec.modalities:
        flat = batch[f"heatmap/{name}"][i].reshape(-1)  # (day*24+hour)*C+channel order
        cells = np.flatnonzero(flat)
        features[f"{name}/index"] = ints(cells.tolist())
        features[f"{name}/value"] = floats(flat[cells].tolist())
    for f, name in enumerate(spec.numeric):
        missing = batch["demo/numeric_missing"][i, f] > 0
        features[f"demo/{name}"] = floats([np.nan if missing else batch["demo/numeric"][i, f]])
    vocabularies = {c.name: c.vocabulary for c in CONFIG_CATEGORICAL}
    for name, _ in spec.categorical:
        code = int(batch[f"demo/{name}"][i])
        features[f"demo/{name}"] = text(vocabularies[name][code - 1].encode() if code else b"")
    for t, task in enumerate(spec.tasks):
        features[f"label/{task}"] = ints([int(batch["labels"][i, t])])
        features[f"mask/{task}"] = ints([int(batch["mask"][i, t])])
    return tf.train.Example(features=tf.train.Features(feature=features))


CONFIG_CATEGORICAL = load_config(SYNTHETIC_CONFIG).demographics.categorical


def _write_target_labels(config, ids: np.ndarray, target: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    rows = [(u, TASKS[0], int(y)) for u, y in zip(ids, target)]
    noisy = rng.random(len(ids)) < 0.7  # the second task labels 70 % of the users
    rows += [(u, TASKS[1], int(y if rng.random() < 0.8 else 1 - y))
             for u, y, keep in zip(ids, target, noisy) if keep]
    rows += [("not-in-heatmaps", TASKS[0], 1)]
    os.makedirs(config.storage.uri("target_labels"))
    pq.write_table(pa.Table.from_pylist([dict(zip(LABELS.names, r)) for r in rows],
                                        schema=LABELS),
                   f"{config.storage.uri('target_labels')}/part-0.parquet")


def _tiny_artifact(config, version: str, seed: int) -> str:
    import keras

    from model.artifact import save_artifact
    from model.network import ModelConfig, build_meta_model
    from schemas.input_spec import InputSpec
    from schemas.tfrecord_spec import spec_document
    keras.utils.set_random_seed(seed)
    spec = InputSpec.from_config(config)
    cfg = ModelConfig(width=1 / 32, embedding_dim=8, relation_units=(8, 4), demo_units=4)
    return save_artifact(build_meta_model(spec, cfg), cfg, spec, spec_document(config), {},
                         "0" * 64, config.storage.uri("models"), version=version)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    config = load_config(SYNTHETIC_CONFIG, overrides=[
        f"storage.root={tmp / 'data'}", f"window.days={DAYS}", "value_transform=none"])
    ids, target = _write_heatmaps(config)
    _write_target_labels(config, ids, target)
    return config, _tiny_artifact(config, "v-candidate", 1), _tiny_artifact(config, "v-old", 2)


def test_end_to_end_tiny_evaluation_writes_the_report(tiny_world, tmp_path, capsys):
    from common.registry import publish
    from evaluation import cli as eval_cli
    config, candidate, old = tiny_world
    publish(config, old)
    out = tmp_path / "report"
    overrides = [arg for o in (f"storage.root={config.storage.root}", f"window.days={DAYS}",
                               "value_transform=none") for arg in ("--set", o)]
    code = eval_cli.main(["evaluate", "--config", str(SYNTHETIC_CONFIG), *overrides,
                          "--model", candidate, "--out", str(out), "--compare-published",
                          "--tasks", ",".join(TASKS), "--repeats", "1",
                          "--masking-levels", "1,0.25", "--imbalance-ratios", "0.5,2",
                          "--seed-counts", "2,5", "--pu-seed-counts", "3,6",
                          "--pu-background", "20", "--fine-tune-epochs", "2",
                          "--figure-methods", "meta_profile,logreg,cosine",
                          "--seed-sweep-methods", "meta_profile,meta_profile_probe,logreg",
                          "--embed-batch-size", "64"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.strip().splitlines()[-1] == str(out)
    assert "task 2/2 brand_trail_shoes" in stdout  # progress lines
    files = set(os.listdir(out))
    assert {"results.json", "results.csv", "report.md", "decision.json", "table3.png",
            "figure3_label_masking.png", "figure4_class_imbalance.png", "seed_sweep.png",
            "seed_sweep_pu.png",
            "roc_curves.png", "pr_curves.png", "_SUCCESS"} <= files
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    # per task: table3 7 methods (the trained ones only here, to keep the test short), then
    # masking, imbalance, seeds and seeds_pu: 2 levels x 3 methods each
    assert len(rows) == 2 * (7 + 6 + 6 + 6 + 6)
    assert {r["method"] for r in rows} == set(METHODS)
    assert all(r["status"].startswith("ok") for r in rows), [r["status"] for r in rows]
    assert result["labels"][TASKS[0]]["without_heatmaps"] == 1
    assert result["leakage_checks"]["user_disjointness_checks_passed"] >= 2 * 7
    for r in rows:  # the test set is the same for every level of a task
        assert r["test_users"] == next(x["test_users"] for x in rows if x["task"] == r["task"])
        assert r["adaptation_users"] + r["test_users"] <= 150
    planted = [r for r in rows if r["task"] == TASKS[0] and r["experiment"] == TABLE3
               and r["method"] == LOGREG]
    assert planted[0]["auroc"] > 0.8  # the planted evening signal, through the whole pipeline
    masked = {r["level"]: r for r in rows if r["experiment"] == MASKING
              and r["method"] == ZERO and r["task"] == TASKS[0]}
    assert masked[0.25]["adaptation_users"] < masked[1.0]["adaptation_users"]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(RESULT_COLUMNS) and len(csv_lines) == len(rows) + 1
    report = (out / "report.md").read_text()
    assert "## Table 3" in report and "Growth rate" in report and "![" in report
    assert "## Targets" in report and len(result["targets"]) == 6
    pu = [r for r in rows if r["experiment"] == SEEDS_PU and r["level"] == 3.0]
    assert all(r["adaptation_positives"] == 3 and r["adaptation_users"] == 23 for r in pu)
    trained = {(c["method"], c["task"]) for c in result["learning_curves"]}
    assert {m for m, _ in trained} == set(TRAINED_METHODS)
    assert all(c["curve"][0][0] == 0 for c in result["learning_curves"])
    decision = json.loads((out / "decision.json").read_text())
    assert set(decision) == {"better", "method", "reason", "candidate", "published"}
    assert decision["published"]["version"] == "v-old"
    assert decision["method"] == PROBE  # the config's lookalike.head is the probe
    assert decision["better"] == (decision["candidate"][f"mean_{PROBE}_aupr"]
                                  > decision["published"][f"mean_{PROBE}_aupr"])
    assert result["published"]["rows"] and {r["method"] for r in result["published"]["rows"]} \
        == {PROBE}


def test_a_rerun_with_the_same_seeds_reproduces_the_metrics(tiny_world, tmp_path):
    config, candidate, _ = tiny_world
    cfg = EvalConfig(tasks=TASKS[:1], repeats=1, experiments=(TABLE3, SEEDS),
                        methods=(ZERO, PROBE, LOGREG, COSINE), seed_counts=(3,))
    first = evaluate(config, candidate, eval_cfg=cfg, out=str(tmp_path / "a"),
                        progress=lambda line: None)
    second = evaluate(config, candidate, eval_cfg=cfg, out=str(tmp_path / "b"),
                         progress=lambda line: None)
    a = json.loads((tmp_path / "a" / "results.json").read_text())["rows"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert [(r["auroc"], r["aupr"]) for r in a] == [(r["auroc"], r["aupr"]) for r in b]
    assert "not compared" in first["decision"]["reason"]
    assert second["decision"]["published"] is None


def test_evaluate_refuses_a_source_task_as_target(tiny_world):
    config, candidate, _ = tiny_world
    with pytest.raises(ValueError, match="not target tasks"):
        evaluate(config, candidate, eval_cfg=EvalConfig(tasks=("married",)))


def test_scratch_cache_keys_on_everything_the_baseline_depends_on(tmp_path):
    from model.adapt import AdaptConfig
    cache = ScratchCache(str(tmp_path), "sha-a", {"width": 0.25})
    budget = AdaptConfig(seed=1)
    key = cache.key(budget, ["u1", "u2"], [1, 0], ["u3"])
    assert cache.get(key) is None and cache.misses == 1
    cache.put(key, np.array([0.5]), {"best_epoch": 2, "curve": [[0, 0.1]]})
    scores, extra = cache.get(key)
    assert scores.tolist() == [0.5] and extra["best_epoch"] == 2 and cache.hits == 1
    others = {cache.key(AdaptConfig(seed=2), ["u1", "u2"], [1, 0], ["u3"]),
              cache.key(budget, ["u1", "u2"], [0, 1], ["u3"]),
              cache.key(budget, ["u1", "u2"], [1, 0], ["u4"]),
              ScratchCache(str(tmp_path), "sha-b", {"width": 0.25}).key(
                  budget, ["u1", "u2"], [1, 0], ["u3"]),
              ScratchCache(str(tmp_path), "sha-a", {"width": 0.5}).key(
                  budget, ["u1", "u2"], [1, 0], ["u3"])}
    assert key not in others and len(others) == 5
    (tmp_path / f"{key}.json").write_text("{truncated")  # a killed writer: a miss, not a crash
    assert cache.get(key) is None


def test_quick_preset_is_small():
    quick = EvalConfig.quick_preset()
    assert quick.seed_list == (0,) and quick.max_tasks == 2
    assert len(quick.masking_levels) == 3 and len(quick.imbalance_ratios) == 3
    with pytest.raises(ValueError, match="methods"):
        EvalConfig(methods=("magic",))


def test_linear_head_folds_the_standardisation_into_its_weights():
    from sklearn.linear_model import LogisticRegression

    from model import baselines as bl
    rng = np.random.default_rng(4)
    x = rng.normal(loc=3.0, scale=[1.0, 10.0, 0.1], size=(120, 3))
    y = (x[:, 0] + x[:, 1] / 10 + rng.normal(size=120) > 3).astype(np.int8)
    reference = rng.normal(loc=3.0, scale=[1.0, 10.0, 0.1], size=(500, 3))
    head = bl.fit_linear_head(x, y, reference)
    mean, std = bl.standardiser(reference)
    direct = LogisticRegression(C=head.strength, max_iter=2000).fit((x - mean) / std, y)
    # Equal up to the solver's tolerance (the CV refit starts from the folds' coefficients).
    np.testing.assert_allclose(head.decision(x), direct.decision_function((x - mean) / std),
                               atol=1e-2)
    assert head.cv_aupr is not None and 0.0 <= head.cv_aupr <= 1.0
    assert bl.LinearHead.from_dict(head.to_dict()).decision(x[:3]) == pytest.approx(
        head.decision(x[:3]))


def test_campaign_heads_score_each_column_with_its_own_head():
    import keras

    from model.relation import RelationModule
    from model.scoring import CampaignHeads, RelationWeights, sigmoid
    keras.utils.set_random_seed(2)
    relation = RelationModule((6, 3))
    relation.build((None, 4))
    weights = RelationWeights.from_module(relation)
    rng = np.random.default_rng(1)
    emb, feat = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 2))
    prototype = rng.normal(size=(1, 4)).astype(np.float32)
    w, b = rng.normal(size=(6, 1)), np.array([0.3])
    heads = CampaignHeads(columns=2, relation=weights, prototype_columns=np.array([1]),
                          positive_part=weights.support_part(prototype),
                          probe_columns=np.array([0]), probe_weights=w, probe_bias=b)
    scores = heads.scores(emb, feat)
    np.testing.assert_allclose(scores[:, 0], sigmoid(np.hstack([emb, feat]) @ w[:, 0] + b[0]))
    np.testing.assert_allclose(scores[:, 1], sigmoid(weights.logits(weights.user_part(emb),
                                                                    weights.support_part(prototype)))[:, 0], rtol=1e-6)
    assert heads.needs_features
