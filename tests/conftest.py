"""Shared fixtures. Importing this sets the work-directory environment for the whole run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.workdir import configure_environment  # noqa: E402

configure_environment()
os.environ.setdefault("METAPROFILE_SPARK_LOG_LEVEL", "ERROR")

from schemas.config import load_config  # noqa: E402

SYNTHETIC_CONFIG = ROOT / "conf" / "synthetic.yaml"


METAPROFILE = str(Path(sys.executable).with_name("metaprofile"))


def generated_world(root: Path, users: int, *settings: str) -> Path:
    """Generate ``users`` synthetic users under ``root/data`` with the ``key=value``
    settings, through the real CLI; return the resolved config file ``root/pipeline.yaml``
    (what a scheduler would pass to every command)."""
    import subprocess

    overrides = [arg for s in (f"storage.root={root / 'data'}", *settings) for arg in ("--set", s)]
    result = None
    for command in (["generate", "--users", str(users)], ["config", "show"]):
        result = subprocess.run([METAPROFILE, *command, "--config", str(SYNTHETIC_CONFIG),
                                 *overrides], capture_output=True, text=True, cwd=ROOT,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    config = root / "pipeline.yaml"
    config.write_text(result.stdout)
    return config


@pytest.fixture
def synthetic_config(tmp_path):
    """The synthetic config with its storage under this test's temporary directory."""
    return load_config(SYNTHETIC_CONFIG, overrides=[f"storage.root={tmp_path / 'data'}"])


@pytest.fixture(scope="session")
def spark():
    from jobs.spark import build_session
    # Fresh Python workers per task: the heatmaps writer imports `tfrecord` and the embed job
    # imports TensorFlow, and the two cannot share a process. (Jobs run as separate
    # spark-submit applications in production, where reuse is harmless.)
    session = build_session("metaprofile-tests", master="local[2]",
                            conf={"spark.sql.shuffle.partitions": "2",
                                  "spark.ui.enabled": "false",
                                  "spark.python.worker.reuse": "false"})
    yield session
    session.stop()
