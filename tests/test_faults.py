"""Fault injection: every stage killed for real, at named points and by a timer, then rerun.

The world is 60 synthetic users over a short window, run once through the whole chain
(encode, snapshot, heatmaps, train, publish, embed, campaigns, score, export) as separate
``metaprofile`` processes: that run is the reference. Each test then takes one stage and,
for each of its crash points (``common/faults.py``) and for a SIGKILL sent by a timer to the
process group (the Spark JVM included), kills an attempt and checks that

* every dataset a reader can see is complete: its ``_SUCCESS`` record matches its files;
* the next attempt removes the staging folders the killed one left (its report says how
  many) and moves back a dataset a killed publish had moved aside;
* the final rerun's outputs equal the reference's, by content (rows, records, weights and
  manifests less their timings), not by file names;
* training resumes from the killed attempt's last checkpoint.

The matrix (stage, kill, survived) is written to ``$METAPROFILE_WORK_DIR/fault-matrix.json``
and printed at the end of the module. Run it alone with ``./run test -m faults``.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from conftest import METAPROFILE, ROOT, generated_world

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.faults]

DS = "2026-06-30"
CAMPAIGN_FAILED = 3  # jobs/campaigns.py: a selected campaign failed its checks
TRAIN = ["--steps", "4", "--batch-size", "16", "--validate-every", "0", "--width", "0.125",
         "--embedding-dim", "16", "--checkpoint-every", "2", "--resume"]
# The crash points each stage passes (train adds its own "checkpoint").
POINTS = ["start", "staged:1", "swapped:1", "published:1", "done"]
# name: (job name of its crash points, arguments after the command, outputs to compare)
STAGES = {
    "encode": ("encode", ["encode", "--full", "--no-snapshot"], ["events", "rejects"]),
    "snapshot": ("encode", ["encode", "--snapshot-only", "--full-snapshot"],
                 [f"snapshots/ds={DS}"]),
    "heatmaps": ("heatmaps", ["heatmaps"], [f"heatmaps/ds={DS}"]),
    "train": ("train", ["train", *TRAIN], []),
    "publish": ("publish", ["publish", "--model", "{model}"], []),
    "embed": ("embed", ["embed"], [f"embeddings/ds={DS}"]),
    "campaigns": ("campaigns", ["campaigns"], [f"supports/ds={DS}"]),
    "score": ("score", ["score"], [f"scores/ds={DS}"]),
    "export": ("export", ["export"], [f"segments/ds={DS}"]),
}
STAGE_POINTS = {**{s: POINTS for s in STAGES},
                "train": ["start", "checkpoint:1", "staged:1", "done"],
                "publish": ["start", "staged:1", "published:1", "done"]}
# Fields of manifests and reports that differ between two identical runs.
VOLATILE = {"seconds", "encode_seconds", "snapshot_seconds", "created", "published_at",
            "written_at", "started", "run_id", "attempt", "elapsed_seconds", "wall_seconds",
            "timings", "generated_at",
            "event_fingerprints"}  # digests of the event partitions' file names and sizes


# --------------------------------------------------------------------------- processes


def run_stage(world, stage: str, crash: str | None = None, kill_after: float | None = None):
    """Run one stage as a process; ``crash`` arms a crash point, ``kill_after`` a timer."""
    job, argv, _ = STAGES[stage]
    argv = [a.replace("{model}", world["model"]) for a in argv]
    command = [METAPROFILE, argv[0], "--config", str(world["config"]), *argv[1:]]
    if stage == "train":
        command += ["--out", str(world["data"] / "models"), "--work-dir", str(world["train"])]
    env = {**os.environ, "METAPROFILE_SPARK_LOG_LEVEL": "ERROR"}
    env.pop("METAPROFILE_CRASH_AT", None)
    if crash:
        env["METAPROFILE_CRASH_AT"] = f"{job}:{crash}"
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_after is None:
        out, err = process.communicate(timeout=600)
    else:
        try:
            out, err = process.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the driver and its Spark JVM
            out, err = process.communicate()
    return process.returncode, out, err, time.monotonic() - started


def report_of(out: str) -> dict:
    start = out.find("{")
    return json.loads(out[start:]) if start >= 0 else {}


# --------------------------------------------------------------------------- checks


def visible_problems(data: Path) -> list[str]:
    """Every published dataset checked against its ``_SUCCESS`` record, and every visible
    data file that no published dataset holds (a half-visible write)."""
    from common.publish import Publisher, verify
    publisher, problems, covered = Publisher(), [], []
    for marker in sorted(data.rglob("_SUCCESS")):
        folder = marker.parent
        if any(part.startswith(".") for part in folder.relative_to(data).parts):
            continue  # inside a staging folder: not visible
        problems += verify(publisher, str(folder))
        covered.append(folder)
    for path in sorted(data.rglob("*")):
        parts = path.relative_to(data).parts
        if not path.is_file() or any(p.startswith((".", "_")) for p in parts):
            continue
        if path.suffix in (".parquet", ".gz", ".csv", ".keras") and not any(
                folder in path.parents for folder in covered):
            problems.append(f"{path}: visible outside any published dataset")
    return problems


def stagings(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob(".staging-*") if p.is_dir())


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _tfrecords(data: bytes) -> list[bytes]:
    records, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        records.append(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
    return records


def file_digest(path: Path) -> str:
    """A digest of a file's content that ignores row order, record order and timings."""
    import pyarrow.parquet as pq
    name = path.name
    if name.endswith(".parquet"):
        table = pq.read_table(path)
        rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())
        payload = json.dumps([str(table.schema.remove_metadata()), rows])
    elif name.endswith(".tfrecord.gz"):
        payload = repr(sorted(_tfrecords(gzip.decompress(path.read_bytes()))))
    elif name.endswith(".json"):
        payload = json.dumps(_clean(json.loads(path.read_text())), sort_keys=True)
    elif name.endswith(".csv"):
        payload = repr(sorted(path.read_text().splitlines()))
    elif name.endswith(".keras"):
        payload = repr(weights(path))
    else:
        payload = path.read_bytes().hex()
    return hashlib.sha256(payload.encode()).hexdigest()


def weights(model_file: Path) -> list:
    """The saved weights of a ``.keras`` archive, by name (its zip also holds timestamps)."""
    import h5py
    with zipfile.ZipFile(model_file) as archive:
        blob = archive.read("model.weights.h5")
    out = []
    with h5py.File(io.BytesIO(blob), "r") as h5:
        h5.visititems(lambda name, obj: out.append((name, obj[()].tobytes().hex()))
                      if isinstance(obj, h5py.Dataset) else None)
    return sorted(out)


def content(data: Path, outputs: list[str]) -> dict:
    """``{dataset: sorted [(folder, file digest)]}``: file names do not count, folders do."""
    result = {}
    for output in outputs:
        root = data / output
        entries = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(p.startswith((".", "_")) for p in rel.parts[:-1]) \
                    and not rel.name.startswith(".") and rel.name != "_SUCCESS":
                entries.append((str(rel.parent), file_digest(path)))
        result[output] = sorted(entries)
    return result


def latest_model(data: Path) -> Path:
    versions = sorted((p for p in (data / "models").iterdir()
                       if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime)
    return versions[-1]


def stage_content(world, stage: str) -> dict:
    data = world["data"]
    if stage == "train":
        return {"weights": weights(latest_model(data) / "model.keras")}
    if stage == "publish":
        return {"published": json.loads((data / "models" / "published.json").read_text())
                ["path"]}
    return content(data, STAGES[stage][2])


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    config = generated_world(root, 60, "window.days=21", "raw.max_reject_ratio=0.5",
                             "lookalike.min_seeds=2")
    world = {"root": root, "data": data, "config": config, "train": root / "train",
             "model": "", "reference": {}, "seconds": {}, "exit": {}, "matrix": []}
    for stage in STAGES:
        if stage == "publish":
            world["model"] = str(latest_model(data))
        rc, out, err, seconds = run_stage(world, stage)
        # campaigns exits 3 when a campaign of the world fails its checks (the others are
        # written); its rerun must then exit 3 too
        assert rc == 0 or stage == "campaigns" and rc == CAMPAIGN_FAILED, \
            f"{stage}: exit {rc}: {err[-3000:]}"
        world["exit"][stage] = rc
        world["reference"][stage] = stage_content(world, stage)
        world["seconds"][stage] = seconds
    yield world
    matrix = world["matrix"]
    summary = {"kills": len(matrix), "survived": sum(m["survived"] for m in matrix),
               "stages": sorted({m["stage"] for m in matrix}), "runs": matrix}
    out = Path(os.environ["METAPROFILE_WORK_DIR"]) / "fault-matrix.json"
    out.write_text(json.dumps(summary, indent=1))
    print(f"\nfault matrix: {summary['survived']} of {summary['kills']} kills survived with "
          f"nothing lost, over {len(summary['stages'])} stages ({out})")


def kill_and_check(world, stage: str, crash: str | None = None,
                   kill_after: float | None = None) -> dict:
    data = world["data"]
    left_before = set(stagings(data))
    rc, out, err, seconds = run_stage(world, stage, crash, kill_after)
    entry = {"stage": stage, "kill": crash or f"SIGKILL after {kill_after:.1f} s",
             "exit": rc, "seconds": round(seconds, 1)}
    problems = visible_problems(data)
    # The killed attempt removed what the one before it left (then left its own).
    unswept = sorted(str(p) for p in left_before & set(stagings(data)))
    entry.update(problems=problems, left_staging=len(set(stagings(data)) - left_before),
                 unswept=unswept, finished=rc == 0)
    if crash is not None:
        assert rc == 137, f"{stage} {crash}: exit {rc} (crash point not reached?)\n{err[-2000:]}"
    return entry


def rerun_and_compare(world, stage: str, entries: list[dict]) -> dict:
    left = stagings(world["data"])
    rc, out, err, _ = run_stage(world, stage)
    assert rc == world["exit"][stage], f"{stage} rerun: exit {rc}: {err[-3000:]}"
    removed = report_of(out).get("attempt", {}).get("stale_stagings_removed") \
        if stage not in ("train", "publish") else None
    assert not stagings(world["data"]), "the rerun left staging behind"
    if removed is not None:
        assert removed == len(left), (removed, left)
    same = stage_content(world, stage) == world["reference"][stage]
    for entry in entries:
        entry["survived"] = same and not entry["problems"] and not entry["unswept"]
    world["matrix"].extend(entries)
    return {"out": out, "err": err, "same": same}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_killed_stage_loses_nothing_and_its_rerun_equals_an_uninterrupted_run(world, stage):
    if stage == "train":  # start from step 0, so that a kill can land between checkpoints
        shutil.rmtree(world["train"])
    entries = []
    for crash in STAGE_POINTS[stage]:
        entries.append(kill_and_check(world, stage, crash=crash))
        if stage == "train" and crash == "checkpoint:1":
            # the retry (the DAG passes --resume) continues from the killed attempt's step 2
            rc, out, err, _ = run_stage(world, stage)
            assert rc == 0, err[-3000:]
            assert "at step 2" in out, out[-2000:]
            assert weights(latest_model(world["data"]) / "model.keras") == \
                world["reference"]["train"]["weights"]
    # One timer-driven SIGKILL, in the middle of an uninterrupted run's time.
    entries.append(kill_and_check(world, stage, kill_after=world["seconds"][stage] * 0.6))
    result = rerun_and_compare(world, stage, entries)
    for entry in entries:
        assert not entry["problems"], entry
        assert not entry["unswept"], entry
    assert result["same"], f"{stage}: the rerun differs from the uninterrupted run"
