"""End to end: both DAGs under `airflow dags test`, with the real Spark jobs and CLI, on 200
synthetic users, in a private AIRFLOW_HOME and storage root.

The training run is a module fixture (it encodes the whole window and publishes a model
when the evaluation says so), so the nightly test that scores with the published model
does not depend on the order the tests run in. The module is
skipped while a command of the DAGs' contract is missing (it names which); set
METAPROFILE_E2E_FORCE=1 to run it anyway and see where it stops.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT
from test_dags import AIRFLOW, airflow_env, run_probe

pytestmark = [pytest.mark.slow, pytest.mark.spark]

DS = "2026-06-30"
METAPROFILE = str(Path(sys.executable).with_name("metaprofile"))
# A tiny network and a few episodes: the point is the wiring, not the model.
TRAIN_ARGS = ("--steps 5 --batch-size 16 --validate-every 0 --width 0.125 --embedding-dim 16 "
              "--checkpoint-every 5")
EVALUATE_ARGS = "--quick"

# The state of every task instance of the DAG's latest run.
LATEST_RUN_PROBE = textwrap.dedent("""
    import json, sys
    from sqlalchemy import select
    from airflow import settings
    from airflow.models.dagrun import DagRun
    if settings.Session is None:
        settings.configure_orm()
    session = settings.Session()
    run = session.scalars(select(DagRun).where(DagRun.dag_id == sys.argv[1])
                          .order_by(DagRun.id.desc()).limit(1)).one()
    print("PROBE-RESULT " + json.dumps({
        "state": str(getattr(run.state, "value", run.state)),
        "tasks": {ti.task_id + ("" if ti.map_index < 0 else f"[{ti.rendered_map_index}]"):
                  str(getattr(ti.state, "value", ti.state))
                  for ti in run.get_task_instances(session=session)}}))
""")


def missing_contract() -> list[str]:
    """The commands and flags of the DAGs' contract that the job environment lacks."""
    def help_text(*command: str) -> str | None:
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
        return result.stdout + result.stderr if result.returncode == 0 else None

    missing = []
    for command, flags in {"train": ["--out", "--resume"],
                           "evaluate": ["--compare-published", "--out", "--quick"],
                           "publish": ["--model"], "campaigns": ["--active"]}.items():
        text = help_text(METAPROFILE, command, "--help")
        if text is None:
            missing.append(f"metaprofile {command}")
            continue
        missing += [f"metaprofile {command} {flag}" for flag in flags
                    if not re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", text)]
    for job, flags in {"encode": ["--no-snapshot", "--snapshot-only", "--full"],
                       "heatmaps": [], "embed": [], "campaigns": ["--campaign"], "score": [],
                       "export": []}.items():
        text = help_text(sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help")
        if text is None:
            missing.append(f"jobs/{job}.py")
            continue
        missing += [f"jobs/{job}.py {flag}" for flag in flags
                    if not re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", text)]
    return missing


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Synthetic data, a config pointing at it, and a migrated AIRFLOW_HOME."""
    missing = missing_contract()
    if missing and not os.environ.get("METAPROFILE_E2E_FORCE"):
        pytest.skip("the DAGs' contract is not complete yet: missing " + "; ".join(missing))
    root = tmp_path_factory.mktemp("dags-e2e")
    data, config = root / "data", root / "pipeline.yaml"
    overrides = ["--set", f"storage.root={data}",
                 # one landing day of 200 users has ~50 purchase rows: the planted bad rows
                 # are a far larger share of them than of a real day
                 "--set", "raw.max_reject_ratio=0.5",
                 # 200 users give each brand a handful of earlier buyers (seeds)
                 "--set", "lookalike.min_seeds=2"]
    for command in (["generate", "--config", str(ROOT / "conf" / "synthetic.yaml"),
                     "--users", "200", *overrides],
                    ["config", "show", "--config", str(ROOT / "conf" / "synthetic.yaml"),
                     *overrides]):
        result = subprocess.run([METAPROFILE, *command], capture_output=True, text=True,
                                cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    config.write_text(result.stdout)
    pause_all_campaigns_but(data / "campaign_registry", keep=2)
    home = root / "airflow-home"
    env = airflow_env(home, METAPROFILE_TASK_RETRIES="0", METAPROFILE_DRIVER_MEMORY="1g",
                      METAPROFILE_SHUFFLE_PARTITIONS="2")
    result = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"root": root, "data": data, "config": config, "env": env}


def pause_all_campaigns_but(registry: Path, keep: int) -> None:
    """Keep the first ``keep`` campaigns active: each active one is a mapped spark-submit."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (part,) = registry.glob("*.parquet")
    table = pq.read_table(part)
    status = ["active" if i < keep else "paused" for i in range(table.num_rows)]
    pq.write_table(table.set_column(table.schema.get_field_index("status"), "status",
                                    pa.array(status)), part)


def dags_test(world: dict, dag_id: str, conf: dict) -> dict:
    """``airflow dags test DAG DS --conf ...``; returns the run's state and task states."""
    log = world["root"] / f"{dag_id}.log"
    with log.open("w") as out:
        result = subprocess.run([AIRFLOW, "dags", "test", dag_id, DS, "--conf", json.dumps(conf)],
                                stdout=out, stderr=subprocess.STDOUT, env=world["env"],
                                cwd=ROOT, timeout=1800)
    run = run_probe(LATEST_RUN_PROBE, dag_id, env=world["env"])
    run["returncode"], run["log"] = result.returncode, log
    return run


def explain(run: dict) -> str:
    """Which tasks did not succeed, and the end of the log, for a failure message."""
    unsuccessful = {t: s for t, s in run["tasks"].items() if s != "success"}
    tail = run["log"].read_text()[-6000:]
    return f"run {run['state']}; not successful: {unsuccessful}\nlog {run['log']}:\n{tail}"


@pytest.fixture(scope="module")
def trained(world) -> dict:
    """The training DAG's run, once per module: both tests below need it, in either order
    (the suite runs in a random order)."""
    return dags_test(world, "metaprofile_training", {
        "config": str(world["config"]),
        "train_args": f"{TRAIN_ARGS} --work-dir {world['root'] / 'train'}",
        "evaluate_args": EVALUATE_ARGS})


def trained_model(world: dict, run: dict) -> Path:
    assert run["returncode"] == 0 and run["state"] == "success", explain(run)
    models = [p for p in (world["data"] / "models").iterdir() if p.is_dir()]
    assert len(models) == 1, models
    return models[0]


def test_training_dag_end_to_end(world, trained):
    run = trained
    trained_model(world, run)
    decision = json.loads(
        (world["data"] / "reports" / "evaluation" / f"ds={DS}" / "decision.json").read_text())
    published = world["data"] / "models" / "published.json"
    if decision["better"]:
        assert run["tasks"]["publish"] == "success" and published.exists()
    else:
        assert run["tasks"]["publish"] == "skipped" and not published.exists()


def test_nightly_dag_end_to_end(world, trained):
    model = trained_model(world, trained)
    if not (world["data"] / "models" / "published.json").exists():
        # Five episodes may not beat the baseline: publish by hand, as an engineer would.
        result = subprocess.run([METAPROFILE, "publish", "--config", str(world["config"]),
                                 "--model", str(model)],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    run = dags_test(world, "metaprofile_lookalike", {"config": str(world["config"])})
    assert run["returncode"] == 0 and run["state"] == "success", explain(run)
    supports = [t for t in run["tasks"] if t.startswith("support[")]
    assert supports and all(run["tasks"][t] == "success" for t in supports)
    assert run["tasks"]["score"] == run["tasks"]["export"] == "success"
    segments = world["data"] / "segments" / f"ds={DS}"
    exported = sorted(p.name for p in segments.iterdir())
    assert exported == sorted(f"campaign={t[len('support['):-1]}" for t in supports)
    for folder in segments.iterdir():
        manifest = json.loads((folder / "_manifest.json").read_text())
        assert manifest["counts"]["selected"] > 0 and (folder / "segment.csv").exists()
