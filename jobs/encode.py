"""Encode raw purchase and points logs into sparse heatmap cells, then assemble the snapshot.

    spark-submit --master 'local[*]' jobs/encode.py --config conf/synthetic.yaml --ds 2026-06-30
    spark-submit jobs/encode.py --config conf/synthetic.yaml --ds 2026-06-30 --full
    metaprofile encode --config conf/synthetic.yaml --ds 2026-06-30

**Daily (default).** Encodes the raw landing partition ``dt=ds`` of each source:
1. Validate every row against ``schemas/``.
2. Quarantine bad rows with a reason.
3. Pseudonymise user ids.
4. Convert timestamps to the configured zone and bin them into local (date, hour).
5. Route genres and point types to channels.
6. Aggregate per (user, date, hour, channel).

**Full (``--full``).** Does the same for every landing partition that can hold events of
the window, in one job.

**Snapshot.** Either way, the window ending at ``ds`` is then assembled from the daily
partitions into per-user, per-modality relative arrays, plus the paper's text form. The
snapshot's manifest fingerprints every event partition it used. The next snapshot updates
the nearest published one: it shifts the arrays to its own window and re-derives only the
local dates that the earlier window lacked or whose partitions changed since
(``--full-snapshot`` reads every partition instead). On local storage with ``raw.engine:
auto`` that update runs in numpy and pyarrow (``jobs/encoding/snapshot_arrow.py``), so a
nightly run outside spark-submit starts no JVM: the session is started only when a step
needs it.

**Engines.** Steps 1 to 6 run in one of two engines with the same output. The Arrow engine
(``jobs/encoding/arrow.py``) takes local Parquet whose raw columns are text: one task per
landing date, no shuffle, a few Spark tasks per core (a single date runs in the driver).
The Spark engine (``jobs/encoding/validation.py`` and ``cells.py``, column expressions and
one shuffle by user) takes everything else, or any input with ``raw.engine: spark``.

**Layout.** Outputs are keyed by the *landing* date ``dt``, the same key as the raw
partitions. Each row is therefore read and accounted for by exactly one run, and the
``date`` column inside holds the event's local date. Every ``events/dt=…``,
``rejects/dt=…`` and ``snapshots/ds=…`` directory is staged and then renamed into place, so
readers see a whole partition or none. Each carries ``_SUCCESS`` and a ``_manifest.json``
with the exact row accounting.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Iterable, Sequence

if __package__ in (None, ""):  # spark-submit jobs/encode.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import erasures
from common.privacy import load_pseudonym_key, pseudonymise_batches
from common.publish import Publisher
from jobs import runner
from jobs.encoding import arrow
from jobs.encoding.cells import collapse_copies, encode_cells, reject_records, rejected_copies
from jobs.encoding.snapshot import build_snapshot
from jobs.encoding.validation import (
    EncodeError,
    check_missing,
    existing_paths,
    landing_partitions,
    missing_dates,
    parse_and_validate,
    partition_dates,
    read_raw,
    trimmed_id,
    window_dates,
)
from jobs.runner import Job, JobContext, UsageError
from jobs.spark import erased_flag, publisher_for, session_of, union_all
from jobs.typed_read import InputTypeError, check_local_inputs
from schemas.config import PipelineConfig
from schemas.contracts import RAW_SOURCES

log = logging.getLogger("metaprofile.encode")


def check_reject_ratio(accounting: dict, limit: float) -> None:
    """Fail when the rejected share of any source exceeds ``limit``, naming the top reason."""
    for source, counts in accounting.items():
        read, rejected = counts["rows_read"], sum(counts["rows_rejected"].values())
        if read and rejected / read > limit:
            reason, n = max(counts["rows_rejected"].items(), key=lambda kv: kv[1])
            raise EncodeError(
                f"{source}: {rejected:,} of {read:,} rows rejected ({rejected / read:.2%}), "
                f"above raw.max_reject_ratio {limit:.2%}; most are {reason} ({n:,}). The "
                f"rejects are published for inspection; no events were published")


def account(per_date: dict, source: str, counts: Iterable) -> None:
    """Fold (dt, reason, rows, duplicates) count rows into the per-landing-date accounting."""
    for row in counts:
        entry = per_date[row["dt"].isoformat()].setdefault(
            source, {"rows_read": 0, "rows_encoded": 0, "rows_rejected": {}})
        entry["rows_read"] += row["rows"]
        if row["reason"] == erasures.ERASED:  # a listed user's rows: counted, never kept
            entry["rows_erased"] = entry.get("rows_erased", 0) + row["rows"]
        elif row["reason"] is None:
            entry["rows_encoded"] += row["rows"] - row["duplicates"]
            if row["duplicates"]:
                entry["rows_rejected"]["duplicate_row"] = row["duplicates"]
        else:
            entry["rows_rejected"][row["reason"]] = row["rows"]


def run(spark, config: PipelineConfig, ds: dt.date, full: bool = False,
        snapshot: bool = True, incremental_snapshot: bool = True) -> dict:
    """Encode the landing partitions for ``ds`` and assemble its snapshot; return the report.

    ``spark`` is a session, or a function that starts one: a nightly run on local storage,
    with the Arrow engine and an Arrow snapshot update, never calls it (no JVM).
    """
    started = time.perf_counter()
    key = load_pseudonym_key(config.pseudonymisation)
    erased = erasures.digests(config)
    dates = partition_dates(config, ds, full)
    publisher = publisher_for(spark, config)
    events_uri, rejects_uri = config.storage.uri("events"), config.storage.uri("rejects")
    per_date: dict[str, dict] = {d.isoformat(): {} for d in dates}
    landed = {source: existing_paths(publisher, landing_partitions(
        config.storage.uri(f"raw_{source}"), dates)) for source in RAW_SOURCES}
    missing = {}
    if full:  # a source with no partition at all is absent (no points programme), not late
        missing = {source: missing_dates(window_dates(config, ds),
                                         [p.rsplit("/dt=", 1)[1] for p in paths])
                   for source, paths in landed.items() if paths}
        check_missing(missing, "landing partition(s) of the window", config.raw.missing_partitions)
    else:
        for source, paths in landed.items():
            if not paths:
                raise EncodeError(f"no raw {source} partition dt={ds} under "
                                  f"{config.storage.uri(f'raw_{source}')}")
    landed = {source: paths for source, paths in landed.items() if paths}
    if config.raw.format == "parquet":
        # Every local file's column types, checked before any Spark job starts.
        try:
            check_local_inputs({f"raw {s}": (p, RAW_SOURCES[s]) for s, p in landed.items()})
        except InputTypeError as exc:
            raise EncodeError(str(exc)) from None
    why_not_arrow = arrow.usable(config, landed)
    engine = "spark" if why_not_arrow else "arrow"
    log.info("encoding with the %s engine%s", engine,
             f" ({why_not_arrow})" if why_not_arrow else "")
    events_staging = publisher.staging(f"{events_uri}/_run")
    rejects_staging = publisher.staging(f"{rejects_uri}/_run")
    cached: list = []
    try:
        if engine == "arrow":
            counts, write_events = _encode_arrow(spark, config, landed, key, erased,
                                                 events_staging, rejects_staging), None
        else:
            counts, write_events = _encode_spark(session_of(spark), config, landed, key, erased,
                                                 rejects_staging, cached)
        for source, rows in counts.items():
            account(per_date, source, rows)
        for source, paths in landed.items():  # a landed partition without rows: zeros
            for path in paths:
                per_date[path.rsplit("/dt=", 1)[1]].setdefault(
                    source, {"rows_read": 0, "rows_encoded": 0, "rows_rejected": {}})
        sources = totals(per_date)
        log.info("accounting: %s", json.dumps(sources))
        _publish_partitions(publisher, rejects_staging, rejects_uri, per_date, "dt")
        check_reject_ratio(sources, config.raw.max_reject_ratio)
        if write_events is not None:
            write_events(events_staging)
        manifests = {d: {"dt": d, "ds": ds.isoformat(), "config": config.name,
                         "pseudonymised": key is not None, "sources": per_date[d],
                         "missing_sources": [s for s in landed if not any(
                             p.endswith(f"/dt={d}") for p in landed[s])]}
                     for d in per_date}
        _publish_partitions(publisher, events_staging, events_uri, per_date, "dt", manifests)
    finally:
        for frame in cached:
            frame.unpersist()
        publisher.cleanup()
    report = {"ds": ds.isoformat(), "mode": "full" if full else "daily", "engine": engine,
              "partitions": len(dates), "missing_landing_partitions": missing,
              "sources": sources, "encode_seconds": round(time.perf_counter() - started, 2)}
    if snapshot:
        report["snapshot"] = build_snapshot(spark, config, ds, publisher,
                                            incremental=incremental_snapshot)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _encode_arrow(spark, config: PipelineConfig, landed: dict, key, erased: list[str],
                  events_staging: str, rejects_staging: str) -> dict[str, list]:
    """The Arrow engine: a task per landing date writes the date's events and rejects into
    the staging folders (``jobs/encoding/arrow.py``), on the executors, or in the driver
    when there is one date; returns each source's count rows."""
    from common import storage

    tasks = arrow.landing_tasks(landed)
    if not tasks:
        return {}
    events_dir, rejects_dir = (storage.local_path(events_staging),
                               storage.local_path(rejects_staging))
    if len(tasks) == 1:
        # One landing date (the nightly run) is one task: the driver runs it, as a Spark job
        # would only add a Python worker's start and imports (measured 4.7 s of a cold
        # nightly encode of 7,397 rows).
        log.info("arrow engine: 1 landing date, encoded in the driver")
        rows = arrow.landing_task(tasks[0], config, key, frozenset(erased), events_dir,
                                  rejects_dir)
    else:
        rows = _arrow_tasks(session_of(spark), tasks, config, key, erased, events_dir, rejects_dir)
    counts: dict[str, list] = {}
    for row in rows:
        counts.setdefault(row["source"], []).append(row)
    return counts


def _arrow_tasks(spark, tasks: list, config: PipelineConfig, key, erased: list[str],
                 events_dir: str, rejects_dir: str) -> list:
    """Run the landing-date tasks on the executors; their COUNTS rows."""
    # A few Spark tasks per core, each encoding its share of the landing dates in turn:
    # every Spark task pays for unpickling the function in its Python worker (one Spark
    # task per landing date measured 27.6 s for a year that 2 bare processes encode in
    # 15.6 s), and several per core still balance uneven dates.
    slots = min(len(tasks), 4 * spark.sparkContext.defaultParallelism)
    log.info("arrow engine: %d landing date(s) in %d Spark task(s)", len(tasks), slots)
    function = arrow.landing_tasks_function(tasks, config, key, frozenset(erased), events_dir,
                                            rejects_dir)
    return (spark.range(0, len(tasks), 1, numPartitions=slots)
            .mapInArrow(function, arrow.COUNTS_DDL).collect())


def _encode_spark(spark, config: PipelineConfig, landed: dict, key, erased: list[str],
                  rejects_staging: str, cached: list):
    """The Spark engine (every raw format, any storage): validates with column expressions,
    writes the rejects to their staging folder and returns each source's count rows and a
    function that writes the events (called once the reject ratio has been checked)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    cell_frames, reject_frames, counts = [], [], {}
    for source, paths in landed.items():
        log.info("%s: reading %d landing partition(s)", source, len(paths))
        checked = (parse_and_validate(read_raw(spark, config, source, paths), config, source)
                   .withColumn("dt", F.col("dt").cast("date")))
        if erased:
            checked = mark_erased(spark, checked, erased)
        groups = collapse_copies(checked, source).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(groups)
        valid = groups.where(F.col("reason").isNull())
        cell_frames.append(encode_cells(
            valid.withColumn("user_id", trimmed_id(F.col("user_id"))), config, source))
        kept = groups.where(~F.col("reason").eqNullSafe(erasures.ERASED))
        reject_frames.append(reject_records(rejected_copies(kept), source))
        # Exact accounting per landing date; this pass also fills the cache.
        counts[source] = (groups.groupBy("dt", "reason")
                          .agg(F.sum("copies").alias("rows"),
                               F.sum(F.when(F.col("reason").isNull(), F.col("copies") - 1))
                               .alias("duplicates"))
                          .collect())
        log.info("%s: validated %s rows", source,
                 f"{sum(r['rows'] for r in counts[source]):,}")
    # Rejects are few: gather each landing date's into one task, so the write creates one
    # file per date instead of one per (task, date) (measured: about 65 s of a 234 s
    # full-year run went into creating ~6,000 small files).
    if reject_frames:
        (union_all(reject_frames).repartition("dt")
         .write.partitionBy("dt").mode("overwrite").parquet(rejects_staging))

    def write_events(events_staging: str) -> None:
        if not cell_frames:
            return
        cells = union_all(cell_frames)
        if key is not None:
            cells = cells.mapInArrow(pseudonymise_batches(key), cells.schema)
        # One file per landing date (writing straight from the user partitions measured
        # slower: every task then writes a small file into every date).
        (cells.repartition("dt")
         .sortWithinPartitions("user_id", "modality", "date", "hour", "channel")
         .write.partitionBy("dt").mode("overwrite").parquet(events_staging))
    return counts, write_events


def mark_erased(spark, checked, digests: list[str]):
    """``reason`` = erased for the rows of users on the erasure list; they are counted, not
    rejected (their rows never reach the rejects either)."""
    from pyspark.sql import functions as F

    return (erased_flag(spark, checked, digests)
            .withColumn("reason", F.when(F.col("_erased"), F.lit(erasures.ERASED))
                        .otherwise(F.col("reason")))
            .drop("_erased"))


def totals(per_date: dict) -> dict:
    totals: dict[str, dict] = {}
    for sources in per_date.values():
        for source, c in sources.items():
            t = totals.setdefault(source, {"rows_read": 0, "rows_encoded": 0,
                                           "rows_rejected": {}})
            t["rows_read"] += c["rows_read"]
            t["rows_encoded"] += c["rows_encoded"]
            if c.get("rows_erased"):
                t["rows_erased"] = t.get("rows_erased", 0) + c["rows_erased"]
            for reason, n in c["rows_rejected"].items():
                t["rows_rejected"][reason] = t["rows_rejected"].get(reason, 0) + n
    return totals


def _publish_partitions(publisher: Publisher, staging_root: str, final_root: str,
                        per_date: dict, column: str, manifests: dict | None = None) -> None:
    """Move each ``column=date`` directory of a staged write into place, one by one.

    A date with no rows still gets an (empty) published partition, so a rerun of a day that
    lost all its rows replaces the old output instead of leaving it behind.
    """
    for d in per_date:
        staged = f"{staging_root}/{column}={d}"
        publisher.mkdirs(staged)
        if manifests is not None:
            publisher.write_text(f"{staged}/_manifest.json", json.dumps(manifests[d], indent=2))
        publisher.publish(staged, f"{final_root}/{column}={d}")
    publisher.delete(staging_root)


# --------------------------------------------------------------------------- entry point


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="encode every landing date of the window, not only --ds")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                      help="only encode; do not assemble the snapshot")
    mode.add_argument("--snapshot-only", action="store_true",
                      help="do not encode; only assemble the snapshot of --ds from the daily "
                           "partitions already encoded")
    parser.add_argument("--full-snapshot", dest="incremental_snapshot", action="store_false",
                        help="assemble the snapshot from every daily partition of the window; "
                             "by default the nearest published snapshot is updated, "
                             "re-deriving only the dates whose partitions changed since")


def _run(job: JobContext) -> dict:
    args = job.args
    if args.full and args.snapshot_only:
        raise UsageError("--full and --snapshot-only exclude each other")
    if args.snapshot_only:
        return {"ds": job.ds.isoformat(), "snapshot": build_snapshot(
            lambda: job.spark, job.config, job.ds, incremental=args.incremental_snapshot)}
    return run(lambda: job.spark, job.config, job.ds, full=args.full, snapshot=args.snapshot,
               incremental_snapshot=args.incremental_snapshot)


JOB = Job(
    name="encode", run=_run, arguments=_arguments,
    description="Encode raw purchase and points logs of one landing date (or, with --full, of "
                "the whole window) into daily sparse heatmap cells with quarantined rejects "
                "and exact row accounting, then assemble the snapshot of the window ending at "
                "--ds.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
