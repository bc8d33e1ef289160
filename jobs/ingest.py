"""Import a retailer's own tables into the raw contracts, by the config's ``import`` section.

    metaprofile import --config conf/my_retailer.yaml
    spark-submit jobs/ingest.py --config conf/my_retailer.yaml --only purchases

Each configured log (``purchases``, ``points``) is read from its input table (CSV with a
header, Parquet or JSON lines; any column names and types), and every contract column is
computed by its expression (``schemas/import_config.py``). A log given as a list of
mappings (parts) is the union of their rows. Then, per row, in this order:

1. the ``drop`` conditions, first match wins, each its own reason (e.g. a null customer);
2. ``unparseable_event_time``: the event time gives no instant;
3. ``no_genre`` (purchases): no genre rule matched and there is no fallback.

The rows left are merged when ``merge_line_items`` is set (one row per user, second,
genre and status, or per user, second, point type and service, with the measures summed:
identical lines would otherwise be quarantined as ``duplicate_row`` by the encoder), and
written as ``<raw uri>/dt=<UTC date>/part-*.parquet`` with the contract's string columns
and ``event_time`` as ``YYYY-MM-DDTHH:MM:SSZ``. Values the encoder validates (a negative or
non-numeric amount, an unknown status) are landed as they are, so that the encoder
quarantines them with its reasons. The whole raw folder is replaced atomically.

Accounting: ``rows_in = rows_out + rows_merged + sum(rows_dropped)``, per log, printed,
and written to ``<raw uri>/_import.json``. The dropped rows themselves, with their reason
and the input row as JSON, go to ``<storage.root>/import_dropped/<log>/``.
``demographics`` is imported the same way (one row per user; a null id is dropped).

``campaign_seeds`` and ``campaign_registry`` are each the result of a Spark SQL ``query``
over the ``import.tables`` views (the registry's may also read the seeds just landed, as
``campaign_seeds``). Rows that break the contract are dropped by reason, with the same
accounting: a null id or name (``null_<column>``), a label other than 0 and 1
(``bad_label``), a status outside active/paused/archived (``bad_status``), a repeated
(campaign, user) pair or campaign id (``repeated_seed``, ``repeated_campaign_id``; one
row is kept: a seed before a negative, then the row whose JSON sorts first, so that reruns
agree whatever order the query's rows come in). Absent optional registry columns are null
(``segment_size``, ``score_threshold``) or empty (``exclude_campaigns``).

Expressions are checked against the input's columns before any row is read: an unknown
column fails with the config field, the expression and the columns the input has. Spark
runs this job with ANSI mode off, so an expression over a malformed value (``'abc' * 2``)
gives null, which the encoder then quarantines, instead of failing the run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

if __package__ in (None, ""):  # spark-submit jobs/ingest.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import storage
from common.errors import PipelineError
from common.publish import Publisher
from jobs import runner
from jobs.encoding.validation import DATE_PATTERN, OFFSET_PATTERN, TIMESTAMP_PATTERN
from jobs.runner import Job
from schemas.config import PipelineConfig
from schemas.contracts import (
    CAMPAIGN_REGISTRY,
    CAMPAIGN_SEEDS,
    CAMPAIGN_STATUSES,
    RAW_SOURCES,
    demographics_schema,
)
from schemas.import_config import (
    PLACEHOLDERS,
    QUERY_TABLES,
    GenreMapping,
    InputTable,
    LogImport,
    substitute,
)

log = logging.getLogger("metaprofile.import")
MERGE_KEYS = {"purchases": ("user_id", "event_time", "genre", "status"),
              "points": ("user_id", "event_time", "point_type", "service")}
MEASURES = {"purchases": ("amount", "quantity"), "points": ("points",)}
UNPARSEABLE, NO_GENRE = "unparseable_event_time", "no_genre"


class IngestError(PipelineError, ValueError):
    """A mapping that cannot run: names the config field and what to change."""


NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
ANSI = "spark.sql.ansi.enabled"


def set_conf(spark, values: dict[str, str], keep: Sequence[str] = ()) -> dict:
    """Set the Spark SQL settings ``values``; return what :func:`restore_conf` puts back,
    for them and for the settings ``keep`` that the run may change on the way (reading a
    nanosecond Parquet input sets NANOS_AS_LONG)."""
    saved = {key: spark.conf.get(key, None) for key in (*values, *keep)}
    for key, value in values.items():
        spark.conf.set(key, value)
    return saved


def restore_conf(spark, saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


def nanosecond_columns(uri: str) -> dict[str, bool]:
    """``{column: has a zone}`` of the nanosecond timestamps in a local Parquet input (the
    first data file's footer), which Spark cannot read as timestamps (pandas writes them)."""
    import pyarrow as pa

    from jobs.typed_read import data_files, footer_schema

    if not storage.is_local(uri):
        return {}
    files = data_files(uri)
    schema = footer_schema(files[0]) if files else None
    if schema is None or isinstance(schema, str):
        return {}  # Spark's read reports an unreadable file
    return {f.name: f.type.tz is not None for f in schema
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}


def read_table(spark, table: InputTable, what: str):
    """The input as a DataFrame. Nanosecond timestamps are read as their long count (Spark
    cannot read them otherwise) and turned back into timestamps at microsecond precision."""
    from pyspark.sql import functions as F

    if not storage.exists(table.uri):
        raise IngestError(f"{what}.uri: nothing at {table.uri}")
    reader = spark.read.options(**dict(table.options))
    if table.format == "csv":
        return reader.option("header", "true").csv(table.uri)
    if table.format == "jsonl":
        return reader.json(table.uri)
    nanos = nanosecond_columns(table.uri)
    if nanos:
        spark.conf.set(NANOS_AS_LONG, "true")  # the caller restores it (set_conf keep)
    frame = reader.parquet(table.uri)
    for name, zoned in nanos.items():
        if frame.schema[name].dataType.typeName() != "long":
            continue  # stored as INT96, which Spark reads as a timestamp itself
        micros = F.timestamp_micros(F.floor(F.col(f"`{name}`") / 1000))
        frame = frame.withColumn(name, micros if zoned else micros.cast("timestamp_ntz"))
    return frame


def register_tables(spark, config: PipelineConfig) -> list[str]:
    """Each ``import.tables`` entry as a temporary view of its name; the names."""
    for name, table in config.imports.tables:
        read_table(spark, table, f"import.tables.{name}").createOrReplaceTempView(name)
    return [name for name, _ in config.imports.tables]


def window_values(config: PipelineConfig) -> dict[str, str]:
    end = config.window.end
    if end is None:
        return {}
    values = {"window.start": config.window.start(end).isoformat(), "window.end": end.isoformat()}
    assert set(values) == set(PLACEHOLDERS)
    return values


def run_query(spark, config: PipelineConfig, text: str, field: str, views: Sequence[str]):
    """A configured query's DataFrame, analysed now; an IngestError names ``field``."""
    from pyspark.errors import AnalysisException, ParseException

    values = window_values(config)
    if "${" in text and not values:
        raise IngestError(f"{field}: uses ${{window...}} but window.end is not set")
    try:
        return spark.sql(substitute(text, values))
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise IngestError(f"{field}: {first}. Views: {', '.join(views) or 'none'} "
                          "(import.tables)") from None


def expression(frame, text: str, field: str):
    """``text`` as a Column of ``frame``, or an IngestError naming ``field``."""
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql import functions as F

    try:
        column = F.expr(text)
        frame.select(column)  # analysed now, before any row is read
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise IngestError(f"{field}: cannot use {text!r}: {first}. The input has the columns "
                          f"{', '.join(frame.columns)} (quote odd names in backticks)") from None
    return column


def instant(column, data_type, text_format: str | None, zone: str, day_hour: int | None):
    """An event-time column -> a UTC instant (TimestampType; the session computes in UTC).
    Naive values are in ``zone``. A date alone (ISO, or by a ``text_format`` without an hour
    such as ``dd/MM/yyyy``) is taken at ``day_hour`` o'clock when that is set
    (``raw.event_time_precision: day``), and is unparseable otherwise."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(data_type, T.TimestampType):
        return column
    if isinstance(data_type, T.DateType):
        return (F.to_utc_timestamp(F.concat(column.cast("string"), F.lit(f" {day_hour:02d}:00:00")),
                                   zone) if day_hour is not None else F.lit(None).cast("timestamp"))
    raw_text = F.trim(column.cast("string"))
    text = raw_text
    if day_hour is not None:
        text = F.when(text.rlike(DATE_PATTERN), F.concat(text, F.lit(f"T{day_hour:02d}:00:00"))
                      ).otherwise(text)
    if text_format:
        parsed = F.try_to_timestamp(raw_text, F.lit(text_format))
        if day_hour is not None:  # a date-only format, or an ISO date, is taken at day_hour
            if not any(c in text_format for c in "HhkK"):
                parsed = parsed + F.expr(f"INTERVAL {day_hour} HOURS")
            parsed = F.when(raw_text.rlike(DATE_PATTERN),
                            F.try_to_timestamp(text, F.lit("yyyy-MM-dd'T'HH:mm:ss"))
                            ).otherwise(parsed)
        return F.to_utc_timestamp(parsed, zone)
    parsed = F.when(text.rlike(TIMESTAMP_PATTERN),
                    F.try_to_timestamp(F.regexp_replace(text, " ", "T")))
    return F.when(text.rlike(OFFSET_PATTERN), parsed).otherwise(F.to_utc_timestamp(parsed, zone))


def genre_column(frame, mapping: GenreMapping, spark, field: str):
    """(frame, genre Column): the genre by expression, lookup or ordered rules."""
    from pyspark.sql import functions as F

    if mapping.expression is not None:
        genre = expression(frame, mapping.expression, f"{field}.expression")
    elif mapping.lookup is not None:
        table = read_table(spark, mapping.lookup, f"{field}.lookup.input")
        key = expression(table, f"`{mapping.lookup_key}`", f"{field}.lookup.key")
        value = expression(table, mapping.lookup_genre, f"{field}.lookup.genre")
        lookup = table.select(key.cast("string").alias("_key"), value.alias("_genre"))
        repeated = lookup.groupBy("_key").count().where("count > 1").limit(3).collect()
        if repeated:
            raise IngestError(f"{field}.lookup: key {mapping.lookup_key!r} repeats (e.g. "
                              f"{', '.join(repr(r['_key']) for r in repeated)}); a lookup "
                              "needs one row per key")
        on = expression(frame, mapping.match, f"{field}.lookup.match")
        frame = frame.withColumn("_on", on.cast("string")).join(
            F.broadcast(lookup), F.col("_on") == F.col("_key"), "left").drop("_on", "_key")
        genre = F.col("_genre")
    else:
        genre = F.lit(None).cast("string")
        for i, rule in reversed(list(enumerate(mapping.rules))):
            text = expression(frame, rule.column, f"{field}.rules[{i}].column")
            genre = F.when(text.cast("string").rlike(rule.regex), F.lit(rule.genre)).otherwise(
                genre)
    if mapping.fallback is not None:
        genre = F.coalesce(genre.cast("string"), F.lit(mapping.fallback))
    return frame, genre.cast("string")


def map_log(spark, config: PipelineConfig, name: str, item: LogImport, field: str):
    """The input's rows in the contract's columns, with ``dt`` (the UTC date), ``reason``
    (null: kept) and ``record`` (the input row as JSON)."""
    from pyspark.sql import functions as F

    frame = read_table(spark, item.input, f"{field}.input")
    frame = frame.withColumn("record", F.to_json(F.struct(*[F.col(f"`{c}`")
                                                             for c in frame.columns])))
    columns = {c: expression(frame, e, f"{field}.{c}") for c, e in item.columns}
    drops = [(reason, expression(frame, cond, f"{field}.drop.{reason}"))
             for reason, cond in item.drop]
    if item.genre is not None:
        frame, columns["genre"] = genre_column(frame, item.genre, spark, f"{field}.genre")
    time_type = frame.select(columns["event_time"].alias("t")).schema["t"].dataType
    zone = item.event_time_zone or config.raw.timestamp_timezone
    day_hour = config.raw.day_hour if config.raw.event_time_precision == "day" else None
    utc = instant(columns["event_time"], time_type, item.event_time_format, zone, day_hour)
    reason = F.lit(None).cast("string")
    checks = drops + [(UNPARSEABLE, utc.isNull())]
    if "genre" in columns:
        checks.append((NO_GENRE, columns["genre"].isNull() | (F.trim(columns["genre"]) == "")))
    for label, failed in reversed(checks):
        reason = F.when(failed, F.lit(label)).otherwise(reason)
    return frame.select(
        *[(F.date_format(utc, "yyyy-MM-dd'T'HH:mm:ss'Z'") if c == "event_time"
           else columns[c].cast("string")).alias(c) for c in RAW_SOURCES[name].names],
        F.to_date(utc).alias("dt"), reason.alias("reason"), "record")


def number_text(column):
    """A measure as exact decimal text without trailing zeros ("2.0" -> "2", "181.80" ->
    "181.8"); text that is not a number stays as it is, for the encoder to quarantine."""
    from pyspark.sql import functions as F

    exact = column.try_cast("decimal(38,6)")
    trimmed = F.regexp_replace(F.regexp_replace(exact.cast("string"), r"(\.\d*?)0+$", "$1"),
                               r"\.$", "")
    return F.when(exact.isNotNull(), trimmed).otherwise(column)


def merge(rows, name: str):
    """One row per merge key, the measures summed exactly (decimal); an empty quantity
    counts as the 1 the contract reads it as. Rows whose measures are not numbers stay
    apart, unmerged, so the encoder quarantines each of them."""
    from pyspark.sql import functions as F

    keys = [*MERGE_KEYS[name], "dt"]
    measures = MEASURES[name]

    def value(m):
        return F.coalesce(F.col(m), F.lit("1")) if m == "quantity" else F.col(m)

    numeric = F.lit(True)
    for m in measures:
        numeric = numeric & value(m).try_cast("decimal(38,6)").isNotNull()
    rows = rows.withColumn("_numeric", numeric)
    summed = rows.where("_numeric").groupBy(*keys).agg(
        *[F.sum(value(m).try_cast("decimal(38,6)")).cast("string").alias(m) for m in measures])
    kept = rows.where(~F.col("_numeric")).drop("_numeric")
    return summed.unionByName(kept.select(*summed.columns))


def import_log(spark, config: PipelineConfig, name: str, parts: Sequence[LogImport],
               publisher: Publisher) -> dict:
    """Map every part of a log, union them, merge when any part asks to, write it whole."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    fields = ([f"import.{name}"] if len(parts) == 1
              else [f"import.{name}[{i}]" for i in range(len(parts))])
    frames = [map_log(spark, config, name, item, field).withColumn("part", F.lit(i))
              for i, (item, field) in enumerate(zip(parts, fields))]
    mapped = frames[0]
    for frame in frames[1:]:
        mapped = mapped.unionByName(frame)
    mapped = mapped.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_part = {(r["part"], r["reason"]): r["n"] for r in mapped.groupBy("part", "reason")
                   .agg(F.count(F.lit(1)).alias("n")).collect()}
        counts: dict = {}
        for (_, reason), n in by_part.items():
            counts[reason] = counts.get(reason, 0) + n
        rows_in = sum(counts.values())
        kept = mapped.where(F.col("reason").isNull()).drop("reason", "record", "part")
        dropped = mapped.where(F.col("reason").isNotNull()).select("reason", "record", "part")
        out = merge(kept, name) if any(p.merge_line_items for p in parts) else kept
        uri = config.storage.uri(f"raw_{name}")
        staging = publisher.staging(uri)
        contract = RAW_SOURCES[name].names
        (out.select(*[(number_text(F.col(c)) if c in MEASURES[name] else F.col(c)).alias(c)
                      for c in contract], "dt")
         .repartition("dt").write.partitionBy("dt").mode("overwrite").parquet(staging))
        rows_out = spark.read.parquet(staging).count()
        dropped_uri = f"{config.storage.root}/import_dropped/{name}"
        dropped.write.mode("overwrite").parquet(dropped_uri)
    finally:
        mapped.unpersist()
    kept_rows = counts.get(None, 0)
    report = {"inputs": [p.input.uri for p in parts], "rows_in": rows_in,
              "rows_out": rows_out, "rows_merged": kept_rows - rows_out,
              "rows_dropped": dict(sorted((k, v) for k, v in counts.items() if k is not None)),
              "dropped_rows_at": dropped_uri}
    if len(parts) > 1:
        report["parts"] = [{"field": field, "rows_in": sum(n for (p, _), n in by_part.items()
                                                           if p == i),
                            "rows_dropped": {r: n for (p, r), n in sorted(
                                by_part.items(), key=lambda kv: str(kv[0])) if p == i and r}}
                           for i, field in enumerate(fields)]
    assert rows_in == rows_out + report["rows_merged"] + sum(report["rows_dropped"].values())
    publisher.write_text(f"{staging}/_import.json", json.dumps(report, indent=2))
    publisher.publish(staging, uri)
    return report


def import_demographics(spark, config: PipelineConfig, publisher: Publisher) -> dict:
    from pyspark.sql import functions as F

    item = config.imports.demographics
    field = "import.demographics"
    frame = read_table(spark, item.input, f"{field}.input")
    schema = demographics_schema(config)
    columns = dict(item.fields)
    selected = [expression(frame, item.user_id, f"{field}.user_id").cast("string")
                .alias("user_id")]
    for f in list(schema)[1:]:
        kind = "double" if f.name in config.demographics.numeric else "string"
        column = (expression(frame, columns[f.name], f"{field}.fields.{f.name}")
                  if f.name in columns else F.lit(None))
        selected.append(column.cast(kind).alias(f.name))
    rows = frame.select(*selected)
    rows_in = rows.count()
    kept = rows.where(F.col("user_id").isNotNull() & (F.trim("user_id") != ""))
    uri = config.storage.uri("demographics")
    staging = publisher.staging(uri)
    kept.coalesce(1).write.mode("overwrite").parquet(staging)
    rows_out = spark.read.parquet(staging).count()
    report = {"input": item.input.uri, "rows_in": rows_in, "rows_out": rows_out,
              "rows_dropped": {"null_user_id": rows_in - rows_out} if rows_in > rows_out else {}}
    publisher.write_text(f"{staging}/_import.json", json.dumps(report, indent=2))
    publisher.publish(staging, uri)
    return report


def contract_rows(frame, name: str, field: str):
    """A query's rows in the contract's columns and types, with ``reason`` (null: kept) and
    ``record`` (the query's row as JSON)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schema = CAMPAIGN_SEEDS if name == "campaign_seeds" else CAMPAIGN_REGISTRY
    required = [f.name for f in schema if not f.nullable]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise IngestError(f"{field}: the query returns {', '.join(frame.columns)}; it must "
                          f"return {', '.join(missing)} too (contract {name}: "
                          f"{', '.join(schema.names)})")
    kinds = {"campaign_id": "string", "user_id": "string", "label": "int", "name": "string",
             "status": "string", "segment_size": "bigint", "score_threshold": "double",
             "exclude_campaigns": "array<string>"}
    defaults = {"exclude_campaigns": F.array().cast("array<string>")}
    record = F.to_json(F.struct(*[F.col(f"`{c}`") for c in frame.columns]))
    rows = frame.select(*[(F.col(f"`{c}`") if c in frame.columns
                           else defaults.get(c, F.lit(None))).cast(kinds[c]).alias(c)
                          for c in schema.names], record.alias("record"))
    checks = [(f"null_{c}", F.col(c).isNull() | (F.trim(c) == "")) for c in required
              if kinds[c] == "string"]
    if name == "campaign_seeds":
        checks.append(("bad_label", F.col("label").isNull() | ~F.col("label").isin(0, 1)))
        key, order = ["campaign_id", "user_id"], [F.col("label").desc(), F.col("record")]
        repeated = "repeated_seed"
    else:
        checks.append(("bad_status", ~F.lower(F.trim("status")).isin(*CAMPAIGN_STATUSES)))
        key, order, repeated = ["campaign_id"], [F.col("record")], "repeated_campaign_id"
    reason = F.lit(None).cast("string")
    for label, failed in reversed(checks):
        reason = F.when(failed, F.lit(label)).otherwise(reason)
    rows = rows.withColumn("reason", reason)
    rank = F.row_number().over(Window.partitionBy(*key, F.col("reason").isNull())
                               .orderBy(*order))
    return rows.withColumn("reason", F.when(F.col("reason").isNull() & (rank > 1),
                                            F.lit(repeated)).otherwise(F.col("reason")))


def import_query(spark, config: PipelineConfig, name: str, views: Sequence[str],
                 publisher: Publisher) -> dict:
    """Land ``campaign_seeds`` or ``campaign_registry`` from its query, whole."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    field = f"import.{name}.query"
    if name == "campaign_registry" and storage.exists(config.storage.uri("campaign_seeds")):
        spark.read.parquet(config.storage.uri("campaign_seeds")).createOrReplaceTempView(
            "campaign_seeds")
        views = [*views, "campaign_seeds"]
    rows = contract_rows(run_query(spark, config, config.imports.query(name), field, views),
                         name, field).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        keys = ["reason", "label"] if name == "campaign_seeds" else ["reason"]
        by_key = {tuple(r[k] for k in keys): r["n"] for r in rows.groupBy(*keys)
                  .agg(F.count(F.lit(1)).alias("n")).collect()}
        counts: dict = {}
        for (reason, *_), n in by_key.items():
            counts[reason] = counts.get(reason, 0) + n
        schema = CAMPAIGN_SEEDS if name == "campaign_seeds" else CAMPAIGN_REGISTRY
        kept = rows.where(F.col("reason").isNull()).select(*schema.names)
        if name == "campaign_seeds":
            kept = kept.withColumn("label", F.col("label").cast("tinyint"))
        else:
            kept = kept.withColumn("status", F.lower(F.trim("status")))
        uri = config.storage.uri(name)
        staging = publisher.staging(uri)
        kept.orderBy(*schema.names[:2]).coalesce(1).write.mode("overwrite").parquet(staging)
        rows_out = spark.read.parquet(staging).count()
        dropped_uri = f"{config.storage.root}/import_dropped/{name}"
        rows.where(F.col("reason").isNotNull()).select("reason", "record").write.mode(
            "overwrite").parquet(dropped_uri)
    finally:
        rows.unpersist()
    report = {"query": field, "rows_in": sum(counts.values()), "rows_out": rows_out,
              "rows_dropped": dict(sorted((k, v) for k, v in counts.items() if k is not None)),
              "dropped_rows_at": dropped_uri}
    assert report["rows_in"] == rows_out + sum(report["rows_dropped"].values())
    if name == "campaign_seeds":
        report.update(seeds=by_key.get((None, 1), 0), negatives=by_key.get((None, 0), 0))
    publisher.write_text(f"{staging}/_import.json", json.dumps(report, indent=2))
    publisher.publish(staging, uri)
    return report


def run(spark, config: PipelineConfig, only: Sequence[str] = ()) -> dict:
    """Import every configured table (or ``only`` these); return the accounting."""
    if not config.imports.enabled:
        raise IngestError("the config has no import section: add import.purchases (and "
                          "points, demographics, campaign_seeds, campaign_registry) as "
                          "docs/onboarding.md describes")
    started = time.perf_counter()
    saved = set_conf(spark, {ANSI: "false"}, keep=(NANOS_AS_LONG,))
    publisher = Publisher(spark)
    report: dict = {}
    try:
        views = register_tables(spark, config)
        for name in ("purchases", "points"):
            parts = getattr(config.imports, name)
            if parts and (not only or name in only):
                log.info("import %s from %s", name, ", ".join(p.input.uri for p in parts))
                report[name] = import_log(spark, config, name, parts, publisher)
                log.info("import %s: %s", name, json.dumps(report[name]))
        if config.imports.demographics is not None and (not only or "demographics" in only):
            report["demographics"] = import_demographics(spark, config, publisher)
        for name in QUERY_TABLES:
            if config.imports.query(name) is not None and (not only or name in only):
                report[name] = import_query(spark, config, name, views, publisher)
                log.info("import %s: %s", name, json.dumps(report[name]))
    finally:
        restore_conf(spark, saved)
        publisher.cleanup()
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", action="append", default=[],
                        choices=("purchases", "points", "demographics", *QUERY_TABLES),
                        help="import only this table (repeatable; default: every configured one)")


JOB = Job(
    name="import", file="ingest", uses_ds=False, arguments=_arguments,
    run=lambda job: run(job.spark, job.config, job.args.only),
    description="Import a retailer's own tables (CSV, Parquet, JSON lines) into the raw "
                "contracts, by the config's import section: expressions per column, genre "
                "rules or a lookup, optional line-item merging, and exact accounting (rows in "
                "= rows out + merged + dropped by reason); the campaign seeds and registry by "
                "a SQL query over import.tables.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
