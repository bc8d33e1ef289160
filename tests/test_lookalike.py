"""The nightly lookalike on a tiny snapshot and an untrained tiny model: embed (Spark and TF
engines), campaign checks and support sets, one-pass scoring, and segment export."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SYNTHETIC_CONFIG

from schemas.config import load_config
from schemas.contracts import (
    CAMPAIGN_REGISTRY,
    CAMPAIGN_SEEDS,
    EMBEDDINGS,
    LABELS,
    OPT_OUTS,
    SNAPSHOT,
    check_table,
    demographics_schema,
)

DS = dt.date(2026, 6, 30)
DAYS = 3
USERS = [f"u{i:02d}" for i in range(40)]
SEEDS = [  # campaign, user, label
    ("cmp_top", "u00", 1), ("cmp_top", "u01", 1), ("cmp_top", "u02", 1), ("cmp_top", "u03", 1),
    ("cmp_top", "u03", 1),            # a repeated row
    ("cmp_top", "u04", 0),            # an explicit negative
    ("cmp_top", "u99", 1),            # not in the snapshot
    ("cmp_top", "u06", 1),            # opted out
    ("cmp_thr", "u10", 1), ("cmp_thr", "u11", 1), ("cmp_thr", "u12", 1),
    ("cmp_paused", "u20", 1), ("cmp_paused", "u21", 1),
    ("cmp_few", "u30", 1),            # fewer than lookalike.min_seeds
    ("cmp_bad", "u31", 1), ("cmp_bad", "u32", 1),
]
REGISTRY = [  # id, status, segment_size, score_threshold, excludes
    ("cmp_top", "active", 5, None, ["cmp_paused"]),
    ("cmp_thr", "active", None, 0.0001, []),
    ("cmp_paused", "paused", 5, None, []),
    ("cmp_few", "active", 5, None, []),
    ("cmp_bad", "active", 5, 0.5, []),  # both a size and a threshold
]
OPTED_OUT = ["u06", "u07"]


def write_world(config) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for user in USERS:
        for m in config.modalities:
            n = int(rng.integers(1, 6))
            cells = sorted({(int(rng.integers(DAYS)), int(rng.integers(24)),
                             int(rng.integers(m.num_channels))) for _ in range(n)})
            values = [float(rng.integers(1, 500)) for _ in cells]
            rows.append({"user_id": user, "modality": m.name, "day": [c[0] for c in cells],
                         "hour": [c[1] for c in cells], "channel": [c[2] for c in cells],
                         "value": values, "text": ""})
    snapshot = f"{config.storage.uri('snapshots')}/ds={DS}"
    os.makedirs(snapshot)
    pq.write_table(pa.Table.from_pylist(rows, schema=SNAPSHOT), f"{snapshot}/part-0.parquet")
    with open(f"{snapshot}/_manifest.json", "w") as fh:
        json.dump({"ds": DS.isoformat(), "window_days": DAYS}, fh)
    open(f"{snapshot}/_SUCCESS", "w").close()
    schema = demographics_schema(config)
    demo = [{"user_id": u, "age": float(20 + i), "household_size": float(1 + i % 4),
             "gender": ["female", "male", "other"][i % 3], "region": "north"}
            for i, u in enumerate(USERS)]
    tables = {
        "demographics": pa.Table.from_pylist(demo, schema=schema),
        "source_labels": pa.Table.from_pylist([], schema=LABELS),
        "campaign_seeds": pa.Table.from_pylist(
            [dict(zip(CAMPAIGN_SEEDS.names, s)) for s in SEEDS], schema=CAMPAIGN_SEEDS),
        "campaign_registry": pa.Table.from_pylist(
            [{"campaign_id": c, "name": c.upper(), "status": st, "segment_size": size,
              "score_threshold": thr, "exclude_campaigns": ex}
             for c, st, size, thr, ex in REGISTRY], schema=CAMPAIGN_REGISTRY),
        "opt_outs": pa.Table.from_pylist([{"user_id": u} for u in OPTED_OUT], schema=OPT_OUTS),
    }
    for key, table in tables.items():
        os.makedirs(config.storage.uri(key))
        pq.write_table(table, f"{config.storage.uri(key)}/part-0.parquet")


def tiny_model(config, root: str) -> str:
    import keras

    from model.artifact import save_artifact
    from model.network import build_meta_model
    from model.settings import ModelConfig
    from schemas.input_spec import InputSpec
    from schemas.tfrecord_spec import spec_document
    keras.utils.set_random_seed(5)
    spec = InputSpec.from_config(config)
    cfg = ModelConfig(width=1 / 32, embedding_dim=8, relation_units=(8, 4), demo_units=4)
    normalisation = {"age": {"mean": 40.0, "std": 10.0}, "household_size": {"mean": 2.0, "std": 1.0}}
    return save_artifact(build_meta_model(spec, cfg), cfg, spec, spec_document(config), {},
                         "0" * 64, root, version="v-test", normalisation=normalisation)


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lookalike")
    config = load_config(SYNTHETIC_CONFIG, overrides=[
        f"storage.root={tmp / 'data'}", f"window.days={DAYS}", "lookalike.min_seeds=2",
        "lookalike.holdout=0.0", "lookalike.control_share=0.3"])
    write_world(config)
    model = tiny_model(config, config.storage.uri("models"))
    from common import registry
    registry.publish(config, model)
    from jobs import campaigns, embed, export, score
    reports = {"embed": embed.run(spark, config, DS)}
    reports["campaigns"] = campaigns.run(spark, config, DS)
    reports["score"] = score.run(spark, config, DS)
    reports["export"] = export.run(config, DS)
    return config, model, reports


def segment(config, campaign):
    path = f"{config.storage.uri('segments')}/ds={DS}/campaign={campaign}"
    return pq.read_table(f"{path}/segment.parquet"), json.load(open(f"{path}/_manifest.json"))


def selection(config, campaign) -> list:
    """The users the score selected, in rank order: the segment's members and its control
    group together."""
    rows = segment(config, campaign)[0].to_pylist() + control(config, campaign).to_pylist()
    return [r["user_id"] for r in sorted(rows, key=lambda r: r["rank"])]


def control(config, campaign):
    import pyarrow.csv as pacsv
    path = f"{config.storage.uri('segments')}/ds={DS}/campaign={campaign}/control.csv"
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"user_id": pa.string()}))


def test_the_control_group_is_a_fixed_hash_of_campaign_and_user():
    from jobs.export import control_mask
    users = [f"user{i}" for i in range(20_000)]
    mask = control_mask("cmp_a", users, 0.1)
    assert abs(mask.mean() - 0.1) < 0.01
    # a user keeps their group whoever else is selected, and each campaign draws its own
    assert list(control_mask("cmp_a", users[::7], 0.1)) == list(mask[::7])
    assert (control_mask("cmp_b", users, 0.1) != mask).sum() > 1000
    assert not control_mask("cmp_a", users, 0.0).any()
    assert (mask <= control_mask("cmp_a", users, 0.2)).all()  # a larger share only adds


@pytest.mark.slow
def test_embeddings_cover_every_user_with_the_model_version(world, spark):
    config, model, reports = world
    table = pq.read_table(f"{config.storage.uri('embeddings')}/ds={DS}")
    check_table(table.select(EMBEDDINGS.names), EMBEDDINGS)
    assert sorted(table.column("user_id").to_pylist()) == USERS
    assert set(table.column("model_version").to_pylist()) == {"v-test"}
    assert reports["embed"]["users"] == 40 and reports["embed"]["embedding_dim"] == 8


@pytest.mark.slow
def test_spark_and_tensorflow_engines_give_the_same_embeddings(world, spark, tmp_path):
    # The TF engine runs on a copy of the world: the shared fixture's embeddings must stay
    # the Spark engine's, or the tests after this one would score other vectors.
    from jobs import embed, heatmaps
    config, model, _ = world
    spark_table = pq.read_table(f"{config.storage.uri('embeddings')}/ds={DS}").sort_by("user_id")
    shutil.copytree(config.storage.root, tmp_path / "data")
    copy = load_config(SYNTHETIC_CONFIG, overrides=[
        f"storage.root={tmp_path / 'data'}", f"window.days={DAYS}", "lookalike.min_seeds=2",
        "lookalike.holdout=0.0"])
    heatmaps.run(spark, copy, DS, partitions=1)
    embed.run_tf(copy, DS, model)
    tf_table = pq.read_table(f"{copy.storage.uri('embeddings')}/ds={DS}").sort_by("user_id")
    assert tf_table.column("user_id").to_pylist() == spark_table.column("user_id").to_pylist()
    np.testing.assert_allclose(np.stack(tf_table.column("embedding").to_numpy(zero_copy_only=False)),
                               np.stack(spark_table.column("embedding").to_numpy(zero_copy_only=False)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.stack(tf_table.column("features").to_numpy(zero_copy_only=False)),
                               np.stack(spark_table.column("features").to_numpy(zero_copy_only=False)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_campaign_checks_isolate_bad_campaigns_and_account_for_seeds(world):
    config, _, reports = world
    verdicts = reports["campaigns"]["campaigns"]
    assert sorted(verdicts) == ["cmp_bad", "cmp_few", "cmp_thr", "cmp_top"]  # active only
    assert verdicts["cmp_top"]["status"] == "ok" and verdicts["cmp_thr"]["status"] == "ok"
    assert verdicts["cmp_few"]["status"] == "failed"
    assert "min_seeds is 2" in verdicts["cmp_few"]["problems"][0]
    assert any("exactly one of segment_size" in p for p in verdicts["cmp_bad"]["problems"])
    seeds = verdicts["cmp_top"]["seeds"]
    assert (seeds["rows"], seeds["duplicate_rows"], seeds["support"], seeds["negative"],
            seeds["unknown"], seeds["opted_out"]) == (8, 1, 4, 1, 1, 1)


@pytest.mark.slow
def test_segments_respect_every_exclusion_and_size(world):
    from jobs.export import control_mask
    config, _, reports = world
    top, manifest = segment(config, "cmp_top")
    held = control(config, "cmp_top")
    users = set(top.column("user_id").to_pylist())
    controls = set(held.column("user_id").to_pylist())
    # the registry's 5 users, split by the fixed hash into the segment and its control group
    assert top.num_rows + held.num_rows == 5 and not users & controls
    assert list(control_mask("cmp_top", sorted(users | controls), 0.3)) == [
        u in controls for u in sorted(users | controls)]
    never = {u for c, u, _ in SEEDS if c in ("cmp_top", "cmp_paused")} | set(OPTED_OUT)
    assert not (users | controls) & never
    assert manifest["counts"]["selected"] == top.num_rows and manifest["model_version"] == "v-test"
    assert manifest["counts"]["control"] == held.num_rows
    assert manifest["control"]["share"] == 0.3 and "control.csv" in manifest["files"]
    # why this segment: the reach curve, the head's top features, why.png
    assert [p["reach"] >= r for p, r in zip(manifest["reach_curve"], (0.001, 0.005, 0.01))]
    assert len(manifest["reach_curve"]) == 8
    top_features = manifest["head"]["top_features"]
    assert 0 < len(top_features) <= 10 and all("feature" in f for f in top_features)
    folder = f"{config.storage.uri('segments')}/ds={DS}/campaign=cmp_top"
    png = open(f"{folder}/why.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and manifest["files"]["why.png"]["bytes"] == len(png)
    thr_controls = control(config, "cmp_thr").num_rows
    assert thr_controls > 0 and set(control(config, "cmp_thr").column_names) == {
        "user_id", "score", "rank"}
    thr, _ = segment(config, "cmp_thr")
    assert not set(thr.column("user_id").to_pylist()) & ({"u10", "u11", "u12"} | set(OPTED_OUT))
    assert min(thr.column("score").to_pylist()) >= 0.0001
    for failed in ("cmp_few", "cmp_bad"):
        assert not os.path.exists(f"{config.storage.uri('segments')}/ds={DS}/campaign={failed}")
        assert failed in reports["export"]["failed"]


@pytest.mark.slow
def test_measure_reads_the_segment_its_control_group_and_later_conversions(world, tmp_path,
                                                                           capsys):
    from pathlib import Path

    from jobs.measure import main
    config, _, _ = world
    treated = segment(config, "cmp_thr")[0].column("user_id").to_pylist()
    held = control(config, "cmp_thr").column("user_id").to_pylist()
    later = DS + dt.timedelta(days=3)
    rows = [f"{u},{later},10" for u in treated[:2] + held[:1]]
    rows += [f"u_new,{later},1", f"{treated[0]},{DS},5"]  # not scored; before --since
    conversions = tmp_path / "conversions.csv"
    conversions.write_text("user_id,time,value\n" + "\n".join(rows) + "\n")
    args = ["--config", str(SYNTHETIC_CONFIG), "--set", f"storage.root={config.storage.root}",
            "--set", f"window.days={DAYS}", "--ds", str(DS), "--conversions", str(conversions)]
    capsys.readouterr()
    assert main(args + ["--campaign", "cmp_thr", "--spend", "100"]) == 0
    document = json.loads(capsys.readouterr().out)
    groups = document["measurement"]["groups"]
    assert (groups["treated"]["converters"], groups["treated"]["members"]) == (2, len(treated))
    assert (groups["control"]["converters"], groups["control"]["members"]) == (1, len(held))
    assert (groups["population"]["converters"], groups["population"]["members"]) == (
        3, len(USERS))
    assert document["conversions"]["outside_population"] == 1
    assert document["conversions"]["before_since"] == 1
    assert document["measurement"]["cost"]["per_acquisition"] == 50.0
    out = Path(config.storage.uri("reports")) / "measure" / f"ds={DS}" / "campaign=cmp_thr"
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Segment's own lift" in (out / "report.md").read_text()
    # a campaign with no exported segment is refused, with what to run
    assert main(args + ["--campaign", "cmp_few"]) == 1
    assert "run `metaprofile export" in capsys.readouterr().err


def embedding_table(config):
    table = pq.read_table(f"{config.storage.uri('embeddings')}/ds={DS}")

    def column(name):
        return np.stack(table.column(name).to_numpy(zero_copy_only=False))
    return table.column("user_id").to_pylist(), column("embedding"), column("features")


def support(config, campaign):
    return json.load(open(f"{config.storage.uri('supports')}/ds={DS}/campaign={campaign}/"
                          f"support.json"))


def top_k(config, ids, scores, campaign, k):
    never = {u for c, u, _ in SEEDS if c in (campaign, "cmp_paused")} | set(OPTED_OUT)
    return [u for _, u in sorted((-s, u) for s, u in zip(scores, ids) if u not in never)[:k]]


@pytest.mark.slow
def test_probe_head_is_fitted_on_the_seeds_against_the_background(world):
    from model.baselines import aggregate_feature_names
    from schemas.input_spec import InputSpec
    config, _, reports = world
    ids, vectors, features = embedding_table(config)
    names = aggregate_feature_names(InputSpec.from_config(config))
    assert features.shape == (40, len(names)) and reports["embed"]["features"] == names
    head = support(config, "cmp_top")["head"]
    listed = {u for c, u, _ in SEEDS if c == "cmp_top"} & set(USERS)
    assert head["kind"] == "probe"
    assert (head["positives"], head["negatives"], head["background"]) == (4, 1, 40 - len(listed))
    assert len(head["weights"]) == vectors.shape[1] + features.shape[1]


@pytest.mark.slow
def test_top_k_equals_scoring_everyone_and_sorting(world):
    from model.baselines import LinearHead
    config, _, _ = world
    ids, vectors, features = embedding_table(config)
    head = LinearHead.from_dict(support(config, "cmp_top")["head"])
    scores = head.decision(np.hstack([vectors, features]))
    assert selection(config, "cmp_top") == top_k(config, ids, scores, "cmp_top", 5)


def night_with_head(world, spark, tmp_path, head: str):
    """The night's campaigns, scores and segments again with ``lookalike.head=head``, on a
    copy of the world's data (so the other tests see the probe heads in any order)."""
    from jobs import campaigns, export, score
    config, _, _ = world
    shutil.copytree(config.storage.root, tmp_path / "data")
    copy = load_config(SYNTHETIC_CONFIG, overrides=[
        f"storage.root={tmp_path / 'data'}", f"window.days={DAYS}", "lookalike.min_seeds=2",
        "lookalike.holdout=0.0", f"lookalike.head={head}"])
    campaigns.run(spark, copy, DS)
    score.run(spark, copy, DS)
    export.run(copy, DS)
    return copy


@pytest.mark.slow
def test_prototype_head_scores_with_the_relation_module(world, spark, tmp_path):
    from model.artifact import load_artifact
    from schemas.input_spec import InputSpec
    _, model, _ = world
    copy = night_with_head(world, spark, tmp_path, "prototype")
    ids, vectors, _ = embedding_table(copy)
    chosen = support(copy, "cmp_top")
    assert chosen["head"] == {"kind": "prototype"}
    artifact = load_artifact(model, InputSpec.from_config(copy))
    logits = np.asarray(artifact.model.score(vectors, np.array([chosen["prototype"]]),
                                             np.array([chosen["negative_prototype"]])))[:, 0]
    assert selection(copy, "cmp_top") == top_k(copy, ids, logits, "cmp_top", 5)


@pytest.mark.slow
def test_rerun_gives_identical_segments(world, spark):
    from jobs import export, score
    config, _, _ = world

    def digest():
        root = f"{config.storage.uri('segments')}/ds={DS}"
        return {c: hashlib.sha256(open(f"{root}/{c}/segment.csv", "rb").read()).hexdigest()
                for c in sorted(os.listdir(root))}
    before = digest()
    score.run(spark, config, DS)
    export.run(config, DS)
    assert digest() == before


@pytest.mark.slow
def test_one_campaign_run_fails_alone(world, spark, capsys):
    from jobs import campaigns
    config, _, _ = world
    args = ["--config", str(SYNTHETIC_CONFIG), "--ds", DS.isoformat(),
            "--set", f"storage.root={config.storage.root}", "--set", f"window.days={DAYS}",
            "--set", "lookalike.min_seeds=2", "--set", "lookalike.holdout=0.0"]
    assert campaigns.main([*args, "--campaign", "cmp_few"]) == campaigns.EXIT_CAMPAIGN_FAILED
    assert campaigns.main([*args, "--campaign", "cmp_top"]) == 0
    assert campaigns.main([*args, "--active"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == [
        "cmp_bad", "cmp_few", "cmp_thr", "cmp_top"]


def test_relation_in_numpy_equals_the_keras_module():
    import keras

    from model.relation import RelationModule
    from model.scoring import RelationWeights
    keras.utils.set_random_seed(1)
    relation = RelationModule((6, 3))
    relation.build((None, 5))
    rng = np.random.default_rng(0)
    q, p, n = (rng.normal(size=s).astype(np.float32) for s in [(7, 5), (4, 5), (4, 5)])
    weights = RelationWeights.from_module(relation)
    ours = weights.logits(weights.user_part(q), weights.support_part(p), weights.support_part(n))
    np.testing.assert_allclose(ours, np.asarray(relation.relation_logits(q, p, n)), rtol=1e-5,
                               atol=1e-6)


def test_quantiles_and_checks_are_pure():
    from jobs.campaigns import holdout_size, registry_problems
    from jobs.export import histogram_quantiles
    h = [0] * 1000
    h[500] = 10
    assert histogram_quantiles(h)["q50"] == pytest.approx(0.5005)
    assert holdout_size(100, 0.2, 10) == 0.2 and holdout_size(11, 0.2, 10) == 0.0
    assert registry_problems({"status": "gone", "segment_size": None, "score_threshold": None,
                              "exclude_campaigns": ["x"]}, {"a"}) == [
        "status 'gone' is not one of active, paused, archived",
        "set exactly one of segment_size and score_threshold",
        "exclude_campaigns names unknown campaign(s) ['x']"]


def test_holdout_lift_is_recall_at_the_cutoff_over_reach():
    from metaprofile.segment_check import holdout_lift
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.1])
    eligible = np.array([True] * 6 + [False, False])  # the last two are held-out seeds
    held = np.array([False] * 6 + [True, True])
    # Segment of 2 of 6 eligible users: cut-off 0.8; one of two held-out seeds is above it.
    assert holdout_lift(scores, eligible, held, 2) == pytest.approx(0.5 / (2 / 6))
    assert holdout_lift(scores, eligible, np.zeros(8, bool), 2) is None


@pytest.mark.slow
def test_dmp_side_by_side_reads_the_night_without_spark(world):
    from metaprofile.segment_check import dmp_lifts
    config, _, _ = world
    lifts = dmp_lifts(config, DS)
    assert set(lifts) == {"cmp_top", "cmp_thr"}  # exported campaigns only
    assert all(v is None for v in lifts.values())  # lookalike.holdout=0: nothing held out


@pytest.mark.slow
def test_the_demo_measures_both_segments_on_conversions_from_the_ground_truth(world):
    from metaprofile.demo import conversion_quality
    from metaprofile.segment_check import dmp_segments
    config, _, _ = world
    dmp = dmp_segments(config, DS)["cmp_top"]
    # the DMP's segment has the exported selection's size and holds no excluded user
    never = {u for c, u, _ in SEEDS if c in ("cmp_top", "cmp_paused")} | set(OPTED_OUT)
    assert len(dmp["members"]) == len(selection(config, "cmp_top")) and not (
        set(dmp["members"]) & never)
    # a world where exactly the exported selection of cmp_top adopts: lift = 1 / its share
    chosen = set(selection(config, "cmp_top"))
    truth = pa.table({"user_id": USERS, "p_top": [float(u in chosen) for u in USERS]})
    os.makedirs(config.storage.uri("ground_truth"), exist_ok=True)
    pq.write_table(truth, f"{config.storage.uri('ground_truth')}/part-0.parquet")
    try:
        lines = conversion_quality(config)
    finally:
        shutil.rmtree(config.storage.uri("ground_truth"))
    assert "no ad effect" in lines[0] and len(lines) == 2, lines  # cmp_thr has no p_thr
    assert f"Meta-Profile {len(USERS) / len(chosen):5.2f}x" in lines[1], lines


def test_top_eligible_takes_the_best_scored_eligible_rows():
    from metaprofile.segment_check import top_eligible
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    eligible = np.array([True, True, True, False, True])
    assert list(top_eligible(scores, eligible, 2)) == [0, 1]
    assert list(top_eligible(scores, eligible, 10)) == [0, 1, 2, 4]


def test_publish_refuses_a_model_its_decision_says_is_not_better(tmp_path, capsys):
    from metaprofile.cli import main
    config = load_config(SYNTHETIC_CONFIG, overrides=[f"storage.root={tmp_path / 'data'}"])
    model = tiny_model(config, config.storage.uri("models"))
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"better": False, "reason": "0.20 < 0.25 of scratch"}))
    args = ["publish", "--config", str(SYNTHETIC_CONFIG), "--set",
            f"storage.root={tmp_path / 'data'}", "--model", model, "--evaluation", str(decision)]
    published = tmp_path / "data" / "models" / "published.json"

    assert main(args) == 1 and not published.exists()
    err = capsys.readouterr().err
    assert "says the model is not better (0.20 < 0.25 of scratch)" in err and "--force" in err
    assert main(args + ["--only-if-better"]) == 0 and not published.exists()
    assert main(args + ["--force"]) == 0 and published.exists()
    assert "publishing although" in capsys.readouterr().err


@pytest.mark.slow
def test_auto_head_writes_its_choice_and_why_into_the_support_and_the_segment(world, spark,
                                                                                tmp_path):
    auto = night_with_head(world, spark, tmp_path, "auto")
    head = support(auto, "cmp_top")["head"]
    assert head["auto"]["chosen"] in ("probe", "aggregates", "prototype", "centroid")
    assert set(head["auto"]["cv_aupr"]) == {"probe", "aggregates", "prototype", "centroid"}
    assert head["kind"] == {"prototype": "prototype", "centroid": "centroid"}.get(
        head["auto"]["chosen"], "probe")
    _, manifest = segment(auto, "cmp_top")
    assert manifest["head"]["auto"] == head["auto"]
    assert not {"weights", "centroid", "mean", "std"} & set(manifest["head"])
