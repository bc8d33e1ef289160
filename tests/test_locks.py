"""One attempt at a time per (job, ds): the lock, its fencing token and the staging sweep.

The lock tests run real ``metaprofile`` processes side by side: a second attempt of the
same job and date fails at once naming the first, or waits for it with ``--wait-for-lock``
and then publishes the same output; an attempt whose lock file is removed under it stops
before it publishes. The sweep tests need no Spark.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import METAPROFILE, ROOT, SYNTHETIC_CONFIG, generated_world

from common import attempts, locks
from common.publish import Publisher
from schemas.config import load_config

DS = "2026-06-30"


def holder(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return json.loads(text) if text.strip() else {}


def wait_for_holder(path: Path, pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while holder(path).get("pid") != pid:
        assert time.monotonic() < deadline, f"pid {pid} never took {path}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("locks")
    return root, generated_world(root, 30, "window.days=7", "raw.max_reject_ratio=0.5")


def encode(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([METAPROFILE, "encode", "--config", str(config), "--full",
                             "--no-snapshot", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def events_digest(data: Path) -> list:
    import pyarrow.parquet as pq
    rows = []
    for path in sorted((data / "events").rglob("*.parquet")):
        rows += [json.dumps(r, sort_keys=True, default=str) for r in pq.read_table(path)
                 .to_pylist()]
    return sorted(rows)


@pytest.mark.slow
@pytest.mark.spark
def test_a_second_attempt_of_the_same_job_and_date_fails_or_waits(small_world):
    root, config = small_world
    lock = root / "data" / "_locks" / f"encode-{DS}.lock"
    first = encode(config)
    wait_for_holder(lock, first.pid)
    started = time.monotonic()
    second = subprocess.run([METAPROFILE, "encode", "--config", str(config), "--full",
                             "--no-snapshot"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 1
    (line,) = [x for x in second.stderr.splitlines()
               if x.startswith("metaprofile encode: error:")]
    assert f"another attempt of encode-{DS} is running (pid {first.pid}" in line, line
    assert "--wait-for-lock" in line
    assert time.monotonic() - started < 30  # it failed at once, without encoding
    waiting = encode(config, "--wait-for-lock", "300")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    after_first = events_digest(root / "data")
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err[-2000:]
    report = json.loads(out)
    assert report["attempt"]["lock_wait_seconds"] > 0
    assert events_digest(root / "data") == after_first  # the same output, published whole
    assert not list((root / "data").rglob(".staging-*"))


@pytest.mark.slow
@pytest.mark.spark
def test_an_attempt_whose_lock_file_is_removed_stops_before_it_publishes(small_world):
    root, config = small_world
    lock = root / "data" / "_locks" / f"encode-{DS}.lock"
    before = events_digest(root / "data")
    attempt = encode(config)
    wait_for_holder(lock, attempt.pid)
    lock.unlink()  # an operator "clearing stale locks" while the job runs
    out, err = attempt.communicate(timeout=300)
    assert attempt.returncode == 1, err[-2000:]
    (line,) = [x for x in err.splitlines() if x.startswith("metaprofile encode: error:")]
    assert "was removed or taken over" in line, err[-2000:]
    assert events_digest(root / "data") == before


def test_the_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    path = tmp_path / "locks" / "encode-2026-06-30.lock"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from common import locks;"
        "lock = locks.acquire(sys.argv[2], 'child', 'encode-2026-06-30');"
        "print('held', flush=True); time.sleep(60)"), str(ROOT), str(path)],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(locks.LockHeldError, match=rf"pid {child.pid} on .*token child"):
        locks.acquire(str(path), "me", "encode-2026-06-30")
    child.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock
    child.wait()
    lock = locks.acquire(str(path), "me", "encode-2026-06-30", wait_s=5)
    lock.check()
    assert holder(path)["token"] == "me"
    lock.release()


def test_an_attempt_sweeps_only_its_own_scopes_staging_and_restores_a_moved_dataset(tmp_path):
    config = load_config(SYNTHETIC_CONFIG, overrides=[f"storage.root={tmp_path / 'data'}"])
    events = Path(config.storage.uri("events"))
    killed = events / ".staging-encode-2026-06-30--deadbeef"
    (killed / "_run" / "dt=2026-06-29").mkdir(parents=True)
    (killed / "dt=2026-06-30.replaced").mkdir(parents=True)  # moved aside, not yet replaced
    (killed / "dt=2026-06-30.replaced" / "part-0.parquet").write_bytes(b"old")
    other_date = events / ".staging-encode-2026-06-29--cafebabe"
    other_job = events / ".staging-embed-2026-06-30--cafebabe"
    unscoped = events / ".staging-0123abcd"
    for folder in (other_date, other_job, unscoped):
        folder.mkdir(parents=True)
    import datetime as dt
    with attempts.attempt(config, "encode", dt.date(2026, 6, 30)) as run:
        report = run.report()
        staging = Publisher().staging(str(events / "dt=2026-06-30"))
    assert report["stale_stagings_removed"] == 1
    assert report["datasets_restored"] == [str(events / "dt=2026-06-30")]
    assert (events / "dt=2026-06-30" / "part-0.parquet").read_bytes() == b"old"
    assert not killed.exists()
    assert other_date.exists() and other_job.exists() and unscoped.exists()
    assert os.path.basename(os.path.dirname(staging)).startswith(
        ".staging-encode-2026-06-30--")
