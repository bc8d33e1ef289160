"""The main job: the whole pipeline on the demo data, run through the Airflow DAGs.

1. Write the demo data with the job environment: the synthetic data set and The Complete
   Journey, landed in the raw contracts by its import mapping (``metaprofile completejourney``).
2. For each data set, ``airflow dags test`` (Airflow environment, SQLite, Spark
   ``local[*]``, TensorFlow on CPU) runs ``metaprofile_training`` (encode the window,
   heatmaps, meta-train a demo-scale network, evaluate, publish when better) and then
   ``metaprofile_lookalike`` (encode the day, snapshot, embed, campaign support sets, one-pass
   scoring, export).
3. Print the wall time of every task and where the model, the evaluation report and the
   segments are.

The DAGs, not this module, decide what runs: it only prepares the data and the Airflow home,
and reads back what happened.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from common import catalog
from common.workdir import PROJECT_ROOT, work_dir

log = logging.getLogger("metaprofile.demo")

# A demo-scale network: Table 2's shape at an eighth of its width, a few hundred episodes.
DEMO_TRAIN_ARGS = ("--width 0.125 --embedding-dim 64 --steps 300 --validate-every 100 "
                   "--val-batches 10 --checkpoint-every 100 --log-every 50")
DEMO_EVALUATE_ARGS = "--quick"

RUN_PROBE = """
import json, sys
from sqlalchemy import select
from airflow import settings
from airflow.models.dagrun import DagRun
if settings.Session is None:
    settings.configure_orm()
session = settings.Session()
run = session.scalars(select(DagRun).where(DagRun.dag_id == sys.argv[1])
                      .order_by(DagRun.id.desc()).limit(1)).one()
tasks = []
for ti in sorted(run.get_task_instances(session=session),
                 key=lambda t: (t.start_date is None, t.start_date)):
    name = ti.task_id + ("" if ti.map_index < 0 else f"[{ti.rendered_map_index}]")
    tasks.append([name, str(getattr(ti.state, "value", ti.state)), ti.duration])
print("DEMO-RUN " + json.dumps({"state": str(getattr(run.state, "value", run.state)),
                                "tasks": tasks}))
"""


def airflow_python() -> str:
    python = os.environ.get("METAPROFILE_AIRFLOW_PYTHON") or str(
        work_dir() / "venv-airflow" / "bin" / "python")
    if not Path(python).exists():
        raise FileNotFoundError(f"no Airflow environment at {python}; run `./run setup`")
    return python


def airflow_environment(home: Path) -> dict[str, str]:
    job_venv = str(Path(sys.executable).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[*]"}),
        "METAPROFILE_PROJECT_ROOT": str(PROJECT_ROOT),
        "METAPROFILE_JOB_VENV": job_venv,
        "METAPROFILE_TASK_RETRIES": "0",  # a demo should stop at the first failure
    })
    return env


def run_dag(dag_id: str, ds: str, conf: dict, env: dict[str, str], logs: Path) -> dict:
    """``airflow dags test`` one DAG for ``ds``; its log goes to a file, progress to stderr."""
    airflow = str(Path(airflow_python()).with_name("airflow"))
    log_file = logs / f"{dag_id}-{Path(conf['config']).stem}-{ds}.log"
    log.info("airflow dags test %s %s (log: %s)", dag_id, ds, log_file)
    started = time.perf_counter()
    with log_file.open("w") as out:
        code = subprocess.run([airflow, "dags", "test", dag_id, ds, "--conf", json.dumps(conf)],
                              stdout=out, stderr=subprocess.STDOUT, env=env,
                              cwd=PROJECT_ROOT).returncode
    probe = subprocess.run([airflow_python(), "-c", RUN_PROBE, dag_id], capture_output=True,
                           text=True, env=env, cwd=PROJECT_ROOT)
    lines = [ln for ln in probe.stdout.splitlines() if ln.startswith("DEMO-RUN ")]
    run = json.loads(lines[-1][len("DEMO-RUN "):]) if lines else {"state": "unknown", "tasks": []}
    run.update(returncode=code, seconds=time.perf_counter() - started, log=str(log_file))
    return run


def format_run(dag_id: str, run: dict) -> list[str]:
    lines = [f"  {dag_id}: {run['state']} in {run['seconds']:.0f} s (log {run['log']})"]
    for name, state, seconds in run["tasks"]:
        took = "" if seconds is None else f"{seconds:7.1f} s"
        lines.append(f"    {name:<28} {state:<16} {took}")
    return lines


def segment_quality(config) -> list[str]:
    """Per exported campaign: the held-out seeds' recall at the segment's reach and the lift
    over a random segment of the same size (from each segment's manifest), beside the lift
    of the segment a DMP would have exported from the same seeds
    (``metaprofile.segment_check``), then the medians. Held-out seeds are positive seeds
    kept out of the support set (``lookalike.holdout``), so this is the segment's only
    out-of-sample check."""
    import glob
    import statistics

    from common import storage
    from metaprofile.segment_check import dmp_lifts
    ds = config.window.end
    root = catalog.partition(config, "segments", ds)
    dmp = dmp_lifts(config, ds)
    lines, lifts, dmp_values = [], [], []
    for path in sorted(glob.glob(f"{root}/campaign=*/_manifest.json")):
        manifest = storage.read_json(path)
        quality = manifest.get("precision", {})
        recall, reach = quality.get("holdout_recall"), quality.get("reach")
        lift, other = quality.get("lift_over_random"), dmp.get(manifest["campaign_id"])
        if lift is not None:
            lifts.append(lift)
        if other is not None:
            dmp_values.append(other)
        lines.append(f"    {manifest['campaign_id']:<28} held-out seeds "
                     f"{quality.get('holdout_seeds', 0):>4}  recall "
                     f"{'n/a' if recall is None else f'{recall:6.1%}'} at reach "
                     f"{'n/a' if reach is None else f'{reach:6.1%}'}  lift "
                     f"{'n/a' if lift is None else f'{lift:5.2f}x'}  (DMP "
                     f"{'n/a' if other is None else f'{other:5.2f}x'})")
    if not lines:
        return [f"  {config.name}: no exported segment under {root}"]
    median = f"{statistics.median(lifts):.2f}x" if lifts else "n/a"
    dmp_median = f"{statistics.median(dmp_values):.2f}x" if dmp_values else "n/a"
    return [f"  {config.name}: segment quality on held-out seeds: median lift {median} over "
            f"{len(lifts)} campaigns; a DMP's segments (logistic regression on the aggregates, "
            f"same seeds): {dmp_median}", *lines]


def conversion_quality(config, days: int = 30) -> list[str]:
    """The segments measured as a campaign owner would, on the synthetic world (where the
    generator knows each user's adoption probability): later conversions drawn from that
    model (``synthetic.draw_conversions``, no ad effect), then per campaign the lift over the
    population of the exported selection (segment and control group: with no ad effect
    every member counts) beside that of the segment the DMP builds from the same seeds, and
    ``metaprofile measure``'s control-group lift. Empty on a data set without ground truth."""
    import glob

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from common import storage
    from common.privacy import load_pseudonym_key
    from jobs import measure
    from metaprofile.datasets.synthetic import draw_conversions
    from metaprofile.segment_check import dmp_segments
    truth_uri = config.storage.uri("ground_truth")
    if not storage.exists(truth_uri):
        return []
    fs, path = storage.resolve(truth_uri)
    truth = pq.read_table(path, filesystem=fs)
    ds = config.window.end
    since = ds + dt.timedelta(days=1)
    dmp = dmp_segments(config, ds)
    key = load_pseudonym_key(config.pseudonymisation)
    folder = Path(storage.join(config.storage.uri("reports"), "measure", "conversions",
                               f"ds={ds}"))
    folder.mkdir(parents=True, exist_ok=True)
    lines, ours, theirs = [], [], []
    root = catalog.partition(config, "segments", ds)
    for manifest_path in sorted(glob.glob(f"{root}/campaign=*/_manifest.json")):
        campaign = storage.read_json(manifest_path)["campaign_id"]
        task = campaign.removeprefix("cmp_")
        if f"p_{task}" not in truth.column_names or dmp.get(campaign) is None:
            continue
        conversions = folder / f"{campaign}.csv"
        pacsv.write_csv(draw_conversions(truth, task, since, days), str(conversions))
        document = measure.run(config, ds, campaign, str(conversions))
        groups = document["measurement"]["groups"]
        # the whole selection (segment and control group) from measure's own counts; the
        # DMP's segment against the same conversions
        mp = measure.ratio(measure.rate(
            groups["treated"]["converters"] + groups["control"]["converters"],
            groups["treated"]["members"] + groups["control"]["members"]), groups["population"])
        per_user, _ = measure.read_conversions(str(conversions), key, since, None)
        members = dmp[campaign]["members"]
        other = measure.ratio(measure.rate(sum(u in per_user for u in members), len(members)),
                              groups["population"])
        control = document["measurement"]["segment_lift"]
        for value, into in ((mp, ours), (other, theirs)):
            if value["ratio"] is not None:
                into.append(value["ratio"])
        lines.append(f"    {campaign:<28} Meta-Profile {_ratio(mp)}  DMP {_ratio(other)}  "
                     f"control group alone (n={groups['control']['members']}) {_ratio(control)}")
    if not lines:
        return []
    return [f"  {config.name}: lift over the population on {days} days of later conversions "
            f"drawn from the generator's adoption model (no ad effect): median "
            f"Meta-Profile {_median(ours)}, DMP {_median(theirs)} (95 % intervals; reports "
            f"under {storage.join(config.storage.uri('reports'), 'measure')})", *lines]


def _ratio(r: dict) -> str:
    if r["ratio"] is None:
        return "  n/a"
    ends = ["–" if v is None else f"{v:.2f}" for v in (r["low"], r["high"])]
    return f"{r['ratio']:5.2f}x [{ends[0]}, {ends[1]}]"


def _median(values: list[float]) -> str:
    import statistics
    return f"{statistics.median(values):.2f}x" if values else "n/a"


def run_demo(configs: list, users: int, seed: int, train_args: str = DEMO_TRAIN_ARGS,
             evaluate_args: str = DEMO_EVALUATE_ARGS) -> int:
    """Prepare the data, run both DAGs per data set, print timings and where things are."""
    from common import storage
    from metaprofile.datasets.completejourney import land
    from metaprofile.datasets.synthetic import GeneratorOptions, generate

    started = time.perf_counter()
    home = work_dir() / "airflow"
    logs = work_dir() / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = airflow_environment(home)
    migrate = subprocess.run([str(Path(airflow_python()).with_name("airflow")), "db", "migrate"],
                             capture_output=True, text=True, env=env, cwd=PROJECT_ROOT)
    if migrate.returncode != 0:
        print(migrate.stdout[-2000:] + migrate.stderr[-2000:], file=sys.stderr)
        return 1
    report: list[str] = []
    failed = False
    resolved = work_dir() / "demo-configs"
    resolved.mkdir(parents=True, exist_ok=True)
    for config in configs:
        # Absolute storage paths, so every task finds the data whatever its working folder.
        path = resolved / f"{config.name}.yaml"
        path.write_text(config.to_yaml())
        step = time.perf_counter()
        from metaprofile.datasets.reports import format_generation_report, format_landing_report
        if config.name == "completejourney":
            log.info("The Complete Journey -> raw contracts (import and tasks)")
            print(format_landing_report(land(config), config.storage.root), flush=True)
        else:
            log.info("synthetic data set: %s users", f"{users:,}")
            print(format_generation_report(generate(config, GeneratorOptions(users=users,
                                                                              seed=seed)),
                                           config.storage.root), flush=True)
        report.append(f"{config.name}: data written in {time.perf_counter() - step:.0f} s")
        ds = config.window.end.isoformat()
        training = run_dag("metaprofile_training", ds, {
            "config": str(path), "train_args": train_args, "evaluate_args": evaluate_args},
            env, logs)
        report += format_run("metaprofile_training", training)
        published = storage.join(config.storage.uri("models"), "published.json")
        if training["state"] != "success":
            failed = True
            continue
        if not storage.exists(published):
            report.append(f"  the evaluation did not find the new model better; nothing is "
                          f"published for {config.name}, so the nightly run is skipped")
            continue
        nightly = run_dag("metaprofile_lookalike", ds, {"config": str(path)}, env, logs)
        report += format_run("metaprofile_lookalike", nightly)
        # A campaign that fails its checks fails its own mapped task and, by design, the
        # run; the demo reports it but only fails for anything else.
        broken = [name for name, state, _ in nightly["tasks"] if state == "failed"
                  and not name.startswith("support[") and name != "failed_campaigns"]
        campaigns = [name[len("support["):-1] for name, state, _ in nightly["tasks"]
                     if name.startswith("support[") and state == "failed"]
        if campaigns:
            report.append(f"  campaigns that failed their checks: {', '.join(campaigns)} "
                          f"(see supports/ds={ds}/campaign=<id>/support.json)")
        failed |= bool(broken) or nightly["returncode"] != 0 and not campaigns
        report += segment_quality(config)
        report += conversion_quality(config)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s\n" + "\n".join(report))
    print("\nwhere things are:")
    for config in configs:
        root = config.storage
        ds = config.window.end.isoformat()
        pointer = storage.join(root.uri("models"), "published.json")
        model = storage.read_json(pointer)["path"] if storage.exists(pointer) else "(none published)"
        print(f"  {config.name}:")
        print(f"    model        {model}")
        print(f"    evaluation   {root.uri('reports')}/evaluation/ds={ds}/report.md")
        print(f"    segments     {root.uri('segments')}/ds={ds}/campaign=*/segment.csv")
    return 1 if failed else 0
