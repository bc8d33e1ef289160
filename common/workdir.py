"""The project's ignored work directory, and the environment that keeps writes inside it.

Spark, TensorFlow/Keras, Matplotlib and Airflow all default to writing under the home
folder or /tmp. Every entry point calls :func:`configure_environment` first so that, unless
the caller already chose otherwise, they write under ``.work/`` instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def work_dir() -> Path:
    """``$METAPROFILE_WORK_DIR``, else ``.work`` in the project checkout."""
    return Path(os.environ.get("METAPROFILE_WORK_DIR", PROJECT_ROOT / ".work")).resolve()


def environment_defaults(work: Path | None = None) -> dict[str, str]:
    work = work or work_dir()
    return {
        "METAPROFILE_WORK_DIR": str(work),
        "AIRFLOW_HOME": str(work / "airflow"),
        "KERAS_HOME": str(work / "keras"),
        "MPLCONFIGDIR": str(work / "matplotlib"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "SPARK_LOCAL_DIRS": str(work / "spark-local"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def configure_environment() -> Path:
    """Set every default that is not already set; return the work directory."""
    for key, value in environment_defaults().items():
        os.environ.setdefault(key, value)
    work = Path(os.environ["METAPROFILE_WORK_DIR"])
    work.mkdir(parents=True, exist_ok=True)
    return work
