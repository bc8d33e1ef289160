"""Wiring shared by the MetaProfile DAGs: run parameters, retries, the published-model asset,
and builders for the two kinds of task (a Spark job, a `metaprofile` CLI command).

The DAG files import it from the DAGs folder, which Airflow puts on ``sys.path``; parsed on
its own it yields no DAG. Like the DAG files it reads no connection, Variable or file at
import time: only environment variables that give defaults.

Where a task's settings come from:

* ``params`` (overridable per run, in the trigger form or ``--conf``): ``config``,
  ``project_root`` and ``job_venv``. Their defaults come from the environment variables
  ``METAPROFILE_CONFIG``, ``METAPROFILE_PROJECT_ROOT`` and ``METAPROFILE_JOB_VENV``, else
  from this checkout (the parent of ``dags/``).
* The environment of the Airflow worker, for what Airflow does not template:
  ``METAPROFILE_SPARK_CONN_ID`` (default ``spark_default``), ``METAPROFILE_SPARK_SUBMIT``
  (default ``$METAPROFILE_JOB_VENV/bin/spark-submit``), ``METAPROFILE_DRIVER_MEMORY``
  (default ``4g``), ``METAPROFILE_TASK_RETRIES`` (default 2; the end-to-end tests use 0),
  ``METAPROFILE_TRAIN_POOL`` (see the training DAG), ``METAPROFILE_SCORE_PARALLELISM`` (see
  the nightly DAG). In Airflow 3 a worker parses the DAG file itself before it runs a task,
  so these are the worker's values.
"""
from __future__ import annotations

import os
import shlex
from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param

CHECKOUT = Path(__file__).resolve().parent.parent

# The model that the nightly scores with. The training DAG's publish task is its producer;
# the nightly DAG's embed task lists it as an inlet. The URI is a name, not a location: the
# pointer file itself is <storage.models>/published.json of the run's config.
PUBLISHED_MODEL = Asset(name="metaprofile_published_model",
                        uri="x-metaprofile://models/published", group="model")

DEFAULT_ARGS = {
    "owner": "metaprofile",
    # Every task is keyed by ds and replaces its own output, so a retry is safe.
    "retries": int(os.environ.get("METAPROFILE_TASK_RETRIES") or 2),
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
}

SPARK_TIMEOUT = timedelta(hours=4)
LIGHT_TIMEOUT = timedelta(minutes=15)


def _project_root() -> str:
    return os.environ.get("METAPROFILE_PROJECT_ROOT") or str(CHECKOUT)


def _job_venv() -> str:
    return os.environ.get("METAPROFILE_JOB_VENV") or f"{_project_root()}/.work/venv-jobs"


def pipeline_params() -> dict[str, Param]:
    """The run parameters every task reads through ``params``."""
    root = _project_root()
    return {
        "config": Param(
            os.environ.get("METAPROFILE_CONFIG") or f"{root}/conf/synthetic.yaml",
            type="string", title="Pipeline config",
            description="Pipeline config YAML, as the Airflow worker sees it. Its storage "
                        "URIs should be absolute: a relative storage.root resolves against "
                        "the worker's working directory."),
        "project_root": Param(
            root, type="string", title="Project root",
            description="MetaProfile checkout on the worker: jobs/<job>.py is submitted "
                        "from here and CLI commands run here."),
        "job_venv": Param(
            _job_venv(), type="string", title="Job environment",
            description="Prefix of the job environment (pyspark, TensorFlow, MetaProfile); "
                        "its bin/ holds metaprofile, python and spark-submit. Not the "
                        "Airflow environment."),
    }


def spark_submit_binary() -> str:
    return os.environ.get("METAPROFILE_SPARK_SUBMIT") or f"{_job_venv()}/bin/spark-submit"


def _spark_kwargs(job: str) -> dict:
    python = "{{ params.job_venv }}/bin/python"
    return {
        "application": "{{ params.project_root }}/jobs/" + f"{job}.py",
        "conn_id": os.environ.get("METAPROFILE_SPARK_CONN_ID") or "spark_default",
        # The provider only lets a connection name spark-submit on the PATH; the operator
        # argument may be a full path, which keeps the Airflow environment's PATH out of it.
        "spark_binary": spark_submit_binary(),
        "driver_memory": os.environ.get("METAPROFILE_DRIVER_MEMORY") or "4g",
        "name": f"metaprofile-{job}-" + "{{ ds }}",
        # The driver and the Python workers run the job environment, never the Airflow one
        # (whose pyspark-client would shadow pyspark). In YARN and Kubernetes modes the
        # provider passes these on as the application master's / driver's environment.
        "env_vars": {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python},
        "execution_timeout": SPARK_TIMEOUT,
    }


def job_args(*extra: str) -> list[str]:
    """``--config C --ds D`` plus ``extra``: the arguments every Spark job takes."""
    return ["--config", "{{ params.config }}", "--ds", "{{ ds }}", *extra]


def spark_job(job: str, *extra: str, task_id: str | None = None, **kwargs) -> SparkSubmitOperator:
    """``spark-submit jobs/<job>.py --config C --ds D [extra]`` on the configured connection."""
    return SparkSubmitOperator(task_id=task_id or job, application_args=job_args(*extra),
                               **{**_spark_kwargs(job), **kwargs})


def mapped_spark_job(job: str, *, task_id: str, **kwargs):
    """A Spark job to be mapped over ``application_args`` with ``.expand``."""
    return SparkSubmitOperator.partial(task_id=task_id, **{**_spark_kwargs(job), **kwargs})


def metaprofile_cli(params: dict, command: str, *args: str) -> str:
    """The shell words of ``<job_venv>/bin/metaprofile COMMAND ARGS``, each quoted."""
    return shlex.join([f"{params['job_venv']}/bin/metaprofile", command, *args])


def printing_last_stdout_line(command: str) -> str:
    """A bash script that runs ``command`` and then repeats its standard output.

    Airflow merges a bash task's stderr into its log and pushes the log's last line as the
    XCom. Printing the captured stdout after the command exits makes that last line the
    command's own last stdout line, whatever it (or TensorFlow at exit) wrote to stderr.
    """
    return f'set -euo pipefail\nstdout="$({command})"\nprintf "%s\\n" "$stdout"\n'
