"""The Airflow DAGs: they import cleanly, follow the house policy, are wired as designed, and
run (against a stand-in job environment) with the trigger rules and XComs they promise.

The DAGs live in the Airflow environment, which must stay apart from this (job) environment,
so every check runs the Airflow environment's Python in a subprocess, with its own
AIRFLOW_HOME and SQLite database under pytest's basetemp.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

from common.workdir import work_dir

AIRFLOW_PYTHON = os.environ.get("METAPROFILE_AIRFLOW_PYTHON",
                                str(work_dir() / "venv-airflow" / "bin" / "python"))
AIRFLOW = str(Path(AIRFLOW_PYTHON).with_name("airflow"))
DAGS = ROOT / "dags"
DAG_FILES = {"metaprofile_training": DAGS / "metaprofile_training.py",
             "metaprofile_lookalike": DAGS / "metaprofile_lookalike.py"}
PUBLISHED_MODEL_URI = "x-metaprofile://models/published"
# The DAG files read these for defaults; the checks below start from none of them set.
DAG_SETTINGS = ("METAPROFILE_CONFIG", "METAPROFILE_PROJECT_ROOT", "METAPROFILE_JOB_VENV",
                "METAPROFILE_SPARK_CONN_ID", "METAPROFILE_SPARK_SUBMIT", "METAPROFILE_TRAIN_POOL",
                "METAPROFILE_TASK_RETRIES", "METAPROFILE_SCORE_PARALLELISM",
                "METAPROFILE_DRIVER_MEMORY")
RESULT_MARK = "PROBE-RESULT "

# Parses the dags/ folder as the DAG processor does and describes what it found. Airflow's
# deprecation warnings are errors (a file that raises one fails to import), and any look-up
# of a connection or Variable while the files are parsed is refused and recorded.
PARSE_PROBE = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path

    from airflow.exceptions import AirflowProviderDeprecationWarning, RemovedInAirflow4Warning
    from airflow.sdk.exceptions import RemovedInAirflow4Warning as SdkRemovedInAirflow4Warning
    from airflow.utils.deprecation_tools import DeprecatedImportWarning

    for category in (AirflowProviderDeprecationWarning, RemovedInAirflow4Warning,
                     SdkRemovedInAirflow4Warning, DeprecatedImportWarning):
        warnings.simplefilter("error", category)

    from airflow.sdk import Connection, Variable
    from airflow.sdk.bases.hook import BaseHook

    lookups = []
    def refuse(kind):
        def lookup(*args, **kwargs):
            lookups.append(kind)
            raise RuntimeError(f"{kind} looked up while parsing")
        return staticmethod(lookup)
    Variable.get = refuse("Variable.get")
    Connection.get = refuse("Connection.get")
    BaseHook.get_connection = refuse("BaseHook.get_connection")

    before = set(sys.modules)
    from airflow.dag_processing.dagbag import BundleDagBag
    dags = Path(sys.argv[1])
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags)

    def uris(assets):
        return sorted(getattr(a, "uri", str(a)) for a in assets or ())

    def describe(task):
        kwargs = dict(task.partial_kwargs) if task.is_mapped else vars(task)
        get = lambda name: kwargs.get(name, getattr(task, name, None))
        timeout = get("execution_timeout")
        return {
            "type": getattr(task, "operator_name", None) or type(task).__name__,
            "mapped": bool(task.is_mapped),
            "expanded": sorted(task.expand_input.value) if task.is_mapped else [],
            "pool": task.pool, "retries": task.retries,
            "trigger_rule": str(getattr(task.trigger_rule, "value", task.trigger_rule)),
            "upstream": sorted(task.upstream_task_ids),
            "inlets": uris(task.inlets), "outlets": uris(task.outlets),
            "application": get("application"), "application_args": get("application_args"),
            "conn_id": get("_conn_id") or get("conn_id"),
            "spark_binary": get("_spark_binary") or get("spark_binary"),
            "env_vars": get("env_vars"), "cwd": get("cwd"),
            "map_index_template": get("map_index_template"),
            "execution_timeout_s": timeout.total_seconds() if timeout else None,
        }

    dags_found = {}
    for dag_id, dag in bag.dags.items():
        dags_found[dag_id] = {
            "fileloc": dag.fileloc, "doc_md": dag.doc_md, "tags": sorted(dag.tags),
            "timetable": type(dag.timetable).__name__,
            "cron": getattr(dag.timetable, "expression", None),
            "timezone": str(getattr(dag.timetable, "timezone", None)),
            "interval_s": getattr(getattr(dag.timetable, "interval", None), "total_seconds",
                                  lambda: None)(),
            "start_date": dag.start_date.isoformat(),
            "start_date_utcoffset": dag.start_date.utcoffset().total_seconds(),
            "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
            "params": sorted(dag.params),
            "tasks": {t.task_id: describe(t) for t in dag.tasks},
        }
    loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
    present = sorted({m.split(".")[0] for m in sys.modules})
    print("PROBE-RESULT " + json.dumps({"present_packages": present,
        "import_errors": bag.import_errors,
        "warnings": {k: list(v) for k, v in bag.captured_warnings.items()},
        "lookups": lookups, "loaded_packages": loaded, "dags": dags_found}))
""")

# Runs one DAG run in-process with dag.test() and reports every task instance's state and
# the asset events the run emitted.
RUN_PROBE = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    from pathlib import Path

    from airflow import settings
    from airflow.dag_processing.dagbag import BundleDagBag

    dags, dag_id, ds, conf = Path(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags)
    if settings.Session is None:
        settings.configure_orm()
    run = bag.get_dag(dag_id).test(
        logical_date=datetime.fromisoformat(ds).replace(tzinfo=timezone.utc), run_conf=conf)

    from sqlalchemy import select
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    session = settings.Session()
    run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                          .where(DagRun.run_id == run.run_id)).one()
    events = session.execute(select(AssetModel.uri, AssetEvent.extra)
                             .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                             .where(AssetEvent.source_run_id == run.run_id)).all()
    print("PROBE-RESULT " + json.dumps({
        "state": str(getattr(run.state, "value", run.state)),
        "tasks": sorted([ti.task_id, ti.map_index, str(getattr(ti.state, "value", ti.state)),
                         ti.rendered_map_index] for ti in run.get_task_instances(session=session)),
        "asset_events": [[uri, extra] for uri, extra in events]}))
""")


def airflow_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without Airflow or DAG settings, plus a private home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIRFLOW") and k not in DAG_SETTINGS}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
               AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW_CONN_SPARK_DEFAULT=json.dumps({"conn_type": "spark", "host": "local[2]"}))
    env.update(settings)
    return env


def run_probe(script: str, *args: str, env: dict[str, str], timeout: int = 300) -> dict:
    result = subprocess.run([AIRFLOW_PYTHON, "-c", script, *args], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert result.returncode == 0 and lines, (
        f"probe failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """A private AIRFLOW_HOME for the whole session, its SQLite database migrated."""
    home = tmp_path_factory.mktemp("airflow-home")
    result = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True,
                            env=airflow_env(home), cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return home


@pytest.fixture(scope="session")
def parsed(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-parse")
    return run_probe(PARSE_PROBE, str(DAGS), env=airflow_env(home))


@pytest.fixture(scope="session")
def training(parsed) -> dict:
    return parsed["dags"]["metaprofile_training"]


@pytest.fixture(scope="session")
def nightly(parsed) -> dict:
    return parsed["dags"]["metaprofile_lookalike"]


# --------------------------------------------------------------------------- integrity


def test_every_dag_file_imports_without_errors_or_deprecation_warnings(parsed):
    assert parsed["import_errors"] == {}
    assert parsed["warnings"] == {}
    assert sorted(parsed["dags"]) == sorted(DAG_FILES)


def test_one_dag_per_file_documented_by_its_module_docstring(parsed):
    for dag_id, path in DAG_FILES.items():
        dag = parsed["dags"][dag_id]
        assert Path(dag["fileloc"]).resolve() == path.resolve()
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        assert docstring and dag["doc_md"] == docstring


def test_parsing_imports_nothing_heavy_and_looks_nothing_up(parsed):
    heavy = {"tensorflow", "keras", "pyspark", "tfrecord", "torch",
             # the project's own packages belong to the job environment
             "metaprofile", "jobs", "schemas", "model", "common", "evaluation"}
    assert heavy.isdisjoint(parsed["loaded_packages"]), parsed["loaded_packages"]
    assert "tensorflow" not in parsed["present_packages"]
    assert "pyspark" not in parsed["present_packages"]
    assert parsed["lookups"] == []


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize("dag_id", sorted(DAG_FILES))
def test_dag_policy(parsed, dag_id):
    dag = parsed["dags"][dag_id]
    assert "metaprofile" in dag["tags"] and len(dag["tags"]) >= 2
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["start_date_utcoffset"] == 0
    # An explicit time schedule whose data interval is the day before the run: ds is the
    # last complete landing date.
    assert dag["timetable"] == "CronTriggerTimetable" and dag["timezone"] == "UTC"
    assert dag["interval_s"] == 86400
    assert {"config", "project_root", "job_venv"} <= set(dag["params"])
    for task_id, task in dag["tasks"].items():
        assert task["retries"] > 0 or task_id == "failed_campaigns", task_id
        assert task["execution_timeout_s"], f"{task_id} has no execution_timeout"


def test_schedules(training, nightly):
    assert nightly["cron"] == "0 2 * * *"    # daily
    assert training["cron"] == "0 4 * * 0"   # weekly, after that night's run


# --------------------------------------------------------------------------- graphs


def upstream(dag: dict, task_id: str) -> set[str]:
    return set(dag["tasks"][task_id]["upstream"])


def test_training_graph(training):
    assert set(training["tasks"]) == {"encode", "heatmaps", "storage", "train", "evaluate",
                                      "better_than_published", "publish"}
    assert upstream(training, "encode") == set()
    assert upstream(training, "heatmaps") == {"encode"}
    assert upstream(training, "train") == {"heatmaps", "storage"}
    assert upstream(training, "evaluate") == {"train", "storage"}
    assert upstream(training, "better_than_published") == {"evaluate"}
    assert upstream(training, "publish") == {"better_than_published", "train"}
    assert training["tasks"]["better_than_published"]["type"] == "@task.short_circuit"
    assert {"train_args", "evaluate_args"} <= set(training["params"])


def test_training_runs_spark_jobs_with_config_and_ds(training):
    encode, heatmaps = training["tasks"]["encode"], training["tasks"]["heatmaps"]
    assert encode["application"] == "{{ params.project_root }}/jobs/encode.py"
    assert encode["application_args"] == ["--config", "{{ params.config }}", "--ds", "{{ ds }}",
                                          "--full"]
    assert heatmaps["application"] == "{{ params.project_root }}/jobs/heatmaps.py"
    assert heatmaps["application_args"] == ["--config", "{{ params.config }}",
                                            "--ds", "{{ ds }}"]


def test_train_falls_back_to_the_default_pool_and_takes_the_gpu_pool_when_set(
        training, tmp_path):
    assert training["tasks"]["train"]["pool"] == "default_pool"
    with_pool = run_probe(PARSE_PROBE, str(DAGS),
                          env=airflow_env(tmp_path, METAPROFILE_TRAIN_POOL="gpu"))
    tasks = with_pool["dags"]["metaprofile_training"]["tasks"]
    assert tasks["train"]["pool"] == "gpu"
    assert {t["pool"] for name, t in tasks.items() if name != "train"} == {"default_pool"}


def test_nightly_graph(nightly):
    assert set(nightly["tasks"]) == {"encode", "embed", "active_campaigns",
                                     "campaign_arguments", "support", "score", "export",
                                     "failed_campaigns"}
    assert upstream(nightly, "embed") == {"encode"}
    assert upstream(nightly, "campaign_arguments") == {"active_campaigns"}
    assert upstream(nightly, "support") == {"embed", "campaign_arguments"}
    assert upstream(nightly, "score") == {"support"}
    assert upstream(nightly, "export") == {"score"}
    assert upstream(nightly, "failed_campaigns") == {"support"}


def test_nightly_runs_spark_jobs_with_config_and_ds(nightly):
    args = ["--config", "{{ params.config }}", "--ds", "{{ ds }}"]
    tasks = nightly["tasks"]
    assert tasks["encode"]["application"].endswith("/jobs/encode.py")
    assert tasks["encode"]["application_args"] == args  # encode, then the snapshot
    assert tasks["embed"]["application"].endswith("/jobs/embed.py")
    assert tasks["embed"]["application_args"] == args
    assert tasks["score"]["application"].endswith("/jobs/score.py")
    assert tasks["score"]["application_args"] == args
    assert tasks["export"]["application"].endswith("/jobs/export.py")
    assert tasks["export"]["application_args"] == args


def test_support_sets_are_mapped_per_campaign_and_one_failure_spares_the_rest(nightly):
    support = nightly["tasks"]["support"]
    assert support["mapped"] and support["expanded"] == ["application_args"]
    assert support["application"] == "{{ params.project_root }}/jobs/campaigns.py"
    assert support["map_index_template"].startswith("{% set c = task.application_args[-1] %}")
    assert nightly["tasks"]["score"]["trigger_rule"] == "all_done_min_one_success"
    assert nightly["tasks"]["failed_campaigns"]["trigger_rule"] == "one_failed"


def test_spark_tasks_use_the_connection_and_the_job_environment(parsed):
    for dag in parsed["dags"].values():
        for task_id, task in dag["tasks"].items():
            if not (task["application"] or "").endswith(".py"):
                continue
            assert task["conn_id"] == "spark_default", task_id
            assert task["spark_binary"] == f"{ROOT}/.work/venv-jobs/bin/spark-submit"
            assert task["env_vars"] == {"PYSPARK_PYTHON": "{{ params.job_venv }}/bin/python",
                                        "PYSPARK_DRIVER_PYTHON": "{{ params.job_venv }}/bin/python"}


def test_cli_tasks_run_in_the_project_root(parsed):
    for dag in parsed["dags"].values():
        for task_id, task in dag["tasks"].items():
            if task["type"] == "@task.bash":
                assert task["cwd"] == "{{ params.project_root }}", task_id


def test_published_model_asset_links_the_two_dags(training, nightly):
    assert training["tasks"]["publish"]["outlets"] == [PUBLISHED_MODEL_URI]
    assert nightly["tasks"]["embed"]["inlets"] == [PUBLISHED_MODEL_URI]
    others = [t for dag in (training, nightly) for name, t in dag["tasks"].items()
              if name not in ("publish", "embed")]
    assert not any(t["inlets"] or t["outlets"] for t in others)


# --------------------------------------------------------------------------- runs

# A stand-in job environment: `metaprofile`, `spark-submit` and `python` that log their
# arguments and answer as the real ones do. spark-submit fails for the campaign "broken";
# evaluate says "better" except for the dates listed in FAKE_NOT_BETTER.
FAKE_METAPROFILE = r"""#!/usr/bin/env bash
set -euo pipefail
echo "metaprofile $*" >> "$FAKE_JOBS_LOG"
opt() { local name=$1; shift; while (($#)); do [[ $1 == "$name" ]] && { echo "$2"; return; }; shift; done; }
case "$1" in
  config) printf 'storage:\n  models: %s/models\n  reports: %s/reports\n' "$FAKE_ROOT" "$FAKE_ROOT" ;;
  train) echo "training progress" >&2; echo "artifact written"; echo "$(opt --out "$@")/v-$(opt --ds "$@")"
         echo "late log line" >&2 ;;
  evaluate) out=$(opt --out "$@"); mkdir -p "$out"; better=true
            [[ " $FAKE_NOT_BETTER " == *" $(opt --ds "$@") "* ]] && better=false
            printf '{"better": %s, "auroc": 0.7}\n' "$better" > "$out/decision.json"; echo evaluated
            if [[ " $* " == *" --print-decision "* ]]; then cat "$out/decision.json"; fi ;;
  publish) echo "published $(opt --model "$@")" ;;
  campaigns) echo "campaigns log line" >&2; printf '["c1", "broken", "c3", "../evil\\tid"]\n' ;;
  *) echo "fake metaprofile: unknown command $1" >&2; exit 2 ;;
esac
"""
FAKE_SPARK_SUBMIT = r"""#!/usr/bin/env bash
set -euo pipefail
while [[ $1 == --* ]]; do shift 2; done
echo "spark-submit $(basename "$1") ${*:2} PYSPARK_PYTHON=$PYSPARK_PYTHON" >> "$FAKE_JOBS_LOG"
if [[ " $* " == *" --campaign broken "* || $* == *evil* ]]; then echo "failed" >&2; exit 3; fi
"""


@pytest.fixture(scope="session")
def fake_jobs(tmp_path_factory, airflow_home) -> dict:
    root = tmp_path_factory.mktemp("fake-jobs")
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    scripts = {"metaprofile": FAKE_METAPROFILE, "spark-submit": FAKE_SPARK_SUBMIT,
               # PYSPARK_PYTHON of the spark-submits points here
               "python": f'#!/usr/bin/env bash\nexec {sys.executable} "$@"\n'}
    for name, text in scripts.items():
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    log = root / "jobs.log"
    env = airflow_env(airflow_home, METAPROFILE_JOB_VENV=str(venv), METAPROFILE_TASK_RETRIES="0",
                      FAKE_JOBS_LOG=str(log), FAKE_ROOT=str(root / "data"),
                      FAKE_NOT_BETTER="2026-06-29")
    return {"venv": venv, "log": log, "root": root / "data", "env": env}


def run_dag(fake_jobs: dict, dag_id: str, ds: str, conf: dict | None = None) -> tuple[dict, list]:
    """One dag.test() run; returns its result and the commands the stand-ins logged."""
    log = fake_jobs["log"]
    log.write_text("")
    result = run_probe(RUN_PROBE, str(DAGS), dag_id, ds, json.dumps(conf or {}),
                       env=fake_jobs["env"])
    return result, log.read_text().splitlines()


def states(result: dict) -> dict:
    return {(task_id if index < 0 else f"{task_id}[{label}]"): state
            for task_id, index, state, label in result["tasks"]}


@pytest.mark.slow
def test_training_run_publishes_a_better_model_and_emits_the_asset(fake_jobs):
    result, commands = run_dag(fake_jobs, "metaprofile_training", "2026-06-28",
                               {"train_args": "--steps 5", "evaluate_args": "--quick"})
    assert result["state"] == "success", result
    assert set(states(result).values()) == {"success"}
    config = str(ROOT / "conf" / "synthetic.yaml")
    models, model = f"{fake_jobs['root']}/models", f"{fake_jobs['root']}/models/v-2026-06-28"
    python = f"PYSPARK_PYTHON={fake_jobs['venv']}/bin/python"
    # `storage` (config show) is independent of encode and heatmaps; it precedes train.
    show = f"metaprofile config show --config {config}"
    assert commands.index(show) < commands.index(next(c for c in commands if " train " in c))
    assert [c for c in commands if c != show] == [
        f"spark-submit encode.py --config {config} --ds 2026-06-28 --full {python}",
        f"spark-submit heatmaps.py --config {config} --ds 2026-06-28 {python}",
        f"metaprofile train --config {config} --ds 2026-06-28 --out {models} --resume --steps 5",
        f"metaprofile evaluate --config {config} --ds 2026-06-28 --model {model} "
        f"--compare-published --out {fake_jobs['root']}/reports/evaluation/ds=2026-06-28 "
        "--print-decision --quick",
        f"metaprofile publish --config {config} --model {model}",
    ]
    assert result["asset_events"] == [[PUBLISHED_MODEL_URI,
                                       {"model_dir": model, "ds": "2026-06-28"}]]


@pytest.mark.slow
def test_training_run_skips_publishing_a_model_that_is_not_better(fake_jobs):
    result, commands = run_dag(fake_jobs, "metaprofile_training", "2026-06-29")
    assert result["state"] == "success"
    assert states(result)["better_than_published"] == "success"
    assert states(result)["publish"] == "skipped"
    assert not any(c.startswith("metaprofile publish") for c in commands)
    assert result["asset_events"] == []


@pytest.mark.slow
def test_nightly_run_checks_each_campaign_and_exports_despite_one_failure(fake_jobs):
    result, commands = run_dag(fake_jobs, "metaprofile_lookalike", "2026-06-30")
    assert states(result) == {
        "encode": "success", "embed": "success",
        "active_campaigns": "success", "campaign_arguments": "success",
        "support[c1]": "success", "support[broken]": "failed", "support[c3]": "success",
        # an id that breaks the identifier rule fails alone, labelled escaped, on one line
        'support["../evil\\tid"]': "failed",
        "score": "success", "export": "success", "failed_campaigns": "failed"}
    assert result["state"] == "failed"   # the broken campaign is not hidden
    config = str(ROOT / "conf" / "synthetic.yaml")
    jobs = [c.rsplit(" PYSPARK_PYTHON=", 1)[0] for c in commands
            if c.startswith("spark-submit")]
    args = f"--config {config} --ds 2026-06-30"
    assert jobs[:2] == [f"spark-submit encode.py {args}", f"spark-submit embed.py {args}"]
    assert sorted(jobs[2:6]) == sorted(f"spark-submit campaigns.py {args} --campaign {c}"
                                       for c in ("c1", "broken", "c3", "../evil\tid"))
    assert jobs[6:] == [f"spark-submit score.py {args}", f"spark-submit export.py {args}"]
    assert f"metaprofile campaigns {args} --active" in commands


# --------------------------------------------------------------------------- docker

COMPOSE = ROOT / "docker" / "compose.yaml"
AIRFLOW_SERVICES = ("airflow-init", "airflow-api-server", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer")

# The spark-submit command line the provider builds for a connection given as the
# environment variable AIRFLOW_CONN_SPARK_DEFAULT.
CONNECTION_PROBE = textwrap.dedent("""
    import json
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    hook = SparkSubmitHook(conn_id="spark_default", spark_binary="/jobs/bin/spark-submit")
    print("PROBE-RESULT " + json.dumps(hook._build_spark_submit_command("app.py")))
""")


@pytest.fixture(scope="module")
def compose() -> dict:
    import yaml
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_airflow_and_a_spark_cluster_on_shared_dags_and_data(compose):
    services = compose["services"]
    assert set(services) == {"postgres", *AIRFLOW_SERVICES, "spark-master", "spark-worker"}
    for name in AIRFLOW_SERVICES:
        service = services[name]
        env = service["environment"]
        assert service["image"] == "metaprofile-airflow:local"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
            "http://airflow-api-server:8080/execution/"
        assert env["AIRFLOW_CONN_SPARK_DEFAULT"] == "spark://spark-master:7077"
        assert "../dags:/opt/metaprofile/dags:ro" in service["volumes"]
        assert "metaprofile-data:/opt/metaprofile/.work/data" in service["volumes"]
    assert services["airflow-scheduler"]["command"] == ["scheduler"]
    assert services["airflow-dag-processor"]["command"] == ["dag-processor"]
    assert services["airflow-triggerer"]["command"] == ["triggerer"]
    assert services["airflow-api-server"]["command"][0] == "api-server"
    assert "pools set gpu" in services["airflow-init"]["command"][0]
    for name in ("spark-master", "spark-worker"):
        assert services[name]["image"] == "metaprofile-jobs:local"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.jobs"
    assert services["spark-worker"]["command"] == ["spark://spark-master:7077"]
    # executors write where the driver (in the scheduler container) resolved the paths
    assert "metaprofile-data:/opt/metaprofile/.work/data" in services["spark-worker"]["volumes"]
    assert set(compose["volumes"]) >= {"metaprofile-data", "postgres-db", "airflow-logs"}


def test_compose_paths_and_images_exist_and_match_the_dockerfiles(compose):
    airflow_build = compose["services"]["airflow-scheduler"]["build"]
    assert airflow_build["dockerfile"] == "docker/Dockerfile.airflow"
    assert airflow_build["additional_contexts"] == {"metaprofile-jobs": "service:spark-master"}
    for build in (airflow_build, compose["services"]["spark-master"]["build"]):
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).is_file()
        assert (ROOT / f"{build['dockerfile']}.dockerignore").is_file()
    assert (COMPOSE.parent / "../dags").resolve() == DAGS
    jobs_file = (ROOT / "docker" / "Dockerfile.jobs").read_text()
    airflow_file = (ROOT / "docker" / "Dockerfile.airflow").read_text()
    assert "pip install -r requirements/jobs.lock" in jobs_file
    assert "COPY requirements/airflow.lock" in airflow_file
    assert "-r /opt/airflow-venv/airflow.lock" in airflow_file
    assert "ARG JOBS_IMAGE=metaprofile-jobs" in airflow_file
    assert "FROM ${JOBS_IMAGE}" in airflow_file
    # the DAGs find the job environment and the project where the image puts them
    assert "METAPROFILE_JOB_VENV=/usr/local" in airflow_file
    assert "METAPROFILE_PROJECT_ROOT=/opt/metaprofile" in airflow_file


@pytest.mark.parametrize("connection, master", [
    ("spark://spark-master:7077", "spark://spark-master:7077"),       # docker/compose.yaml
    ('{"conn_type": "spark", "host": "local[*]"}', "local[*]"),        # dags/README.md
])
def test_spark_connections_resolve_to_the_intended_master(tmp_path, connection, master):
    command = run_probe(CONNECTION_PROBE,
                        env=airflow_env(tmp_path, AIRFLOW_CONN_SPARK_DEFAULT=connection))
    assert command[:3] == ["/jobs/bin/spark-submit", "--master", master]
