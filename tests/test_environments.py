"""The two pinned environments exist as the lock files say, and stay apart."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import ROOT

from common.workdir import work_dir

AIRFLOW_PYTHON = os.environ.get("METAPROFILE_AIRFLOW_PYTHON",
                                str(work_dir() / "venv-airflow" / "bin" / "python"))


def locked(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / f"{name}.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            pins[package.lower().replace("_", "-")] = version
    return pins


def test_job_environment_matches_its_lock():
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version
                 for d in metadata.distributions()}
    mismatched = {p: (v, installed.get(p)) for p, v in locked("jobs").items()
                  if installed.get(p) != v}
    assert not mismatched, f"installed versions differ from requirements/jobs.lock: {mismatched}"
    assert installed["pyspark"] == "4.3.0"
    assert installed["pandas"].split(".")[0] == "2"
    tf = installed.get("tensorflow-cpu") or installed.get("tensorflow")
    assert tf and tf.startswith("2.21."), "TensorFlow 2.21 (tensorflow-cpu or tensorflow)"
    # The Airflow provider's pyspark-client would overwrite pyspark's Python files.
    assert "pyspark-client" not in installed and "apache-airflow" not in installed


def test_the_suite_runs_in_a_random_order(pytestconfig):
    # pytest-randomly shuffles the modules, and the tests in each, on every run. The seed is
    # in the header, and `./run test --randomly-seed=N` reruns that order. A test that
    # depends on another's side effects then fails in CI instead of passing by luck of the
    # file order.
    if pytestconfig.pluginmanager.is_blocked("randomly"):
        pytest.skip("random order switched off with -p no:randomly")
    assert pytestconfig.pluginmanager.hasplugin("randomly"), (
        "pytest-randomly is not installed: `./run setup` installs requirements/jobs.lock")
    assert pytestconfig.getoption("randomly_reorganize")


def test_airflow_environment_is_separate_and_pinned():
    assert Path(AIRFLOW_PYTHON).exists(), (
        f"no Airflow environment at {AIRFLOW_PYTHON}; `make setup` creates it")
    probe = (
        "import json, importlib.metadata as m\n"
        "import airflow\n"
        "from airflow.sdk import dag, task\n"
        "from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator\n"
        "print(json.dumps({d: m.version(d) for d in ('apache-airflow', "
        "'apache-airflow-providers-apache-spark', 'pyspark-client')}))\n"
    )
    env = dict(os.environ, AIRFLOW__CORE__LOAD_EXAMPLES="False")
    result = subprocess.run([AIRFLOW_PYTHON, "-c", probe], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    versions = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    pins = locked("airflow")
    assert versions["apache-airflow"] == pins["apache-airflow"] == "3.3.2"
    assert versions["apache-airflow-providers-apache-spark"] == \
        pins["apache-airflow-providers-apache-spark"]
    # The provider brings pyspark-client there; the job environment (above) has none.
    assert versions["pyspark-client"]


@pytest.mark.slow
def test_nothing_is_written_to_the_home_folder(tmp_path):
    """A CLI run and a Spark session with HOME pointed at an empty folder leave it empty."""
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import sys\n"
        "from metaprofile.cli import main\n"
        f"assert main(['generate', '--config', '{ROOT / 'conf' / 'synthetic.yaml'}', "
        f"'--users', '20', '--set', 'window.days=3', "
        f"'--set', 'storage.root={tmp_path / 'data'}']) == 0\n"
        "from jobs.spark import build_session\n"
        "spark = build_session('home-check', master='local[1]')\n"
        f"assert spark.read.parquet('{tmp_path / 'data' / 'raw_points'}').count() > 0\n"
        "spark.stop()\n"
        "import matplotlib.pyplot as plt\n"
        "plt.figure()\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("KERAS_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "SPARK_LOCAL_DIRS")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], f"written under HOME: {written[:20]}"
    assert not (tmp_path / "spark-warehouse").exists() and not (tmp_path / "metastore_db").exists()
