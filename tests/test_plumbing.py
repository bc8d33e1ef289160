"""The shared plumbing: staged publishing, the path catalogue, and the job runner."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from common import catalog, publish
from common.errors import PipelineError
from common.publish import ArrowFilesystem, LocalFilesystem, Publisher
from jobs import runner
from schemas.config import load_config

SYNTHETIC = os.path.join(os.path.dirname(__file__), "..", "conf", "synthetic.yaml")


def _write(folder, name, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w", encoding="utf-8") as fh:
        fh.write(text)


def test_staged_publish_replaces_the_old_dataset_whole_and_leaves_no_staging(tmp_path):
    final = str(tmp_path / "data" / "set")
    _write(final, "old.txt", "old")
    with Publisher().staged(final) as staging:
        assert os.path.basename(os.path.dirname(staging)).startswith(".staging-")
        _write(staging, "new.txt", "new")
        assert os.listdir(final) == ["old.txt"]  # readers still see the old one
    assert sorted(os.listdir(final)) == ["_SUCCESS", "new.txt"]
    assert os.listdir(tmp_path / "data") == ["set"]


def test_success_records_every_file_and_verify_finds_what_changed(tmp_path):
    target = str(tmp_path / "dataset")
    with Publisher().staged(target) as staging:
        os.makedirs(f"{staging}/split")
        for name, data in (("a.parquet", b"aaaa"), ("split/b.tfrecord.gz", b"bb")):
            with open(f"{staging}/{name}", "wb") as fh:
                fh.write(data)
    record = json.loads((tmp_path / "dataset" / "_SUCCESS").read_text())
    assert sorted(record["files"]) == ["a.parquet", "split/b.tfrecord.gz"]
    assert record["files"]["a.parquet"]["bytes"] == 4
    publisher = Publisher()
    assert publish.verify(publisher, target) == []
    (tmp_path / "dataset" / "a.parquet").write_bytes(b"abcd")  # same size, other bytes
    (tmp_path / "dataset" / "split" / "b.tfrecord.gz").unlink()
    (tmp_path / "dataset" / "extra.csv").write_bytes(b"x")
    problems = publish.verify(publisher, target)
    assert [p.rsplit("/", 1)[-1] for p in problems] == [
        "b.tfrecord.gz: listed in _SUCCESS but missing", "extra.csv: not listed in _SUCCESS",
        "a.parquet: checksum differs from _SUCCESS's"]
    (missing,) = publish.verify(publisher, str(tmp_path / "nothing"))
    assert "no _SUCCESS: not published" in missing


def test_a_failed_stage_keeps_the_old_dataset_and_removes_the_staging(tmp_path):
    final = str(tmp_path / "set")
    _write(final, "old.txt", "old")
    with pytest.raises(RuntimeError, match="boom"):
        with Publisher().staged(final) as staging:
            _write(staging, "half.txt", "half")
            raise RuntimeError("boom")
    assert os.listdir(final) == ["old.txt"]
    assert os.listdir(tmp_path) == ["set"]


@pytest.mark.parametrize("filesystem", [LocalFilesystem(), ArrowFilesystem()],
                         ids=["os", "arrow"])
def test_both_filesystems_behave_alike(tmp_path, filesystem):
    root = str(tmp_path / "fs")
    assert not filesystem.exists(root) and filesystem.list_files(root) is None
    filesystem.write_bytes(f"{root}/a/one.bin", b"12345")
    filesystem.mkdirs(f"{root}/b")
    assert filesystem.list_files(f"{root}/a") == [("one.bin", 5)]
    assert sorted(filesystem.list_folders(root)) == ["a", "b"]
    assert filesystem.read_bytes(f"{root}/a/one.bin") == b"12345"
    assert filesystem.read_bytes(f"{root}/a/none.bin") is None
    filesystem.rename(f"{root}/a", f"{root}/c")
    assert sorted(filesystem.list_folders(root)) == ["b", "c"]
    filesystem.delete(f"{root}/c")
    filesystem.delete(f"{root}/missing")  # nothing to delete is fine
    assert filesystem.list_folders(root) == ["b"]


def test_without_atomic_rename_the_marker_comes_after_the_move(tmp_path, monkeypatch):
    """The object-store branch, on a real (Arrow) filesystem: remove, move, then _SUCCESS."""
    monkeypatch.setattr(publish, "atomic_rename", lambda uri: False)
    final = str(tmp_path / "set")
    _write(final, "old.txt", "old")
    publisher = Publisher()
    publisher._local = ArrowFilesystem()
    staging = publisher.staging(final)
    _write(staging, "new.txt", "new")
    moves = []
    original = ArrowFilesystem.rename
    monkeypatch.setattr(ArrowFilesystem, "rename", lambda self, s, t: (
        moves.append(os.path.exists(os.path.join(t, "_SUCCESS"))), original(self, s, t)))
    publisher.publish(staging, final)
    assert moves == [False]  # no marker while the data was moving
    assert sorted(os.listdir(final)) == ["_SUCCESS", "new.txt"]


def test_replace_file_is_whole_or_nothing(tmp_path):
    target = str(tmp_path / "models" / "published.json")
    Publisher().replace_file(target, b'{"version": 1}\n')
    Publisher().replace_file(target, b'{"version": 2}\n')
    assert json.loads(open(target, encoding="utf-8").read()) == {"version": 2}
    assert os.listdir(tmp_path / "models") == ["published.json"]


def test_catalogue_spells_every_partition_path(tmp_path):
    config = load_config(SYNTHETIC, overrides=[f"storage.root={tmp_path}"])
    ds = dt.date(2026, 6, 30)
    scores = config.storage.uri("scores")
    assert catalog.partition(config, "scores", ds) == f"{scores}/ds=2026-06-30"
    assert catalog.partition(config, "scores", ds, "c1") == f"{scores}/ds=2026-06-30/campaign=c1"
    assert catalog.landing_path("s3a://b/raw/", "2026-06-29") == "s3a://b/raw/dt=2026-06-29"


# --------------------------------------------------------------------------- the runner


def _job(run, **kwargs):
    return runner.Job(name="probe", description="a probe job", run=run, **kwargs)


def test_runner_maps_errors_to_one_line_and_exit_status(capsys):
    def fails(job):
        raise PipelineError("the input is missing; run encode first")

    assert runner.main(_job(fails), ["--config", SYNTHETIC], prog="probe") == runner.EXIT_ERROR
    assert capsys.readouterr().err == "probe: error: the input is missing; run encode first\n"
    assert runner.main(_job(fails), ["--config", "/nowhere.yaml"], prog="probe") == 2
    assert capsys.readouterr().err.startswith("probe: error: invalid config /nowhere.yaml")

    def usage(job):
        raise runner.UsageError("--a and --b exclude each other")

    assert runner.main(_job(usage), ["--config", SYNTHETIC], prog="probe") == 2
    with pytest.raises(SystemExit):  # argparse: --config is required
        runner.main(_job(usage), [], prog="probe")


def test_runner_resolves_ds_and_prints_the_report(capsys):
    seen = {}

    def report(job):
        seen.update(ds=job.ds, spark=job._spark)
        return runner.Outcome(["a", "b"], compact=True, exit_code=3, message="one failed")

    code = runner.main(_job(report), ["--config", SYNTHETIC], prog="probe")
    out, err = capsys.readouterr()
    assert code == 3 and out == '["a", "b"]\n' and err == "probe: one failed\n"
    assert seen == {"ds": load_config(SYNTHETIC).window.end, "spark": None}  # no session
    no_end = ["--config", SYNTHETIC, "--set", "window.end=null"]
    assert runner.main(_job(report), no_end, prog="probe") == 2
    assert "--ds is required" in capsys.readouterr().err
    assert runner.main(_job(report, needs_ds=True, uses_ds=False), no_end, prog="probe") == 3


# --------------------------------------------------------------------------- features


def test_numpy_and_tensorflow_forms_of_the_features_agree():
    import numpy as np
    import tensorflow as tf

    from common import features

    shape = (2, 24, 3)
    owners = np.array([0, 0, 1, 1])
    cells = np.array([5, 5, 0, 143])  # a repeated cell adds up
    values = np.array([1.0, 2.0, -4.0, 9.0], np.float32)
    index = tf.SparseTensor(np.stack([owners, [0, 1, 0, 1]], 1), cells, [2, 2])
    sparse_values = tf.SparseTensor(np.stack([owners, [0, 1, 0, 1]], 1), values, [2, 2])
    for transform in ("none", "log1p"):
        ours = features.densify(owners, cells, features.transform_values(values, transform),
                                2, shape)
        theirs = features.densify_tf(index, sparse_values, shape, transform).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[0].reshape(-1)[5] == np.float32(np.log1p(1.0) + np.log1p(2.0))  # per value
    assert ours[1].reshape(-1)[0] == np.float32(-np.log1p(4.0))  # the sign is kept
    with pytest.raises(ValueError, match="outside 0..143"):
        features.densify(owners, np.array([0, 0, 0, 144]), values, 2, shape)
    # cells in increasing (row, index) order take the plain assignment; the same heatmap
    ordered = features.densify(owners, np.array([5, 6, 0, 143]), values, 2, shape)
    assert ordered.reshape(2, -1)[[0, 0, 1, 1], [5, 6, 0, 143]].tolist() == values.tolist()
    assert ordered.sum() == values.sum()
    # a repeat that is not next to its twin (row 0, cell 5 twice, another cell between)
    apart = features.densify(np.array([0, 0, 0]), np.array([5, 7, 5]),
                             np.array([1.0, 2.0, 3.0], np.float32), 1, shape)
    assert apart.reshape(-1)[5] == 4.0 and apart.reshape(-1)[7] == 2.0
    raw = np.array([[1.0, np.nan], [3.0, 4.0]])
    ours = features.standardise(raw, [2.0, 4.0], [1.0, 2.0])
    theirs = [t.numpy() for t in features.standardise_tf(tf.constant(raw, tf.float32),
                                                         [2.0, 4.0], [1.0, 2.0])]
    np.testing.assert_allclose(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], [[0, 1], [0, 0]])
    np.testing.assert_array_equal(ours[1], theirs[1])
