"""Reading one source's landing partitions and validating its rows against the raw contract: every
rejected row gets a reason, none is dropped silently."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable, Sequence

from common import catalog, storage
from common.errors import PipelineError
from common.publish import Publisher
from jobs.typed_read import InputTypeError, read_csv, read_parquet
from schemas.config import PipelineConfig
from schemas.contracts import (
    ID_TRIM_PATTERN,
    MAX_RAW_VALUE,
    PURCHASE_STATUSES,
    RAW_SOURCES,
    REJECT_REASONS,
    REPLACEMENT_CHARACTER,
    spark_ddl,
)

log = logging.getLogger("metaprofile.encode")

CORRUPT = "_corrupt_record"
# A full date-time: Spark's cast would also accept '2026' or '2026-03' as timestamps.
TIMESTAMP_PATTERN = (r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
                     r"(Z|[+-]\d{2}(:?\d{2})?)?$")
OFFSET_PATTERN = r"(Z|[+-]\d{2}(:?\d{2})?)$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"  # taken with raw.event_time_precision: day
VALUE_COLUMN = {"purchases": "amount", "points": "points"}


class EncodeError(PipelineError):
    """A run that must not publish its output (too many rejects, missing input, no key)."""


# --------------------------------------------------------------------------- reading


def landing_partitions(raw_uri: str, dts: Iterable[dt.date]) -> list[str]:
    return [catalog.landing_path(raw_uri, d) for d in dts]


def read_raw(spark, config: PipelineConfig, source: str, paths: Sequence[str]):
    """The raw rows of the given landing partitions, every column a string as landed
    (typed Parquet columns converted to text, :mod:`jobs.typed_read`).

    Text formats keep malformed lines in ``_corrupt_record`` (PERMISSIVE mode), so they can
    be quarantined instead of vanishing. ``input_file`` and ``dt`` are added.
    """
    from pyspark.sql import functions as F

    ddl = spark_ddl(RAW_SOURCES[source])
    base = paths[0].rsplit("/dt=", 1)[0]
    fmt = config.raw.format
    if fmt == "parquet":
        # Typed columns (a timestamp event_time, a double amount) are converted to the text
        # that validation checks; a column of an unusable type stops here, naming the file.
        try:
            frame = read_parquet(spark, paths, RAW_SOURCES[source], f"raw {source}", base=base,
                                 keep=("dt", "input_file"))
        except InputTypeError as exc:
            raise EncodeError(str(exc)) from None
        return frame.withColumn(CORRUPT, F.lit(None).cast("string"))
    else:
        if fmt == "csv" and all(storage.is_local(p) for p in paths):
            try:  # by each file's header: any column order, extra columns left out
                return read_csv(spark, paths, RAW_SOURCES[source], f"raw {source}", base,
                                CORRUPT)
            except InputTypeError as exc:
                raise EncodeError(str(exc)) from None
        reader = (spark.read.schema(f"{ddl}, `{CORRUPT}` STRING").option("basePath", base)
                  .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT))
        if fmt == "csv":
            frame = reader.option("header", "true").option("enforceSchema", "false").csv(list(paths))
        else:
            frame = reader.json(list(paths))
    return frame.withColumn("input_file", F.col("_metadata.file_path"))


def existing_paths(publisher: "Publisher", paths: Sequence[str]) -> list[str]:
    """The subset of ``paths`` that exist (through Hadoop for remote URIs)."""
    return [p for p in paths if publisher.exists(p)]


# --------------------------------------------------------------------------- validation


def _blank(column):
    from pyspark.sql import functions as F
    return column.isNull() | (F.trim(column) == "")


def trimmed_id(column):
    """A raw user id without the whitespace around it (tabs and line breaks included)."""
    from pyspark.sql import functions as F
    return F.regexp_replace(column, ID_TRIM_PATTERN, "")


def _undecodable(source: str):
    """Column: some raw value holds the decoder's replacement character (bytes that were
    not UTF-8): the line is quarantined rather than encoded with a mangled id or genre."""
    from pyspark.sql import functions as F
    return F.concat_ws("", *[F.col(c) for c in RAW_SOURCES[source].names]).contains(
        REPLACEMENT_CHARACTER)


def parse_and_validate(frame, config: PipelineConfig, source: str):
    """Add typed columns and ``reason``: the first check a row fails, or null when valid.

    Typed columns: ``event_utc`` (timestamp), ``date``/``hour`` (local), ``value`` (double),
    ``qty`` (double, purchases). The checks run in the order of REJECT_REASONS, so each
    rejected row has exactly one reason and the accounting adds up.
    """
    from pyspark.sql import functions as F

    text_time = F.trim(F.col("event_time"))
    if config.raw.event_time_precision == "day":  # a daily export: the date at day_hour
        text_time = F.when(text_time.rlike(DATE_PATTERN), F.concat(
            text_time, F.lit(f"T{config.raw.day_hour:02d}:00:00"))).otherwise(text_time)
    well_formed = text_time.rlike(TIMESTAMP_PATTERN)
    parsed = F.try_to_timestamp(F.regexp_replace(text_time, " ", "T"))
    naive_zone = config.raw.timestamp_timezone
    event_utc = F.when(text_time.rlike(OFFSET_PATTERN), parsed).otherwise(
        parsed if naive_zone == "UTC" else F.to_utc_timestamp(parsed, naive_zone))
    local = F.from_utc_timestamp(F.col("event_utc"), config.window.timezone)
    value_text = F.trim(F.col(VALUE_COLUMN[source]))
    value = value_text.try_cast("double")
    bad_number = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))
    valid_from = F.lit(config.raw.valid_from.isoformat()).cast("timestamp")
    valid_until = F.lit(config.raw.valid_until.isoformat()).cast("timestamp")

    frame = (frame
             .withColumn("event_utc", F.when(well_formed, event_utc))
             .withColumn("value", value)
             .withColumn("date", F.to_date(local))
             .withColumn("hour", F.hour(local).cast("tinyint")))
    checks = [
        ("malformed_line", F.col(CORRUPT).isNotNull() | _undecodable(source)),
        ("null_user_id", F.col("user_id").isNull() | (trimmed_id(F.col("user_id")) == "")),
        ("unparseable_timestamp", F.col("event_utc").isNull()),
        ("out_of_range_timestamp", (F.col("event_utc") < valid_from)
         | (F.col("event_utc") >= valid_until)),
        ("non_numeric_value", _blank(value_text) | bad_number),
        ("negative_value", F.col("value") < 0),
        ("value_too_large", F.col("value") > MAX_RAW_VALUE),
    ]
    if source == "purchases":
        quantity_text = F.trim(F.col("quantity"))
        quantity = quantity_text.try_cast("double")
        frame = frame.withColumn("qty", F.when(_blank(quantity_text), F.lit(1.0))
                                 .otherwise(quantity))
        checks += [
            ("non_numeric_value", F.col("qty").isNull() | F.isnan("qty")
             | (F.abs(F.col("qty")) == float("inf"))),
            ("negative_value", F.col("qty") < 0),
            ("value_too_large", F.col("qty") > MAX_RAW_VALUE),
            ("unknown_status", ~F.lower(F.trim(F.col("status"))).isin(*PURCHASE_STATUSES)
             | F.col("status").isNull()),
            ("unknown_genre", ~known_genre(config, F.col("genre"))),
        ]
    else:
        point_types = sorted({c.point_type for m in config.modalities_for("points")
                              for c in m.channels})
        checks.append(("unknown_point_type", ~F.trim(F.col("point_type")).isin(*point_types)
                       | F.col("point_type").isNull()))
    unknown = {name for name, _ in checks} - set(REJECT_REASONS)
    assert not unknown, f"reasons missing from REJECT_REASONS: {unknown}"
    reason = F.lit(None).cast("string")
    for name, failed in reversed(checks):
        reason = F.when(failed, F.lit(name)).otherwise(reason)
    return frame.withColumn("reason", reason)


def genre_matches(prefix: str, genre):
    """Column: the genre path equals ``prefix`` or lies below it (whole segments only)."""
    from pyspark.sql import functions as F
    if prefix == "*":
        return F.lit(True)
    return (genre == prefix) | genre.startswith(prefix + "/")


def known_genre(config: PipelineConfig, genre):
    """Column twin of ``ModalityConfig.is_known_genre`` over every purchases modality."""
    from pyspark.sql import functions as F
    prefixes = sorted({c.genre for m in config.modalities_for("purchases") for c in m.channels
                       if c.genre not in (None, "*")})
    condition = F.lit(False)
    for prefix in prefixes:
        condition = condition | genre_matches(prefix, genre)
    return genre.isNotNull() & condition


# --------------------------------------------------------------------------- the run


def partition_dates(config: PipelineConfig, ds: dt.date, full: bool) -> list[dt.date]:
    """Landing dates to encode: ``ds``, or every date whose rows can fall in the window.

    Local and landing dates differ by at most a day, so a full run covers one extra day on
    either side of the window.
    """
    if not full:
        return [ds]
    start = config.window.start(ds) - dt.timedelta(days=1)
    return [start + dt.timedelta(days=i) for i in range(config.window.days + 2)]


def window_dates(config: PipelineConfig, ds: dt.date) -> list[dt.date]:
    """The local dates of the window ending at ``ds``."""
    start = config.window.start(ds)
    return [start + dt.timedelta(days=i) for i in range(config.window.days)]


def missing_dates(expected: Sequence[dt.date], present: Iterable[str]) -> dict:
    """``{"count", "dates"}`` of the ``expected`` dates absent from ``present`` (ISO dates);
    the first 10 dates are listed."""
    present = set(present)
    absent = [d.isoformat() for d in expected if d.isoformat() not in present]
    return {"count": len(absent), "dates": absent[:10]}


def check_missing(missing: dict, what: str, policy: str) -> None:
    """Log each gap; with ``raw.missing_partitions: fail`` stop the run, naming them."""
    gaps = {name: m for name, m in missing.items() if m["count"]}
    if not gaps:
        return
    lines = [f"{name}: {m['count']} {what} missing ({', '.join(m['dates'])}"
             f"{', …' if m['count'] > len(m['dates']) else ''})" for name, m in gaps.items()]
    if policy == "fail":
        raise EncodeError("; ".join(lines) + ". A missed delivery would look like a quiet day; "
                          "land the partitions, or set raw.missing_partitions: warn")
    for line in lines:
        log.warning("%s (raw.missing_partitions: warn; 'fail' stops the run instead)", line)
