"""evaluation/ end to end: a tiny evaluation over TFRecords written here with TensorFlow's
own writer, its rerun, the scratch cache, and the linear and campaign heads."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SYNTHETIC_CONFIG

from evaluation.protocol import ScratchCache
from evaluation.run import evaluate
from evaluation.settings import (
    MASKING,
    METHODS,
    PROBE,
    RESULT_COLUMNS,
    SEEDS,
    SEEDS_PU,
    TABLE3,
    TRAINED_METHODS,
    ZERO,
    EvalConfig,
)
from model import baselines as bl
from model.baselines import COSINE, LOGREG
from schemas.config import load_config
from schemas.contracts import LABELS

# Keras' weight saving converts TensorFlow variables with np.array(); numpy 2 warns about it.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")]

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
    from model.network import build_meta_model
    from model.settings import ModelConfig
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
    # per task: table3 9 methods (the trained ones only here, to keep the test short), then
    # masking, imbalance, seeds and seeds_pu: 2 levels x 3 methods each
    assert len(rows) == 2 * (9 + 6 + 6 + 6 + 6)
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
    assert "## Targets" in report and len(result["targets"]) == 7
    # every AUPR has its bootstrap interval, and each ratio its interval over tasks too
    assert all(0 <= r["aupr_low"] <= r["aupr_high"] <= 1 for r in rows)
    assert sum(r["aupr_low"] < r["aupr"] < r["aupr_high"] for r in rows) > len(rows) / 2
    (whole,) = result["intervals"][TABLE3]
    assert whole["ratio_low"] <= whole["ratio"] <= whole["ratio_high"]
    assert (whole["tasks"], whole["repeats"], whole["replicates"]) == (2, 1, 200)
    assert whole["meta_method"] in ("meta_profile", "meta_profile_probe",
                                    "meta_profile_tasks", "meta_profile_fine_tuned")
    scores = result["model"]["source_task_scores"]  # prototypes of the training split
    assert scores["split"] == "train" and scores["tasks"]
    assert sorted(scores["tasks"] + scores["skipped"]) == sorted(
        t.name for t in config.source_tasks)
    assert "95 % interval" in report
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
