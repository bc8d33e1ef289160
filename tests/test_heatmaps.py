"""jobs/heatmaps.py and model/inputs.py on a hand-made three-day snapshot.

The pytest process runs Spark and TensorFlow; the ``tfrecord`` package is only ever
imported by Spark's Python workers and by a separate reader process, because it cannot share
a process with TensorFlow.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SYNTHETIC_CONFIG

from schemas.config import load_config
from schemas.contracts import LABELS, SNAPSHOT, demographics_schema

DS = dt.date(2026, 6, 30)
DAYS = 3

# (user, modality) -> cells (day, hour, channel, value)
CELLS = {
    ("u1", "purchases"): [(0, 10, 0, 5000.0), (2, 23, 11, 1.0)],
    ("u1", "points"): [(1, 0, 3, 2.0)],
    ("u2", "purchases"): [(2, 10, 1, 12.5)],
    ("u4", "points"): [(0, 0, 0, 100.0), (0, 1, 0, -3.0)],
}
DEMOGRAPHICS = [  # user, age, household_size, gender, region
    ("u1", None, 2.0, "female", "north"),
    ("u2", 30.0, 1.0, "robot", "east"),  # 'robot' is not in the vocabulary
    ("u3", 50.0, 4.0, "male", None),     # demographics only, no events
    ("u3", 52.0, 4.0, "male", None),     # a second row for u3
]
LABEL_ROWS = [
    ("u1", "married", 1), ("u1", "married", 1),       # a repeated row counts once
    ("u2", "married", 0), ("u2", "married", 1),       # contradicting: unlabelled
    ("u2", "has_children", 0),
    ("u3", "pet_owner", 1),
    ("u1", "not_a_task", 1),                          # unknown task
    ("u1", "car_owner", 2),                           # invalid label
    ("u9", "married", 1),                             # no events, no demographics
]


def tiny_config(tmp_path, *extra):
    return load_config(SYNTHETIC_CONFIG, overrides=[
        f"storage.root={tmp_path / 'data'}", f"window.days={DAYS}", *extra])


def write_inputs(config) -> None:
    rows = []
    for (user, modality), cells in sorted(CELLS.items()):
        day, hour, channel, value = (list(c) for c in zip(*cells))
        text = ";".join(f"{d},{h},{c}:{v:g}" for d, h, c, v in cells)
        rows.append({"user_id": user, "modality": modality, "day": day, "hour": hour,
                     "channel": channel, "value": value, "text": text})
    snapshot = f"{config.storage.uri('snapshots')}/ds={DS}"
    os.makedirs(snapshot)
    pq.write_table(pa.Table.from_pylist(rows, schema=SNAPSHOT), f"{snapshot}/part-0.parquet")
    with open(f"{snapshot}/_manifest.json", "w") as fh:
        json.dump({"ds": DS.isoformat(), "window_days": DAYS}, fh)
    open(f"{snapshot}/_SUCCESS", "w").close()

    schema = demographics_schema(config)
    demo = pa.Table.from_pylist([dict(zip(schema.names, r)) for r in DEMOGRAPHICS], schema=schema)
    os.makedirs(config.storage.uri("demographics"))
    pq.write_table(demo, f"{config.storage.uri('demographics')}/part-0.parquet")
    labels = pa.Table.from_pylist([dict(zip(LABELS.names, r)) for r in LABEL_ROWS], schema=LABELS)
    os.makedirs(config.storage.uri("source_labels"))
    pq.write_table(labels, f"{config.storage.uri('source_labels')}/part-0.parquet")


@pytest.fixture(scope="module")
def written(spark, tmp_path_factory):
    from jobs import heatmaps
    tmp = tmp_path_factory.mktemp("heatmaps")
    config = tiny_config(tmp)
    write_inputs(config)
    report = heatmaps.run(spark, config, DS, partitions=2)
    uri = f"{config.storage.uri('heatmaps')}/ds={DS}"
    with open(f"{uri}/_manifest.json") as fh:
        manifest = json.load(fh)
    return config, uri, manifest, report


def all_batches(uri, config, **kwargs):
    from model.inputs import make_dataset
    from schemas.input_spec import InputSpec
    spec = InputSpec.from_config(config)
    out = {}
    for split in ("train", "validation", "test"):
        if not os.path.isdir(f"{uri}/{split}"):
            continue
        for batch in make_dataset(uri, split, spec, 8, shuffle=False, repeat=False, **kwargs):
            for i, user in enumerate(batch["user_id"].numpy()):
                out[user.decode()] = {k: v.numpy()[i] for k, v in batch.items()}
    return out


def test_manifest_accounts_for_every_user_and_label(written):
    config, _, manifest, report = written
    assert manifest["examples"] == 4 == report["examples"]  # u1..u4; u9 has no data
    splits = manifest["splits"].values()
    assert sum(s["examples"] for s in splits) == 4
    assert sum(s["empty_modality"]["points"] for s in splits) == 2    # u2, u3
    assert sum(s["empty_modality"]["purchases"] for s in splits) == 2  # u3, u4
    assert sum(s["no_events"] for s in splits) == 1                   # u3
    married = [s["tasks"]["married"] for s in splits]
    assert sum(t["positives"] for t in married) == 1   # u1 (the repeat counts once)
    assert sum(t["negatives"] for t in married) == 0   # u2's labels contradict
    assert sum(t["unlabelled"] for t in married) == 3
    labels = manifest["inputs"]["labels"]
    assert labels["rows"] == len(LABEL_ROWS)
    assert labels["rows_by_problem"] == {"invalid_label": 1, "unknown_task": 1, "used": 7}
    assert labels["conflicting"]["married"] == 1
    assert labels["labelled_users_without_data"] == 1
    assert manifest["inputs"]["demographics"] == {"users": 3, "users_with_duplicate_rows": 1,
                                                  "rows": 4, "rows_without_user_id": 0,
                                                  "unusable_values": {}}
    unknown = sum(s["demographics"]["categorical"]["gender"]["unknown"] for s in splits)
    missing_region = sum(s["demographics"]["categorical"]["region"]["missing"] for s in splits)
    assert (unknown, missing_region) == (1, 2)  # u2's 'robot'; u3 and u4 have no region
    from schemas.tfrecord_spec import spec_document, spec_fingerprint
    assert manifest["spec"] == spec_document(config)
    assert manifest["spec_fingerprint"] == spec_fingerprint(spec_document(config))
    for split in splits:
        for shard in split["shards"]:
            assert shard["path"].endswith(".tfrecord.gz") and len(shard["sha256"]) == 64


def test_dense_heatmaps_equal_the_snapshot_cell_by_cell(written):
    config, uri, manifest, _ = written
    users = all_batches(uri, config)
    assert sorted(users) == ["u1", "u2", "u3", "u4"]
    for user, example in users.items():
        for m in config.modalities:
            expected = np.zeros((DAYS, 24, m.num_channels), np.float32)
            for day, hour, channel, value in CELLS.get((user, m.name), []):
                expected[day, hour, channel] = np.sign(value) * np.log1p(abs(value))
            np.testing.assert_allclose(example[f"heatmap/{m.name}"], expected, rtol=1e-6)
    assert users["u1"]["heatmap/purchases"][0, 10, 0] == pytest.approx(np.log1p(5000.0))
    assert users["u4"]["heatmap/points"][0, 1, 0] == pytest.approx(-np.log1p(3.0))


def test_demographics_labels_and_masks_are_encoded(written):
    config, uri, manifest, _ = written
    users = all_batches(uri, config)
    stats = manifest["numeric_normalisation"]
    u2 = users["u2"]
    assert u2["demo/numeric"][0] == pytest.approx(
        (30.0 - stats["age"]["mean"]) / stats["age"]["std"], rel=1e-5)
    assert users["u1"]["demo/numeric"][0] == 0.0 and users["u1"]["demo/numeric_missing"][0] == 1
    assert list(u2["demo/numeric_missing"]) == [0.0, 0.0]
    genders = config.demographics.categorical[0].vocabulary
    assert users["u1"]["demo/gender"] == genders.index("female") + 1
    assert u2["demo/gender"] == 0  # not in the vocabulary
    assert users["u4"]["demo/gender"] == 0  # no demographics
    tasks = [t.name for t in config.source_tasks]
    married = tasks.index("married")
    assert (users["u1"]["labels"][married], users["u1"]["mask"][married]) == (1.0, 1.0)
    assert users["u2"]["mask"][married] == 0.0
    assert (users["u2"]["labels"][tasks.index("has_children")],
            users["u2"]["mask"][tasks.index("has_children")]) == (0.0, 1.0)
    assert users["u1"]["mask"][tasks.index("car_owner")] == 0.0  # the invalid label
    assert users["u4"]["mask"].sum() == 0.0


READER = r"""
import json, sys
from tfrecord.reader import tfrecord_loader
out = {}
for path in sys.argv[1:]:
    for example in tfrecord_loader(path, None, compression_type="gzip"):
        user = bytes(example.pop("user_id")).decode()
        out[user] = {key: (v.decode() if isinstance(v, bytes) else v.tolist())
                     for key, v in example.items()}
print(json.dumps(out))
"""


def test_tfrecord_package_reads_back_what_tensorflow_parses(written):
    import tensorflow as tf

    from model.inputs import feature_description
    from schemas.input_spec import InputSpec
    config, uri, manifest, _ = written
    paths = [f"{uri}/{s['path']}" for split in manifest["splits"].values()
             for s in split["shards"]]
    # tfrecord cannot share a process with TensorFlow: read it in a child process.
    child = subprocess.run([sys.executable, "-c", READER, *paths], capture_output=True,
                           text=True, check=True, cwd=ROOT)
    by_tfrecord = json.loads(child.stdout)
    features = feature_description(InputSpec.from_config(config))
    by_tensorflow = {}
    for record in tf.data.TFRecordDataset(paths, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, features)
        values = {k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy()
                  for k, v in parsed.items()}
        by_tensorflow[values.pop("user_id").decode()] = values
    assert sorted(by_tfrecord) == sorted(by_tensorflow) == ["u1", "u2", "u3", "u4"]
    for user, theirs in by_tfrecord.items():
        ours = by_tensorflow[user]
        assert sorted(theirs) == sorted(ours)
        for key, values in theirs.items():
            if isinstance(values, str):
                assert ours[key].decode() == values, f"{user} {key}"
            else:
                np.testing.assert_array_equal(np.atleast_1d(ours[key]), values,
                                              err_msg=f"{user} {key}")
    assert by_tfrecord["u1"]["purchases/index"] == [(0 * 24 + 10) * 12 + 0, (2 * 24 + 23) * 12 + 11]


def test_rerun_is_idempotent_and_atomic(spark, written):
    from jobs import heatmaps
    config, uri, manifest, _ = written
    heatmaps.run(spark, config, DS, partitions=2)
    with open(f"{uri}/_manifest.json") as fh:
        assert json.load(fh) == manifest  # same shards, same bytes, same checksums
    parent = os.path.dirname(uri)
    assert sorted(os.listdir(parent)) == [f"ds={DS}"]  # no staging left behind
    assert os.path.exists(f"{uri}/_SUCCESS")


def test_shards_roll_over_at_the_size_bound(spark, tmp_path):
    from jobs import heatmaps
    config = tiny_config(tmp_path, "heatmaps.max_shard_mb=0.00001", "heatmaps.train=1.0",
                         "heatmaps.validation=0.0", "heatmaps.test=0.0")
    write_inputs(config)
    report = heatmaps.run(spark, config, DS, partitions=1)
    uri = f"{config.storage.uri('heatmaps')}/ds={DS}"
    with open(f"{uri}/_manifest.json") as fh:
        shards = json.load(fh)["splits"]["train"]["shards"]
    assert report["splits"]["train"] == 4
    assert len(shards) == 4 and all(s["examples"] == 1 for s in shards)
    assert sorted(all_batches(uri, config)) == ["u1", "u2", "u3", "u4"]
    # The same seed gives the same shuffled stream (training's support pool is drawn from
    # it), although four shards are read in parallel.
    from model.inputs import make_dataset
    from schemas.input_spec import InputSpec
    spec = InputSpec.from_config(config)

    def stream(seed):
        data = make_dataset(uri, "train", spec, 1, shuffle=True, repeat=True, seed=seed)
        return [b["user_id"].numpy()[0].decode() for b in data.take(40)]

    first = stream(3)
    assert stream(3) == first and sorted(set(first)) == ["u1", "u2", "u3", "u4"]


def test_a_truncated_or_corrupt_shard_fails_naming_the_file(written, tmp_path):
    import shutil

    import tensorflow as tf

    from model.inputs import ManifestError
    config, uri, manifest, _ = written
    copy = tmp_path / "copy"
    shutil.copytree(uri, copy)
    shard = next(s["path"] for s in manifest["splits"]["train"]["shards"] if s["examples"])
    path = copy / shard
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ManifestError, match=f"{shard}.*truncated"):
        all_batches(str(copy), config)
    path.write_bytes(data[:-20] + bytes(20))  # same size, altered trailer
    with pytest.raises(ManifestError, match=f"{shard}.*SHA-256"):
        all_batches(str(copy), config)
    with pytest.raises(tf.errors.OpError):  # without the checksum, reading still fails
        all_batches(str(copy), config, verify=False)


def test_a_manifest_of_another_spec_is_refused(written, tmp_path):
    from model.inputs import ManifestError, check_manifest, read_manifest
    _, uri, _, _ = written
    manifest = read_manifest(uri)
    other = tiny_config(tmp_path, "window.days=4")
    with pytest.raises(ManifestError, match=r"window_days: model expects 4, data has 3"):
        check_manifest(manifest, other)
    renamed = tiny_config(tmp_path, "demographics.numeric=[age]")
    with pytest.raises(ManifestError, match=r"demographics.numeric"):
        check_manifest(manifest, renamed)


def test_split_is_deterministic_and_follows_the_fractions(spark, tmp_path):
    from pyspark.sql import functions as F

    from jobs.heatmaps import split_column
    config = tiny_config(tmp_path)
    users = spark.range(20_000).select(F.concat(F.lit("user-"), F.col("id")).alias("user_id"))
    first = users.select("user_id", split_column(config).alias("split"))
    counts = {r["split"]: r["count"] for r in first.groupBy("split").count().collect()}
    assert counts["train"] / 20_000 == pytest.approx(0.8, abs=0.02)
    assert counts["validation"] / 20_000 == pytest.approx(0.1, abs=0.01)
    again = users.select("user_id", split_column(config).alias("again"))
    assert first.join(again, "user_id").where(F.col("split") != F.col("again")).count() == 0


def test_missing_snapshot_is_a_clear_error(spark, tmp_path):
    from jobs import heatmaps
    config = tiny_config(tmp_path)
    with pytest.raises(heatmaps.HeatmapsError, match="no finished snapshot.*metaprofile encode"):
        heatmaps.run(spark, config, DS)


@pytest.mark.slow
def test_side_inputs_are_pseudonymised_with_the_snapshot_key(spark, tmp_path, monkeypatch):
    from common.privacy import pseudonym
    from jobs import heatmaps
    key = "k" * 32
    monkeypatch.setenv("METAPROFILE_PSEUDONYM_KEY", key)
    config = tiny_config(tmp_path, "pseudonymisation.enabled=true")
    write_inputs(config)
    snapshot = f"{config.storage.uri('snapshots')}/ds={DS}/part-0.parquet"
    table = pq.read_table(snapshot)
    hashed = [pseudonym(key.encode(), u) for u in table.column("user_id").to_pylist()]
    pq.write_table(table.set_column(0, "user_id", pa.array(hashed)), snapshot)
    heatmaps.run(spark, config, DS, partitions=1)
    users = all_batches(f"{config.storage.uri('heatmaps')}/ds={DS}", config)
    ids = {u: pseudonym(key.encode(), u) for u in ("u1", "u2", "u3", "u4")}
    assert sorted(users) == sorted(ids.values())  # raw ids never reach the shards
    u1 = users[ids["u1"]]
    genders = config.demographics.categorical[0].vocabulary
    assert u1["demo/gender"] == genders.index("female") + 1  # joined through the pseudonym
    assert u1["mask"][[t.name for t in config.source_tasks].index("married")] == 1.0


def test_a_config_with_behaviour_tasks_only_writes_heatmaps_without_label_columns(spark,
                                                                                  tmp_path):
    """A retailer without survey labels: no source task, behaviour tasks from the logs.
    Every label row is then an unknown task, accounted for, and the input pipeline yields
    ``[B, 0]`` labels for model/behaviour.py to extend."""
    from jobs import heatmaps
    config = tiny_config(tmp_path, "tasks.source=[]", "tasks.behaviour.horizon_days=1")
    write_inputs(config)
    report = heatmaps.run(spark, config, DS, partitions=1)
    assert report["labels"]["rows_by_problem"] == {"unknown_task": len(LABEL_ROWS)}
    batches = all_batches(f"{config.storage.uri('heatmaps')}/ds={DS}", config)
    assert batches and all(b["labels"].shape == (0,) for b in batches.values())


def test_typed_side_inputs_read_like_the_contract_types(spark, written, tmp_path):
    """An int64 label, an integer household size and a label file split into two files of
    different types give the heatmaps of the contract-typed inputs; a list column fails
    before Spark reads a row, naming the file and the types."""
    from jobs import heatmaps
    config = tiny_config(tmp_path)
    write_inputs(config)
    labels_dir, demo_dir = config.storage.uri("source_labels"), config.storage.uri("demographics")
    typed = pa.table({"user_id": [r[0] for r in LABEL_ROWS], "task": [r[1] for r in LABEL_ROWS],
                      "label": pa.array([r[2] for r in LABEL_ROWS], pa.int64())})
    os.remove(f"{labels_dir}/part-0.parquet")
    pq.write_table(typed.slice(0, 4), f"{labels_dir}/part-0.parquet")
    pq.write_table(typed.slice(4).set_column(2, "label", pa.array(
        [float(r[2]) for r in LABEL_ROWS[4:]])), f"{labels_dir}/part-1.parquet")  # 1.0, 0.0
    demo = pq.read_table(f"{demo_dir}/part-0.parquet")
    demo = demo.set_column(demo.schema.get_field_index("household_size"), "household_size",
                           pa.array([2, 1, 4, 4], pa.int64()))
    pq.write_table(demo, f"{demo_dir}/part-0.parquet")
    heatmaps.run(spark, config, DS, partitions=2)
    uri = f"{config.storage.uri('heatmaps')}/ds={DS}"
    original, typed_back = all_batches(written[1], written[0]), all_batches(uri, config)
    assert sorted(original) == sorted(typed_back)
    for user, batch in original.items():
        for key, value in batch.items():
            np.testing.assert_array_equal(typed_back[user][key], value, err_msg=f"{user} {key}")

    pq.write_table(pa.table({"user_id": ["u1"], "task": ["married"],
                             "label": pa.array([[1]], pa.list_(pa.int64()))}),
                   f"{labels_dir}/part-2.parquet")
    with pytest.raises(heatmaps.HeatmapsError) as raised:
        heatmaps.run(spark, config, DS, partitions=2)
    assert re.search(re.escape(f"storage.source_labels: {labels_dir}/part-2.parquet: column "
                               "'label' has type list<") + r".*int64>; expected integer or "
                     r"boolean or floating$", str(raised.value)), str(raised.value)


def test_a_config_without_demographics_needs_no_demographics_table(spark, tmp_path):
    import shutil

    from jobs import heatmaps
    config = tiny_config(tmp_path, "demographics={numeric: [], categorical: []}")
    write_inputs(config)
    shutil.rmtree(config.storage.uri("demographics"))
    report = heatmaps.run(spark, config, DS, partitions=2)
    assert report["examples"] == 3  # u1, u2, u4: everyone with events (u3 had only demographics)
