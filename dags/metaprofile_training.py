"""
# MetaProfile training

Rebuilds the training data for the snapshot date `ds`, meta-trains a profile model, and
publishes it only when it beats both the from-scratch baseline and the published model.

| task | runs |
|---|---|
| `encode` | `spark-submit jobs/encode.py --config C --ds D --full`: every landing date of the window, then the snapshot |
| `heatmaps` | `spark-submit jobs/heatmaps.py --config C --ds D`: TFRecord shards and manifest |
| `storage` | `metaprofile config show`: the config's `models` and `reports` URIs (paths only) |
| `train` | `metaprofile train --config C --ds D --out <models>` on the GPU pool; XCom: the model directory |
| `evaluate` | `metaprofile evaluate ... --model <dir> --compare-published --out <reports>/evaluation/ds=D --print-decision`; XCom: `decision.json`, its last stdout line |
| `better_than_published` | short-circuit: the rest is skipped unless `decision.json` says `"better": true` |
| `publish` | `metaprofile publish --config C --model <dir>`; updates the asset `metaprofile_published_model` |

**Schedule.** Sundays 04:00 UTC, for `ds` = the day before (the last complete landing date).
Each run re-encodes the whole window from the raw logs, so a retrain also repairs any
daily partition. Trigger it by hand for another date: `airflow dags test metaprofile_training 2026-06-30`.

**GPU pool.** `train` runs in the pool named by the worker's `METAPROFILE_TRAIN_POOL`
(`gpu` where GPU workers are set up, with one slot per GPU). When the variable is unset it
falls back to `default_pool`, so a machine without a `gpu` pool still trains. A pool that is
named but missing shows as a DAG warning and its tasks never start.

**Parameters.** `config`, `project_root`, `job_venv`: see `dags/README.md`. `train_args`,
`evaluate_args`: extra arguments for `metaprofile train` / `evaluate` (default none).
"""
from __future__ import annotations

import json
import os
import shlex
from datetime import datetime, timedelta, timezone

from airflow.sdk import CronTriggerTimetable, Param, dag, task
from metaprofile_common import (
    DEFAULT_ARGS,
    LIGHT_TIMEOUT,
    PUBLISHED_MODEL,
    metaprofile_cli,
    pipeline_params,
    printing_last_stdout_line,
    spark_job,
)

TRAIN_POOL = os.environ.get("METAPROFILE_TRAIN_POOL") or "default_pool"

@dag(
    dag_id="metaprofile_training",
    doc_md=__doc__,
    # ds is the day before the run fires: the data interval is the previous day.
    schedule=CronTriggerTimetable("0 4 * * 0", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        **pipeline_params(),
        "train_args": Param("", type="string", title="Extra train arguments",
                            description="Appended to `metaprofile train`, e.g. "
                                        "`--steps 200 --width 0.5`."),
        "evaluate_args": Param("", type="string", title="Extra evaluate arguments",
                               description="Appended to `metaprofile evaluate`."),
    },
    tags=["metaprofile", "training"],
)
def metaprofile_training():
    encode = spark_job("encode", "--full")
    heatmaps = spark_job("heatmaps")

    @task(execution_timeout=LIGHT_TIMEOUT)
    def storage(params=None) -> dict[str, str]:
        """The config's resolved ``models`` and ``reports`` URIs, read by the job environment."""
        import subprocess

        import yaml

        command = [f"{params['job_venv']}/bin/metaprofile", "config", "show",
                   "--config", params["config"]]
        shown = subprocess.run(command, capture_output=True, text=True, check=False,
                               cwd=params["project_root"])
        if shown.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({shown.returncode}): "
                               f"{shown.stderr.strip()[-2000:]}")
        uris = yaml.safe_load(shown.stdout)["storage"]
        return {"models": uris["models"], "reports": uris["reports"]}

    @task.bash(pool=TRAIN_POOL, cwd="{{ params.project_root }}",
               execution_timeout=timedelta(hours=12))
    def train(paths: dict, params=None, ds=None) -> str:
        """Meta-train; the XCom is the last stdout line: the new model directory.

        ``--resume`` makes a retry continue the checkpoints of the attempt that died (train
        keeps them per config and ds) instead of refusing to overwrite them; with no
        checkpoint it starts from step 0.
        """
        return printing_last_stdout_line(metaprofile_cli(
            params, "train", "--config", params["config"], "--ds", ds,
            "--out", paths["models"], "--resume", *shlex.split(params["train_args"])))

    @task.bash(cwd="{{ params.project_root }}", execution_timeout=timedelta(hours=2))
    def evaluate(model_dir: str, paths: dict, params=None, ds=None) -> str:
        """Evaluate against the baseline and the published model; the XCom is decision.json."""
        report_dir = f"{paths['reports'].rstrip('/')}/evaluation/ds={ds}"
        return printing_last_stdout_line(metaprofile_cli(
            params, "evaluate", "--config", params["config"], "--ds", ds, "--model", model_dir,
            "--compare-published", "--out", report_dir, "--print-decision",
            *shlex.split(params["evaluate_args"])))

    @task.short_circuit(execution_timeout=LIGHT_TIMEOUT)
    def better_than_published(decision: str) -> bool:
        verdict = json.loads(decision)
        if not isinstance(verdict.get("better"), bool):
            raise ValueError(f"decision.json has no boolean 'better': {decision}")
        return verdict["better"]

    @task.bash(outlets=[PUBLISHED_MODEL], cwd="{{ params.project_root }}",
               execution_timeout=LIGHT_TIMEOUT)
    def publish(model_dir: str, params=None, ds=None, outlet_events=None) -> str:
        # The asset event is emitted only if the command succeeds.
        outlet_events[PUBLISHED_MODEL].extra = {"model_dir": model_dir, "ds": ds}
        return metaprofile_cli(params, "publish", "--config", params["config"],
                               "--model", model_dir)

    paths = storage()
    model_dir = train(paths)
    decision = evaluate(model_dir, paths)
    encode >> heatmaps >> model_dir
    better_than_published(decision) >> publish(model_dir)


metaprofile_training()
