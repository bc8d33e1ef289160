"""Build the label files of the tasks that the config defines by a rule, not a label file.

    metaprofile tasks --config conf/my_retailer.yaml
    spark-submit jobs/tasks.py --config conf/my_retailer.yaml

A source or target task with a ``rule`` (``schemas.config.TaskRule``) gets its labels from
the raw purchase log, read and validated as the encoder reads it (``jobs/encode.py``): only
valid purchase rows count (a row whose genre no channel routes still counts, as the rule
names its own genre), an exact copy counts once, and dates are local to
``window.timezone``. With W the window and P the task's label period:

* ``new_buyer``: 1 = a purchase of the genre in P and none in W; 0 = none in W or P;
* ``buys_at_least``: 1 = at least ``times`` purchases of the genre in P; 0 = fewer;

among the universe: ``active`` users (a purchase in W and one in P) or ``all`` (a purchase
in W or P); users outside it, and new_buyer's earlier buyers, get no row (unlabelled).
A source task's P may lie inside the window, at a backtest cut (``tasks.behaviour``); W is
then the window's days before P.

Two kinds read other tables and need no label period:

* ``attribute``: a SQL condition over the demographics table (as landed): 1 where true, 0
  where false, no row where null or without a demographics row;
* ``query``: a SQL SELECT over the ``import.tables`` views returning ``user_id`` and
  ``label`` (1, 0, or null for no row); a user twice, or another label, fails the task.

Rows of tasks without a rule in an existing label file are kept as they are (hand-made
labels keep working); a rule task's rows are replaced. Each file is rewritten atomically.
The counts per task are printed and written to ``<labels uri>/_tasks.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Sequence

if __package__ in (None, ""):  # spark-submit jobs/tasks.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import storage
from common.errors import PipelineError
from common.publish import Publisher
from jobs import runner
from jobs.encoding.validation import landing_partitions, parse_and_validate, read_raw
from jobs.ingest import (
    NANOS_AS_LONG,
    IngestError,
    register_tables,
    restore_conf,
    run_query,
    set_conf,
)
from jobs.runner import Job
from jobs.typed_read import InputTypeError, read_folder
from schemas.config import PipelineConfig, TaskConfig, rule_dict
from schemas.contracts import LABELS, RAW_SOURCES, demographics_schema, spark_ddl

log = logging.getLogger("metaprofile.tasks")


class TasksError(PipelineError, ValueError):
    """Rule tasks that cannot be built (no raw log for the periods, no rule task)."""


def ruled(config: PipelineConfig) -> dict[str, list[tuple[str, TaskConfig]]]:
    """``{labels storage key: [(config field, rule task)]}``."""
    return {key: [(f"tasks.{side}[{i}].rule", t) for i, t in enumerate(tasks)
                  if t.rule is not None]
            for key, side, tasks in (("source_labels", "source", config.source_tasks),
                                     ("target_labels", "target", config.target_tasks))}


def purchases(spark, config: PipelineConfig, last: dt.date):
    """Valid purchase rows (user_id, genre, date) from the window's start to ``last``."""
    from pyspark.sql import functions as F

    start = config.window.start(config.window.end) - dt.timedelta(days=1)
    dates = [start + dt.timedelta(days=i) for i in range((last - start).days + 2)]
    uri = config.storage.uri("raw_purchases")
    paths = [p for p in landing_partitions(uri, dates) if storage.exists(p)]
    if not paths:
        raise TasksError(f"no raw purchases under {uri} for {start} .. {last}: the rules need "
                         "the window and the label periods")
    rows = parse_and_validate(read_raw(spark, config, "purchases", paths), config, "purchases")
    keep = (F.col("reason").isNull() | (F.col("reason") == "unknown_genre")) & (
        F.lower(F.trim("status")) == "purchase")
    return (rows.where(keep).dropDuplicates(list(RAW_SOURCES["purchases"].names))
            .select("user_id", F.trim("genre").alias("genre"), "date"))


def attribute_labels(demographics, task: TaskConfig, field: str):
    """(user_id, task, label) of an ``attribute`` rule over the demographics table."""
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql import functions as F

    try:
        condition = F.expr(task.rule.condition)
        demographics.select(condition)
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise TasksError(f"{field}.condition: cannot use {task.rule.condition!r}: {first}. "
                         f"The demographics fields are {', '.join(demographics.columns[1:])}"
                         ) from None
    label = F.when(condition, 1).when(~condition, 0)
    return (demographics.select("user_id", F.lit(task.name).alias("task"),
                                label.cast("tinyint").alias("label"))
            .where(F.col("label").isNotNull()))


def query_labels(spark, config: PipelineConfig, task: TaskConfig, field: str,
                 views: Sequence[str]):
    """(user_id, task, label) of a ``query`` rule; its result is checked first."""
    from pyspark.sql import functions as F

    try:
        frame = run_query(spark, config, task.rule.query, f"{field}.query", views)
    except IngestError as exc:
        raise TasksError(str(exc)) from None
    missing = [c for c in ("user_id", "label") if c not in frame.columns]
    if missing:
        raise TasksError(f"{field}.query returns {', '.join(frame.columns)}; it must return "
                         "user_id and label (1, 0, or null for unlabelled)")
    rows = frame.select(F.col("user_id").cast("string").alias("user_id"),
                        F.col("label").cast("int").alias("label"))
    bad = rows.where(F.col("user_id").isNull() | ~F.coalesce(F.col("label").isin(0, 1),
                                                             F.lit(True))).limit(3).collect()
    if bad:
        raise TasksError(f"{field}.query: rows with a null user_id or a label other than "
                         f"1, 0 or null, e.g. {', '.join(str(tuple(r)) for r in bad)}")
    twice = rows.groupBy("user_id").count().where("count > 1").limit(3).collect()
    if twice:
        raise TasksError(f"{field}.query returns more than one row for user "
                         f"{', '.join(sorted(repr(r['user_id']) for r in twice))}; return one "
                         "row per user")
    return rows.where(F.col("label").isNotNull()).select(
        "user_id", F.lit(task.name).alias("task"), F.col("label").cast("tinyint").alias("label"))


def log_labels(rows, tasks: Sequence[TaskConfig], window_start: dt.date,
               window_end: dt.date):
    """(user_id, task, label) of every log-rule task in one pass over the purchase log, so
    that hundreds of tasks (a genre family) cost a few joins, not one aggregation each.

    Each task's window W runs from ``window_start`` to ``window_end``, or to the day before
    its label period P when P lies inside the window (a source task at a backtest cut)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = rows.sparkSession
    rules = spark.createDataFrame(
        [(t.name, t.rule.kind, t.rule.genre, t.rule.times, t.rule.universe,
          t.label_period_start, t.label_period_end,
          min(window_end, t.label_period_start - dt.timedelta(days=1))) for t in tasks],
        T.StructType([T.StructField("task", T.StringType()), T.StructField("kind", T.StringType()),
                      T.StructField("rule_genre", T.StringType()),
                      T.StructField("times", T.IntegerType()),
                      T.StructField("universe", T.StringType()),
                      T.StructField("p_start", T.DateType()), T.StructField("p_end", T.DateType()),
                      T.StructField("w_end", T.DateType())]))
    periods = ["p_start", "p_end", "w_end"]
    in_window = F.col("date").between(F.lit(window_start), F.col("w_end"))
    in_period = F.col("date").between(F.col("p_start"), F.col("p_end"))
    # who was active in each distinct (W, P): the universe of the tasks on those periods
    activity = (rows.crossJoin(F.broadcast(rules.select(*periods).distinct()))
                .groupBy("user_id", *periods)
                .agg(F.max(in_window.cast("int")).alias("window"),
                     F.max(in_period.cast("int")).alias("period")))
    # purchases of each task's genre: a row matches the rules on every prefix of its path
    segments = F.split("genre", "/")
    prefixes = F.transform(F.sequence(F.lit(1), F.size(segments)),
                           lambda i: F.array_join(F.slice(segments, 1, i), "/"))
    exploded = rows.select("user_id", "date",
                           F.explode(F.array_union(prefixes, F.array(F.lit("*")))).alias("g"))
    bought = (exploded.join(F.broadcast(rules), exploded["g"] == rules["rule_genre"])
              .groupBy("user_id", "task")
              .agg(F.sum(in_window.cast("int")).alias("genre_window"),
                   F.sum(in_period.cast("int")).alias("genre_period")))
    users = (activity.join(F.broadcast(rules), periods)
             .where(F.when(F.col("universe") == "active",
                           (F.col("window") == 1) & (F.col("period") == 1))
                    .otherwise((F.col("window") == 1) | (F.col("period") == 1)))
             .join(bought, ["user_id", "task"], "left")
             .fillna(0, ["genre_window", "genre_period"]))
    new_buyer = (F.when((F.col("genre_period") > 0) & (F.col("genre_window") == 0), 1)
                 .when((F.col("genre_period") == 0) & (F.col("genre_window") == 0), 0))
    label = F.when(F.col("kind") == "new_buyer", new_buyer).otherwise(
        F.when(F.col("genre_period") >= F.col("times"), 1).otherwise(0))
    return (users.select("user_id", "task", label.cast("tinyint").alias("label"))
            .where(F.col("label").isNotNull()))


def one_class_tasks(counts: dict[str, dict]) -> list[str]:
    """The tasks of a labels report whose labels hold one class only (nothing to learn)."""
    return [name for name, c in counts.items() if not c["positives"] or not c["negatives"]]


def listed(names: Sequence[str], most: int = 8) -> str:
    """Names for one log line: the first `most`, then how many more there are."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def family_name(cut: int, genre: str) -> str:
    """A config task name for "new buyer of ``genre`` at cut ``cut``": ``nb<cut>_<genre>``,
    lower-case, every other character ``_``; a hash keeps a long one unique and short."""
    import hashlib
    import re
    base = f"nb{cut}_" + (re.sub(r"[^a-z0-9]+", "_", genre.lower()).strip("_") or "genre")
    if len(base) <= 100:
        return base
    digest = hashlib.blake2b(genre.encode(), digest_size=4).hexdigest()
    return f"{base[:91]}_{digest}"


def family_excluded(genre: str, target_genres: Sequence[str]) -> bool:
    """A genre a target task uses: equal to a target rule's genre, above or below it."""
    return any(genre == g or genre.startswith(g + "/") or g.startswith(genre + "/")
               for g in target_genres)


def family_tasks(stats: Sequence[dict], config: PipelineConfig, min_positives: int,
                 depth: int) -> tuple[list[dict], dict]:
    """Config entries (``tasks.source``) of the genre family from per-(cut, genre) counts
    ``{cut, genre, positives, negatives}``, and what was left out and why."""
    targets = [t.rule.genre for t in config.target_tasks
               if t.rule is not None and t.rule.from_log]
    horizon, end = config.behaviour.horizon_days, config.window.end
    entries: list[dict] = []
    left: dict = {"target_genre": set(), "too_few": 0}
    for row in sorted(stats, key=lambda r: (r["cut"], r["genre"])):
        if family_excluded(row["genre"], targets):
            left["target_genre"].add(row["genre"])
            continue
        if min(row["positives"], row["negatives"]) < min_positives:
            left["too_few"] += 1
            continue
        period_end = end - dt.timedelta(days=row["cut"])
        entries.append({
            "name": family_name(row["cut"], row["genre"]),
            "description": f"new buyer of {row['genre']} in the {horizon} days up to "
                           f"{period_end} ({row['positives']} positives, {row['negatives']} "
                           f"negatives; genre depth {depth})",
            "label_period_start": (period_end - dt.timedelta(days=horizon - 1)).isoformat(),
            "label_period_end": period_end.isoformat(),
            "rule": {"kind": "new_buyer", "genre": row["genre"], "universe": "all"}})
    names = [e["name"] for e in entries]
    for i, entry in enumerate(entries):  # two genres that read alike: number the later ones
        if names.index(entry["name"]) != i:
            entry["name"] = f"{entry['name'][:95]}_{i}"
    return entries, {"target_genre": sorted(left["target_genre"]), "too_few": left["too_few"]}


def family_counts(spark, config: PipelineConfig, depth: int) -> list[dict]:
    """Per backtest cut and genre (its path cut to ``depth`` segments): the new buyers in
    the cut's horizon (a purchase in it, none in the window before it) and the users of the
    cut's universe (a purchase in the window up to the cut) who never bought the genre."""
    from pyspark.sql import functions as F

    horizon, end = config.behaviour.horizon_days, config.window.end
    start = config.window.start(end)
    rows = purchases(spark, config, end).withColumn(
        "g", F.array_join(F.slice(F.split("genre", "/"), 1, depth), "/")).cache()
    out = []
    try:
        for cut in config.behaviour.cut_days:
            period_end = end - dt.timedelta(days=cut)
            period_start = period_end - dt.timedelta(days=horizon - 1)
            scoped = rows.where(F.col("date").between(start, period_end))
            universe = scoped.select("user_id").distinct().count()
            per_user = scoped.groupBy("g", "user_id").agg(
                F.max((F.col("date") < period_start).cast("int")).alias("before"),
                F.max((F.col("date") >= period_start).cast("int")).alias("within"))
            for r in per_user.groupBy("g").agg(
                    F.sum(((F.col("within") == 1) & (F.col("before") == 0)).cast("int"))
                    .alias("positives"), F.count(F.lit(1)).alias("buyers")).collect():
                out.append({"cut": cut, "genre": r["g"], "positives": int(r["positives"]),
                            "negatives": universe - int(r["buyers"])})
    finally:
        rows.unpersist()
    return out


def suggest_family(spark, config: PipelineConfig, path: str, depth: int,
                   min_positives: int) -> dict:
    """Write the genre family of source tasks (new buyers of a genre at each backtest cut)
    as a YAML list for ``tasks.source`` to ``path``; labels nothing."""
    import yaml

    if not config.behaviour.enabled:
        raise TasksError("--suggest-family needs tasks.behaviour.horizon_days (the horizon "
                         "of each cut) and cut_days (e.g. [0, 90, 180]); set them first")
    if depth < 1 or min_positives < 1:
        raise TasksError(f"--depth {depth} and --min-positives {min_positives} must be at "
                         "least 1")
    started = time.perf_counter()
    entries, left = family_tasks(family_counts(spark, config, depth), config, min_positives,
                                 depth)
    header = (f"# tasks.source entries: new buyers of a genre (depth {depth}) in the "
              f"{config.behaviour.horizon_days} days up to each backtest cut "
              f"{list(config.behaviour.cut_days)} days before {config.window.end}, at least "
              f"{min_positives} positives and negatives each; written by `metaprofile tasks "
              "--suggest-family`.\n")
    text = header + "".join(  # one entry a line: hundreds of them stay readable
        "- " + yaml.safe_dump(e, sort_keys=False, width=100_000, default_flow_style=True)
        for e in entries)
    storage.write_bytes(text.encode(), path)
    log.info("%d family tasks written to %s (%d (cut, genre) pairs too rare; genres of "
             "target tasks left out: %s)", len(entries), path, left["too_few"],
             ", ".join(left["target_genre"]) or "none")
    return {"suggested": path, "tasks": len(entries), "too_few": left["too_few"],
            "target_genres_left_out": left["target_genre"],
            "seconds": round(time.perf_counter() - started, 2)}


def run(spark, config: PipelineConfig, only: Sequence[str] = ()) -> dict:
    from pyspark.sql import functions as F

    groups = {key: [(field, t) for field, t in tasks if not only or t.name in only]
              for key, tasks in ruled(config).items()}
    if not any(groups.values()):
        raise TasksError("no task with a rule" + (f" among {', '.join(only)}" if only else "")
                         + ": give a task `rule: {kind: new_buyer, genre: ...}` and its "
                           "label period")
    started = time.perf_counter()
    window_end = config.window.end
    window_start = config.window.start(window_end)
    chosen = [t for tasks in groups.values() for _, t in tasks]
    log_tasks = [t for t in chosen if t.rule.from_log]
    rows = demographics = None
    if log_tasks:
        rows = purchases(spark, config, max(t.label_period_end for t in log_tasks)).cache()
    if any(t.rule.kind == "attribute" for t in chosen):
        uri = config.storage.uri("demographics")
        if not storage.exists(uri):
            raise TasksError(f"an attribute rule reads the demographics, and there are none at "
                             f"{uri}: land them first (metaprofile import)")
        try:
            demographics = read_folder(spark, uri, demographics_schema(config), "demographics")
        except InputTypeError as exc:
            raise TasksError(f"an attribute rule reads the demographics: {exc}") from None
    saved = set_conf(spark, {}, keep=(NANOS_AS_LONG,))  # reading the tables may set it
    publisher = Publisher(spark)
    report: dict = {}
    try:
        views = (register_tables(spark, config) if any(t.rule.kind == "query" for t in chosen)
                 else [])
        for key, tasks in groups.items():
            if not tasks:
                continue
            uri = config.storage.uri(key)
            on_log = [t for _, t in tasks if t.rule.from_log]
            frames = [attribute_labels(demographics, t, field) if t.rule.kind == "attribute"
                      else query_labels(spark, config, t, field, views)
                      for field, t in tasks if not t.rule.from_log]
            if on_log:
                frames.append(log_labels(rows, on_log, window_start, window_end))
            if storage.exists(uri):  # hand-made labels of the other tasks stay
                kept = (spark.read.schema(spark_ddl(LABELS)).parquet(uri)
                        .where(~F.col("task").isin([t.name for _, t in tasks])))
                frames.insert(0, kept)
            labels = frames[0]
            for frame in frames[1:]:
                labels = labels.unionByName(frame)
            staging = publisher.staging(uri)
            labels.coalesce(1).write.mode("overwrite").parquet(staging)
            counts = {(r["task"], r["label"]): r["n"] for r in spark.read.parquet(staging)
                      .groupBy("task", "label").agg(F.count(F.lit(1)).alias("n")).collect()}
            report[key] = {t.name: {"positives": counts.get((t.name, 1), 0),
                                    "negatives": counts.get((t.name, 0), 0),
                                    "rule": rule_dict(t.rule)}
                           for _, t in tasks}
            publisher.write_text(f"{staging}/_tasks.json", json.dumps(report[key], indent=2))
            publisher.publish(staging, uri)
            for name, c in report[key].items():
                log.info("%s %s: %d positives, %d negatives", key, name, c["positives"],
                         c["negatives"])
            one_class = one_class_tasks(report[key])
            if one_class:
                log.warning("%s: %d of %d tasks have only one class (%s); check their rules "
                            "and periods, or the users they cover", key, len(one_class),
                            len(report[key]), listed(one_class))
    finally:
        if rows is not None:
            rows.unpersist()
        restore_conf(spark, saved)
        publisher.cleanup()
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", action="append", default=[], dest="only",
                        help="only this task (repeatable; default: every task with a rule)")
    parser.add_argument("--suggest-family", metavar="FILE", default=None,
                        help="instead of labelling, write to FILE the YAML entries of a "
                             "genre family of source tasks: new buyers of each genre in the "
                             "horizon up to each backtest cut (tasks.behaviour.horizon_days "
                             "and cut_days), every genre that no target task uses; paste "
                             "them under tasks.source")
    parser.add_argument("--depth", type=int, default=2,
                        help="--suggest-family: genre path segments kept (default: 2)")
    parser.add_argument("--min-positives", type=int, default=20,
                        help="--suggest-family: fewest positives and negatives a task needs "
                             "(default: 20)")


def _run(job) -> dict:
    if job.args.suggest_family:
        return suggest_family(job.spark, job.config, job.args.suggest_family, job.args.depth,
                              job.args.min_positives)
    return run(job.spark, job.config, job.args.only)


JOB = Job(
    name="tasks", uses_ds=False, arguments=_arguments,
    run=_run,
    description="Write the label files of the tasks that the config defines by a rule "
                "(new_buyer, buys_at_least over the raw purchase log; attribute over the "
                "demographics; query over the import.tables); hand-made labels of other tasks "
                "are kept. Prints the positives and negatives per task.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
