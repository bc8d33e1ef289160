"""Benchmark: the encoder's two engines and the single-process reference run, and the nightly run.

    .work/venv-jobs/bin/python bench/bench_encode.py                # 75,000 users, ~10.5 M raw rows
    .work/venv-jobs/bin/python bench/bench_encode.py --users 5000 --keep

Generates the synthetic data set once under ``.work/bench/encode-<users>`` (reused when
present; removed at the end unless ``--keep``), then prints one line per figure:

* the full encode (``encode.run(..., full=True, snapshot=False)``) in raw rows read per
  second, with each engine in the same session: the Spark engine (``raw.engine: spark``,
  column expressions) and the Arrow engine (the default here: one Spark task per landing
  date), their ratio, and Spark's stage metrics of each run (task time by stage: what
  bounds it); the snapshot assembly (``build_snapshot``) timed separately;
* the reference run (``bench/reference_encoder.py``: the Arrow engine in one process, no
  Spark, nothing written) on the same landing dates, with its time split into reading,
  encoding and sorting + writing the cells; the throughput ratios, and a check that all
  three give the same cells and accounting;
* the nightly run for the next date (one landing date + the snapshot of its window, which
  updates the full run's snapshot) as a share of the full encode + snapshot: once in the
  benchmark's warm Spark session, then twice as a scheduler runs it, timed from outside a
  fresh process: ``python jobs/encode.py`` (which starts a JVM only if a step needs Spark)
  and ``spark-submit jobs/encode.py`` (as the DAG runs it);
* (before any timing, one Python worker per core is started with the engine imported, as
  in a long-running application; the Spark engine needs none)
* peak resident memory of the Python driver, of Spark's JVM (``VmHWM`` of its process), and
  of the reference run's process.

Generation and the reference run each run in their own (spawned) processes, so that each
peak belongs to one workload.
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402

CONFIG = PROJECT_ROOT / "conf" / "synthetic.yaml"
OUTPUTS = ("events", "rejects", "snapshots")  # what the runs write; cleared before timing


def overrides(root: Path | str, engine: str = "auto") -> list[str]:
    return [f"storage.root={root}", "raw.max_reject_ratio=0.5", f"raw.engine={engine}"]


def load(root: Path, engine: str = "auto"):
    from schemas.config import load_config
    return load_config(CONFIG, overrides=overrides(root, engine))


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of a live process, from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def in_child(function: Callable[..., dict], *args: Any) -> dict:
    """Run ``function(*args)`` in a fresh spawned process and return its result."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# --------------------------------------------------------------------------- child workloads


def generate_data(root: str, users: int) -> dict:
    from metaprofile.datasets.synthetic import GeneratorOptions, generate
    started = time.perf_counter()
    report = generate(load(Path(root)), GeneratorOptions(users=users, extra_days=1),
                      progress=lambda message: print(f"  {message}", flush=True))
    return {"seconds": time.perf_counter() - started,
            "rows": sum(c["rows_written"] for c in report["sources"].values())}


def run_nightly_cold(root: str, ds: dt.date, master: str, submit: bool) -> dict:
    """The nightly run as a scheduler starts it, timed from outside the new process:
    ``python jobs/encode.py`` (as ``metaprofile encode``: Python first, and a JVM only if a
    step needs Spark), or ``spark-submit jobs/encode.py`` (as the DAG runs it: the JVM first,
    always)."""
    import json
    import re
    import subprocess

    venv = Path(sys.executable).parent
    launcher = [str(venv / "spark-submit"), "--master", master] if submit \
        else [sys.executable]
    command = [*launcher, str(PROJECT_ROOT / "jobs" / "encode.py"), "--config", str(CONFIG),
               "--ds", ds.isoformat(), *(a for o in overrides(root) for a in ("--set", o))]
    if not submit:
        command += ["--master", master]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {result.returncode}: "
                           f"{result.stderr[-2000:]}")
    # the report is the indented JSON object whose first line is "{". Under spark-submit the
    # job's log lines share stdout with it (Spark's PythonRunner merges the driver's stderr
    # into stdout), and some of them hold JSON too.
    opening = re.search(r"^\{$", result.stdout, re.MULTILINE)
    if opening is None:
        raise RuntimeError(f"no JSON report in the output of {' '.join(command[:3])} ...")
    report, _ = json.JSONDecoder().raw_decode(result.stdout, opening.start())
    return {"seconds": seconds, "report": report}


def run_reference(root: str, ds: dt.date) -> dict:
    """Time the reference run over the full run's landing dates; summarise its cells. A
    second pass times the phases of one landing date's task (read, encode, sort + write)."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.reference_encoder import encode_reference
    from jobs.encoding.arrow import cell_order, encode_table, read_files
    from jobs.encoding.validation import partition_dates
    from jobs.typed_read import data_files
    from schemas.contracts import RAW_SOURCES

    config = load(Path(root))
    dates = partition_dates(config, ds, full=True)
    started = time.perf_counter()
    result = encode_reference(config, dates)
    seconds = time.perf_counter() - started
    sums = result.cells.group_by("modality").aggregate([("value", "count"), ("value", "sum")])
    phases = {"read": 0.0, "encode": 0.0, "sort and write": 0.0}
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        for day in dates:
            for source in RAW_SOURCES:
                folder = Path(config.storage.uri(f"raw_{source}")) / f"dt={day}"
                if not folder.is_dir():
                    continue
                t0 = time.perf_counter()
                table = read_files(data_files(str(folder)), source, day)
                t1 = time.perf_counter()
                cells = encode_table(table, config, source, None).cells
                t2 = time.perf_counter()
                events = pa.concat_tables(cells).drop_columns(["dt"])
                events = events.take(pa.array(cell_order(events)))
                pq.write_table(events, f"{scratch}/part.parquet", compression="snappy")
                t3 = time.perf_counter()
                for name, spent in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                    phases[name] += spent
    return {"seconds": seconds, "sources": result.sources, "rows_read": result.rows_read,
            "cells": {m: (n, s) for m, n, s in zip(*(sums.column(c).to_pylist() for c in (
                "modality", "value_count", "value_sum")))},
            "phases": phases, "peak_rss_mib": peak_rss_mib()}


def warm_python_workers(spark) -> None:
    """Start a Python worker per core with the Arrow engine imported, as a scheduler's
    long-running Spark application (or the previous night's) would have them: otherwise
    the first timed run pays their start and imports and the second does not."""
    def touch(batches):
        import jobs.encoding.arrow  # noqa: F401  (numpy, pyarrow and the engine)
        yield from batches
    cores = spark.sparkContext.defaultParallelism
    spark.range(0, cores, 1, numPartitions=cores).mapInArrow(touch, "id BIGINT").count()


def completed_stages(spark) -> list[dict]:
    """Spark's status API: every completed stage of this application."""
    import json
    import urllib.request

    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{app}"
                                f"/stages?status=complete") as response:
        return json.load(response)


def last_stage(spark) -> int:
    return max((s["stageId"] for s in completed_stages(spark)), default=-1)


def stage_metrics(spark, since: int) -> list[tuple[str, float, float]]:
    """(stage name, task seconds, share of the run's task time) of the stages after stage id
    ``since``; the five largest."""
    stages = [s for s in completed_stages(spark) if s["stageId"] > since]
    total = sum(s["executorRunTime"] for s in stages) or 1
    top = sorted(stages, key=lambda s: -s["executorRunTime"])[:5]
    return [(s["name"].split(" at ")[0], s["executorRunTime"] / 1000,
             s["executorRunTime"] / total) for s in top]


def print_stages(label: str, stages: list) -> None:
    print(f"  {label}: task time by stage: " + "; ".join(
        f"{name} {seconds:.1f} s ({share:.0%})" for name, seconds, share in stages))


# --------------------------------------------------------------------------- the benchmark


def spark_cells(spark, config) -> dict[str, tuple[int, float]]:
    """Per modality: (cells, sum of values) of the published events."""
    from pyspark.sql import functions as F
    rows = (spark.read.parquet(config.storage.uri("events")).groupBy("modality")
            .agg(F.count(F.lit(1)).alias("n"), F.sum("value").alias("total")).collect())
    return {r["modality"]: (r["n"], r["total"]) for r in rows}


def same_cells(spark: dict, reference: dict) -> bool:
    return spark.keys() == reference.keys() and all(
        spark[m][0] == reference[m][0]
        and abs(spark[m][1] - reference[m][1]) <= 1e-6 * max(1.0, abs(spark[m][1]))
        for m in spark)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=75_000,
                        help="synthetic users (~140 raw rows each; default 75,000)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated data set for the next run")
    args = parser.parse_args(argv)
    work = configure_environment()
    from common import storage
    from jobs import encode
    from jobs.encoding.snapshot import build_snapshot
    from jobs.encoding.validation import partition_dates
    from jobs.spark import build_session

    root = work / "bench" / f"encode-{args.users}"
    config = load(root)
    ds = config.window.end
    if (root / "_generation.json").exists():
        print(f"data: reusing {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
        made = in_child(generate_data, str(root), args.users)
        print(f"data: generated {made['rows']:,} raw rows in {made['seconds']:.1f} s")
    for key in OUTPUTS:
        shutil.rmtree(storage.local_path(config.storage.uri(key)), ignore_errors=True)
    dates = partition_dates(config, ds, full=True)

    spark = build_session(f"metaprofile-bench-encode-{args.users}", master=args.master)
    try:
        jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
        warm_python_workers(spark)
        mark = last_stage(spark)
        started = time.perf_counter()
        spark_report = encode.run(spark, load(root, "spark"), ds, full=True, snapshot=False)
        spark_s = time.perf_counter() - started
        spark_stages = stage_metrics(spark, mark)
        spark_cells_found = spark_cells(spark, config)
        mark = last_stage(spark)
        started = time.perf_counter()
        report = encode.run(spark, config, ds, full=True, snapshot=False)
        encode_s = time.perf_counter() - started
        arrow_stages = stage_metrics(spark, mark)
        started = time.perf_counter()
        snapshot = build_snapshot(spark, config, ds)
        snapshot_s = time.perf_counter() - started
        jvm_full_mib = vm_hwm_mib(jvm_pid)
        full_cells = spark_cells(spark, config)
        nightly_ds = ds + dt.timedelta(days=1)  # the generator landed one day past ds
        started = time.perf_counter()
        nightly = encode.run(spark, config, nightly_ds)
        nightly_s = time.perf_counter() - started
        jvm_mib = vm_hwm_mib(jvm_pid)
    finally:
        spark.stop()
    driver_mib = peak_rss_mib()

    sources = report["sources"]
    rows = sum(s["rows_read"] for s in sources.values())
    encoded = sum(s["rows_encoded"] for s in sources.values())
    users = snapshot["modalities"].get("purchases", {}).get("users", 0)
    print(f"data: {args.users:,} users, {rows:,} raw rows ({encoded:,} encoded) in "
          f"{len(dates)} landing dates x {len(sources)} sources; cpus {os.cpu_count()}")
    print(f"full encode, Spark engine ({args.master}): {rows:,} rows in {spark_s:.1f} s = "
          f"{rows / spark_s:,.0f} events/s")
    print_stages("Spark engine", spark_stages)
    print(f"full encode, Arrow engine ({args.master}, {report['engine']}): {rows:,} rows in "
          f"{encode_s:.1f} s = {rows / encode_s:,.0f} events/s; "
          f"{spark_s / encode_s:.2f}x the Spark engine")
    print_stages("Arrow engine", arrow_stages)
    print(f"spark snapshot (ds={ds}): {snapshot_s:.1f} s for {users:,} users")

    reference = in_child(run_reference, str(root), ds)
    ref_rate, spark_rate = reference["rows_read"] / reference["seconds"], rows / encode_s
    print(f"reference run (the Arrow engine in 1 process, no Spark, no output written): "
          f"{reference['rows_read']:,} rows in {reference['seconds']:.1f} s = "
          f"{ref_rate:,.0f} events/s; one landing date's phases, summed: " + ", ".join(
              f"{name} {spent:.1f} s" for name, spent in reference["phases"].items()))
    print(f"encoder/reference throughput: {spark_rate / ref_rate:.2f}; "
          f"Spark engine/reference: {rows / spark_s / ref_rate:.2f}")
    agree = (same_cells(full_cells, reference["cells"])
             and same_cells(spark_cells_found, reference["cells"])
             and reference["sources"] == sources == spark_report["sources"])
    n_cells = sum(n for n, _ in full_cells.values())
    print(f"check: both engines vs reference: {n_cells:,} cells, "
          f"{sum(n for n, _ in reference['cells'].values()):,} reference cells, accounting and "
          f"per-modality value sums {'identical' if agree else 'DIFFER'}")
    full_s = encode_s + snapshot_s
    assembly = nightly["snapshot"]["assembly"]
    print(f"nightly run (ds={nightly_ds}: 1 landing date + snapshot), warm session: "
          f"{nightly_s:.1f} s = {100 * nightly_s / full_s:.1f}% of full encode + snapshot "
          f"({full_s:.1f} s); encode {nightly['encode_seconds']:.1f} s, snapshot "
          f"{nightly['snapshot']['seconds']:.1f} s ({assembly['mode']}, "
          f"{assembly.get('engine', 'spark')}"
          + (f", from ds={assembly['base_ds']}, {len(assembly['dates_rederived'])} dates "
             f"re-derived from {assembly['event_partitions_read']} partitions)"
             if assembly["mode"] == "incremental" else ")"))
    for submit, how in ((False, "python jobs/encode.py, a JVM only if a step needs Spark"),
                        (True, "spark-submit jobs/encode.py, as the DAG runs it")):
        cold = run_nightly_cold(str(root), nightly_ds, args.master, submit)
        snap = cold["report"]["snapshot"]
        print(f"nightly run, fresh process ({how}): {cold['seconds']:.1f} s = "
              f"{100 * cold['seconds'] / full_s:.1f}% of full encode + snapshot; encode "
              f"{cold['report']['encode_seconds']:.1f} s ({cold['report']['engine']} engine), "
              f"snapshot {snap['seconds']:.1f} s ({snap['assembly']['mode']}, "
              f"{snap['assembly'].get('engine', 'spark')})")
    print(f"peak memory: driver python RSS {driver_mib:,.0f} MiB; Spark JVM (pid {jvm_pid}) "
          f"VmHWM {jvm_full_mib:,.0f} MiB after full encode + snapshot, {jvm_mib:,.0f} MiB "
          f"after the nightly run; reference process RSS {reference['peak_rss_mib']:,.0f} MiB")
    if not args.keep:
        shutil.rmtree(root)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
