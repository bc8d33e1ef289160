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
(``--full-snapshot`` reads every partition instead).

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
import hashlib
import json
import logging
import os
import sys
import time
from typing import Iterable, Sequence

if __package__ in (None, ""):  # spark-submit jobs/encode.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.errors import PipelineError
from common.privacy import load_pseudonym_key, pseudonymise_batches
from common.publish import Publisher
from jobs.typed_read import InputTypeError, check_local_inputs, read_parquet
from schemas.config import (
    ModalityConfig,
    PipelineConfig,
    WindowConfig,
    add_override_argument,
    load_config,
)
from schemas.contracts import (
    PURCHASE_STATUSES,
    RAW_SOURCES,
    REJECT_REASONS,
    SNAPSHOT,
    SPARSE_EVENTS,
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
    return [f"{raw_uri.rstrip('/')}/dt={d.isoformat()}" for d in dts]


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
        ("malformed_line", F.col(CORRUPT).isNotNull()),
        ("null_user_id", _blank(F.col("user_id"))),
        ("unparseable_timestamp", F.col("event_utc").isNull()),
        ("out_of_range_timestamp", (F.col("event_utc") < valid_from)
         | (F.col("event_utc") >= valid_until)),
        ("non_numeric_value", _blank(value_text) | bad_number),
        ("negative_value", F.col("value") < 0),
    ]
    if source == "purchases":
        quantity_text = F.trim(F.col("quantity"))
        quantity = quantity_text.try_cast("double")
        frame = frame.withColumn("qty", F.when(_blank(quantity_text), F.lit(1.0))
                                 .otherwise(quantity))
        checks += [
            ("non_numeric_value", F.col("qty").isNull() | F.isnan("qty")),
            ("negative_value", F.col("qty") < 0),
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


# --------------------------------------------------------------------------- encoding


def channel_values(modality: ModalityConfig):
    """One column per channel: the row's contribution to it, or null when it feeds none."""
    from pyspark.sql import functions as F

    columns = []
    status = F.lower(F.trim(F.col("status"))) if modality.source == "purchases" else None
    for index, channel in enumerate(modality.channels):
        if modality.source == "purchases":
            is_purchase, is_cancel = status == "purchase", status == "cancel"
            amount = F.col("value")
            if channel.measure == "purchase_amount":
                value = (F.when(is_purchase, amount).when(is_cancel, -amount)
                         if modality.cancellations == "net" else F.when(is_purchase, amount))
            elif channel.measure == "cancel_amount":
                value = F.when(is_cancel, amount)
            elif channel.measure == "purchase_count":
                value = F.when(is_purchase, F.lit(1.0))
            elif channel.measure == "cancel_count":
                value = F.when(is_cancel, F.lit(1.0))
            else:  # quantity
                value = F.when(is_purchase, F.col("qty"))
            value = F.when(genre_matches(channel.genre, F.col("genre")), value)
        else:
            matches = F.trim(F.col("point_type")) == channel.point_type
            value = F.when(matches, F.col("value") if channel.measure == "points"
                           else F.lit(1.0))
        columns.append(value.alias(f"c{index}"))
    return columns


def encode_cells(valid, config: PipelineConfig, source: str):
    """Valid, de-duplicated rows -> cells (user_id, modality, dt, date, hour, channel, value).

    All channels of a modality are summed in one wide aggregation per (user, date, hour),
    then unpivoted, rather than exploding every row into its channels first.
    """
    from pyspark.sql import functions as F

    frames = []
    for modality in config.modalities_for(source):
        channels = channel_values(modality)
        wide = (valid.select("user_id", "dt", "date", "hour", *channels)
                .groupBy("user_id", "dt", "date", "hour")
                .agg(*[F.sum(f"c{i}").alias(f"c{i}") for i in range(modality.num_channels)]))
        cells = wide.unpivot(["user_id", "dt", "date", "hour"],
                             [f"c{i}" for i in range(modality.num_channels)],
                             "channel", "value")
        frames.append(cells.where(F.col("value").isNotNull())
                      .select("user_id", F.lit(modality.name).alias("modality"), "dt", "date",
                              "hour", F.substring("channel", 2, 8).cast("smallint")
                              .alias("channel"), F.col("value").cast("float").alias("value")))
    return _union(frames)


def collapse_copies(checked, source: str):
    """Group identical raw rows of a landing date, keeping how many ``copies`` there were.

    Everything downstream reads this one (cached) frame, so the input is parsed once:
    a valid group is encoded once and its surplus copies are rejected as ``duplicate_row``,
    even when the copies sit in different files (a re-delivered file); an invalid group
    yields one reject per copy and keeps its input file. Rows are hash-partitioned by user
    first, so the duplicate check, the cell aggregation and the write share one shuffle.
    The typed columns are functions of the raw ones, so grouping by them too changes
    nothing but keeps every aggregate a hash aggregate (a string-valued ``first`` would make
    Spark sort the whole input).
    """
    from pyspark.sql import functions as F

    keys = [*RAW_SOURCES[source].names, "dt", CORRUPT, "reason", "event_utc", "value", "date",
            "hour"] + (["qty"] if source == "purchases" else [])
    file_key = F.when(F.col("reason").isNotNull(), F.col("input_file")).alias("input_file")
    return (checked.select(*keys, file_key).repartition("user_id")
            .groupBy(*keys, "input_file").agg(F.count(F.lit(1)).alias("copies")))


def rejected_copies(groups):
    """One reject row per copy of an invalid group and per surplus copy of a valid one.

    ``input_file`` is null for a duplicate, whose copies may come from several files.
    """
    from pyspark.sql import functions as F

    surplus = F.when(F.col("reason").isNull(), F.col("copies") - 1).otherwise(F.col("copies"))
    return (groups.withColumn("rejected", surplus).where(F.col("rejected") > 0)
            .withColumn("reason", F.coalesce("reason", F.lit("duplicate_row")))
            .withColumn("copy", F.explode(F.sequence(F.lit(1), F.col("rejected")))))


def reject_records(rejected, source: str):
    """Rejected rows in the REJECTS contract, each keeping its original record."""
    from pyspark.sql import functions as F

    raw = RAW_SOURCES[source].names
    record = F.when(F.col(CORRUPT).isNotNull(), F.col(CORRUPT)).otherwise(
        F.to_json(F.struct(*[F.col(c) for c in raw]), {"ignoreNullFields": "false"}))
    return rejected.select(F.lit(source).alias("source"), "reason", record.alias("record"),
                           "input_file", "dt")


# --------------------------------------------------------------------------- snapshot

# A snapshot's manifest records one fingerprint per daily event partition it was built from.
# The next snapshot starts from the nearest earlier one and recomputes only the local dates
# whose partitions changed since, or that the earlier window did not cover.
FINGERPRINTED_SINCE = 2  # snapshot manifest "format" from which fingerprints are recorded
# Past this share of re-derived dates, assembling from all daily partitions is cheaper.
MAX_DIRTY_SHARE = 0.5
# The re-derived cells are broadcast to the earlier snapshot's rows up to this estimated
# size; above it both sides are shuffled.
BROADCAST_DELTA_BYTES = 64 << 20
CELL_BYTES = 24  # estimated size of one collected (day, hour, channel, value) cell


def partition_fingerprint(files: Sequence[tuple[str, int]]) -> str:
    """Digest of a partition's data files by name and size.

    Spark names every written file after its write job, so a rerun of a date changes the
    digest even when the content is byte-for-byte the same.
    """
    listing = "\n".join(f"{name}:{size}" for name, size in sorted(files)
                        if not name.startswith(("_", ".")))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def event_fingerprints(publisher: "Publisher", events_uri: str,
                       dates: Iterable[dt.date]) -> dict[str, str]:
    """``{dt: fingerprint}`` of the event partitions among ``dates`` that exist."""
    found = {}
    dates = list(dates)
    for d, path in zip(dates, landing_partitions(events_uri, dates)):
        files = publisher.list_files(path)
        if files is not None:
            found[d.isoformat()] = partition_fingerprint(files)
    return found


def dirty_dates(ds: dt.date, window_days: int, fingerprints: dict[str, str],
                base: dict) -> list[dt.date]:
    """Local dates of the window ending at ``ds`` that the snapshot ``base`` cannot supply.

    ``base`` is an earlier snapshot's manifest. A local date needs re-deriving from the daily
    partitions when the base window did not cover it, or when one of the landing partitions
    that can hold its events (the date itself and either neighbour) was added, removed or
    rewritten since the base was built.
    """
    start = WindowConfig(days=window_days).start(ds)
    base_ds = dt.date.fromisoformat(base["ds"])
    base_start = dt.date.fromisoformat(base["window_start"])
    before = base["event_fingerprints"]
    changed = {d for d in set(fingerprints) | set(before)
               if fingerprints.get(d) != before.get(d)}
    window = [start + dt.timedelta(days=i) for i in range(window_days)]
    return [d for d in window
            if not base_start <= d <= base_ds
            or any((d + dt.timedelta(days=k)).isoformat() in changed for k in (-1, 0, 1))]


def _cell_text(cells):
    """The paper's text form of a sorted cell array: 'day,hour,channel:value;...'.

    Whole values print without a decimal point (5000, not 5000.0).
    """
    from pyspark.sql import functions as F

    def one(c):
        # round, not floor: floor returns a bigint, which overflows (an ANSI error that
        # failed the whole snapshot) on an amount of 1e20.
        whole = (F.abs(c["value"]) < 1e15) & (c["value"] == F.round(c["value"]))
        value = (F.when(whole, c["value"].cast("bigint").cast("string"))
                 .otherwise(c["value"].cast("string")))
        return F.concat(c["day"].cast("string"), F.lit(","), c["hour"].cast("string"), F.lit(","),
                        c["channel"].cast("string"), F.lit(":"), value)
    return F.concat_ws(";", F.transform(cells, one))


def collect_cells(events, start: dt.date, dates):
    """Daily cells -> one sorted ``cells`` array of (day, hour, channel, value) per
    (user, modality), over the local dates ``dates`` (a Column predicate on ``date``)."""
    from pyspark.sql import functions as F

    # One shuffle by (user, modality) serves both aggregations below.
    cells = (events.where(dates).repartition("user_id", "modality")
             .groupBy("user_id", "modality", "date", "hour", "channel")
             .agg(F.sum("value").cast("float").alias("value"))
             .withColumn("day", F.datediff("date", F.lit(start)).cast("smallint")))
    return (cells.groupBy("user_id", "modality")
            .agg(F.sort_array(F.collect_list(F.struct("day", "hour", "channel", "value")))
                 .alias("cells")))


def carry_cells(base, base_start: dt.date, start: dt.date, window_days: int,
                redo_days: Sequence[int]):
    """An earlier snapshot's rows -> ``cells`` arrays re-based to the window at ``start``,
    without the days outside it and without ``redo_days`` (relative to ``start``)."""
    from pyspark.sql import functions as F

    shift = (base_start - start).days
    moved = F.transform(F.arrays_zip("day", "hour", "channel", "value"),
                        lambda c: c.withField("day", (c["day"] + shift).cast("smallint")))
    keep = F.filter(moved, lambda c: (c["day"] >= 0) & (c["day"] < window_days)
                    & ~c["day"].isin(list(redo_days)))
    return base.select("user_id", "modality", keep.alias("cells"))


def snapshot_rows(collected):
    """(user_id, modality, cells) -> the snapshot contract: parallel arrays plus text."""
    from pyspark.sql import functions as F

    return collected.select(
        "user_id", "modality",
        F.col("cells.day").alias("day"), F.col("cells.hour").alias("hour"),
        F.col("cells.channel").alias("channel"), F.col("cells.value").alias("value"),
        _cell_text("cells").alias("text"))


def assemble_snapshot(events, config: PipelineConfig, ds: dt.date):
    """Daily cells -> one row per (user, modality) over the window ending at ``ds``."""
    from pyspark.sql import functions as F

    start = config.window.start(ds)
    return snapshot_rows(collect_cells(
        events, start, (F.col("date") >= F.lit(start)) & (F.col("date") <= F.lit(ds))))


def update_snapshot(base, base_start: dt.date, events, config: PipelineConfig, ds: dt.date,
                    redo: Sequence[dt.date], broadcast: bool):
    """An earlier snapshot + the daily cells of the ``redo`` dates -> the snapshot at ``ds``.

    ``events`` must hold every partition that can carry events of the ``redo`` dates. The
    result equals ``assemble_snapshot`` over all partitions, provided the base's other dates
    come from unchanged partitions (see ``dirty_dates``).
    """
    from pyspark.sql import functions as F

    start = config.window.start(ds)
    keys = ["user_id", "modality"]
    redo_days = sorted((d - start).days for d in redo)
    fresh = collect_cells(events, start, F.col("date").isin(list(redo)))
    carried = carry_cells(base, base_start, start, config.window.days, redo_days)
    cell_type = carried.schema["cells"].dataType
    right = fresh.withColumnRenamed("cells", "fresh")
    if broadcast:
        right = F.broadcast(right)
    # A left join with the (small) fresh cells on the broadcast side, plus the users that
    # only the fresh cells know: cheaper than a full outer join, which shuffles the base.
    updated = (carried.join(right, keys, "left")
               .select(*keys, F.concat("cells", F.coalesce("fresh", F.array().cast(cell_type)))
                       .alias("cells")))
    newcomers = fresh.join(base.select(*keys), keys, "left_anti")
    window = config.window.days
    # When the re-derived days end the window (the nightly case), every carried day precedes
    # every fresh one, so the concatenation is already in order.
    in_order = redo_days == list(range(window - len(redo_days), window))
    merged = (updated.unionByName(newcomers)
              .select(*keys, (F.col("cells") if in_order else F.sort_array("cells"))
                      .alias("cells"))
              .where(F.size("cells") > 0))
    return snapshot_rows(merged)


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
        if row["reason"] is None:
            entry["rows_encoded"] += row["rows"] - row["duplicates"]
            if row["duplicates"]:
                entry["rows_rejected"]["duplicate_row"] = row["duplicates"]
        else:
            entry["rows_rejected"][row["reason"]] = row["rows"]


def run(spark, config: PipelineConfig, ds: dt.date, full: bool = False,
        snapshot: bool = True, incremental_snapshot: bool = True) -> dict:
    """Encode the landing partitions for ``ds`` and assemble its snapshot; return the report."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    key = load_pseudonym_key(config.pseudonymisation)
    dates = partition_dates(config, ds, full)
    publisher = Publisher(spark)
    events_uri, rejects_uri = config.storage.uri("events"), config.storage.uri("rejects")
    per_date: dict[str, dict] = {d.isoformat(): {} for d in dates}
    cell_frames, reject_frames, cached = [], [], []
    landed = {source: existing_paths(publisher, landing_partitions(
        config.storage.uri(f"raw_{source}"), dates)) for source in RAW_SOURCES}
    missing = {}
    if full:  # a source with no partition at all is absent (no points programme), not late
        missing = {source: missing_dates(window_dates(config, ds),
                                         [p.rsplit("/dt=", 1)[1] for p in paths])
                   for source, paths in landed.items() if paths}
        check_missing(missing, "landing partition(s) of the window", config.raw.missing_partitions)
    if config.raw.format == "parquet":
        # Every local file's column types, checked before any Spark job starts.
        try:
            check_local_inputs({f"raw {s}": (p, RAW_SOURCES[s]) for s, p in landed.items()})
        except InputTypeError as exc:
            raise EncodeError(str(exc)) from None
    try:
        for source in RAW_SOURCES:
            raw_uri = config.storage.uri(f"raw_{source}")
            paths = landed[source]
            if not paths:
                if full:
                    continue
                raise EncodeError(f"no raw {source} partition dt={ds} under {raw_uri}")
            log.info("%s: reading %d landing partition(s)", source, len(paths))
            checked = (parse_and_validate(read_raw(spark, config, source, paths), config, source)
                       .withColumn("dt", F.col("dt").cast("date")))
            groups = collapse_copies(checked, source).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(groups)
            cell_frames.append(encode_cells(groups.where(F.col("reason").isNull()), config,
                                            source))
            reject_frames.append(reject_records(rejected_copies(groups), source))
            # Exact accounting per landing date; this pass also fills the cache.
            counts = (groups.groupBy("dt", "reason")
                      .agg(F.sum("copies").alias("rows"),
                           F.sum(F.when(F.col("reason").isNull(), F.col("copies") - 1))
                           .alias("duplicates"))
                      .collect())
            account(per_date, source, counts)
            log.info("%s: validated %s rows", source, f"{sum(r['rows'] for r in counts):,}")

        rejects_staging = publisher.staging(f"{rejects_uri}/_run")
        # Rejects are few: gather each landing date's into one task, so the write creates one
        # file per date instead of one per (task, date) (measured: about 65 s of a 234 s
        # full-year run went into creating ~6,000 small files).
        (_union(reject_frames).repartition("dt")
         .write.partitionBy("dt").mode("overwrite").parquet(rejects_staging))
        totals = _totals(per_date)
        log.info("accounting: %s", json.dumps(totals))
        _publish_partitions(publisher, rejects_staging, rejects_uri, per_date, "dt")
        check_reject_ratio(totals, config.raw.max_reject_ratio)

        cells = _union(cell_frames)
        if key is not None:
            cells = cells.mapInArrow(pseudonymise_batches(key), cells.schema)
        events_staging = publisher.staging(f"{events_uri}/_run")
        # One file per landing date (writing straight from the user partitions measured
        # slower: every task then writes a small file into every date).
        (cells.repartition("dt")
         .sortWithinPartitions("user_id", "modality", "date", "hour", "channel")
         .write.partitionBy("dt").mode("overwrite").parquet(events_staging))
        landed_dates = {s: {p.rsplit("/dt=", 1)[1] for p in paths} for s, paths in landed.items()}
        manifests = {d: {"dt": d, "ds": ds.isoformat(), "config": config.name,
                         "pseudonymised": key is not None, "sources": per_date[d],
                         "missing_sources": [s for s in RAW_SOURCES if landed[s]
                                             and d not in landed_dates[s]]}
                     for d in per_date}
        _publish_partitions(publisher, events_staging, events_uri, per_date, "dt", manifests)
    finally:
        for frame in cached:
            frame.unpersist()
        publisher.cleanup()
    report = {"ds": ds.isoformat(), "mode": "full" if full else "daily",
              "partitions": len(dates), "missing_landing_partitions": missing, "sources": totals,
              "encode_seconds": round(time.perf_counter() - started, 2)}
    if snapshot:
        report["snapshot"] = build_snapshot(spark, config, ds, publisher,
                                            incremental=incremental_snapshot)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def find_base(publisher: "Publisher", snapshots_uri: str, ds: dt.date, window_days: int,
              fingerprints: dict[str, str]) -> tuple[str, dict, list[dt.date]] | None:
    """The published snapshot nearest to ``ds`` that the snapshot at ``ds`` can be updated from.

    Returns its URI, its manifest and the dates to re-derive, or None when no snapshot
    records fingerprints or every usable one would re-derive more than ``MAX_DIRTY_SHARE``
    of the window.
    """
    dates = []
    for name in publisher.list_folders(snapshots_uri):
        try:
            dates.append(dt.date.fromisoformat(name.removeprefix("ds=")))
        except ValueError:
            continue  # staging folders and anything else that is not a snapshot
    for base_ds in sorted(dates, key=lambda d: (abs((d - ds).days), d > ds)):
        if abs((base_ds - ds).days) >= window_days:
            break
        uri = f"{snapshots_uri.rstrip('/')}/ds={base_ds.isoformat()}"
        text = publisher.read_text(f"{uri}/_manifest.json")
        if text is None or not publisher.exists(f"{uri}/_SUCCESS"):
            continue
        try:
            manifest = json.loads(text)
        except ValueError:
            log.warning("snapshot %s: unreadable _manifest.json; not used as a base", uri)
            continue
        if manifest.get("format", 1) < FINGERPRINTED_SINCE:
            continue
        redo = dirty_dates(ds, window_days, fingerprints, manifest)
        if len(redo) <= MAX_DIRTY_SHARE * window_days:
            return uri, manifest, redo
    return None


def build_snapshot(spark, config: PipelineConfig, ds: dt.date,
                   publisher: Publisher | None = None, incremental: bool = True) -> dict:
    """Assemble and publish ``snapshots/ds=<ds>`` from the daily event partitions.

    With ``incremental`` (the default), the nearest published snapshot is updated instead:
    only the dates it cannot supply are re-derived from the daily partitions (see
    ``find_base``). Without one, or with ``incremental=False``, every partition of the window
    is read.
    """
    from pyspark.sql import functions as F

    publisher = publisher or Publisher(spark)
    started = time.perf_counter()
    events_uri, snapshots_uri = config.storage.uri("events"), config.storage.uri("snapshots")
    start = config.window.start(ds)
    fingerprints = event_fingerprints(publisher, events_uri,
                                      partition_dates(config, ds, full=True))
    if not fingerprints:
        raise EncodeError(f"no event partitions under {events_uri} for the window "
                          f"{start} .. {ds}; encode first")
    missing = missing_dates(window_dates(config, ds), fingerprints)
    check_missing({"events": missing}, "daily event partition(s) of the window",
                  config.raw.missing_partitions)
    ddl = spark_ddl(SPARSE_EVENTS)

    def events_of(dts: Sequence[str]):
        if not dts:
            return spark.createDataFrame([], ddl)
        return (spark.read.schema(ddl).option("basePath", events_uri)
                .parquet(*landing_partitions(events_uri, map(dt.date.fromisoformat, dts))))

    base = find_base(publisher, snapshots_uri, ds, config.window.days, fingerprints) \
        if incremental else None
    if base is None:
        log.info("snapshot %s: assembling from %d event partitions", ds, len(fingerprints))
        snapshot = assemble_snapshot(events_of(sorted(fingerprints)), config, ds)
        assembly = {"mode": "full", "event_partitions_read": len(fingerprints)}
    else:
        base_uri, base_manifest, redo = base
        needed = sorted({(d + dt.timedelta(days=k)).isoformat() for d in redo for k in (-1, 0, 1)}
                        & set(fingerprints))
        base_cells = sum(m["cells"] for m in base_manifest["modalities"].values())
        estimate = CELL_BYTES * base_cells * len(redo) / base_manifest["window_days"]
        log.info("snapshot %s: updating the snapshot of %s; re-deriving %d date(s) from %d "
                 "event partition(s)", ds, base_manifest["ds"], len(redo), len(needed))
        snapshot = update_snapshot(
            spark.read.schema(spark_ddl(SNAPSHOT)).parquet(base_uri),
            dt.date.fromisoformat(base_manifest["window_start"]), events_of(needed), config, ds,
            redo, broadcast=estimate <= BROADCAST_DELTA_BYTES)
        assembly = {"mode": "incremental", "base_ds": base_manifest["ds"],
                    "dates_rederived": [d.isoformat() for d in redo],
                    "event_partitions_read": len(needed)}
    final = f"{snapshots_uri}/ds={ds.isoformat()}"
    staging = publisher.staging(final)
    try:
        snapshot.write.mode("overwrite").parquet(staging)
        summary = (spark.read.parquet(staging).groupBy("modality")
                   .agg(F.count(F.lit(1)).alias("users"), F.sum(F.size("day")).alias("cells"))
                   .collect())
        manifest = {"format": FINGERPRINTED_SINCE, "ds": ds.isoformat(),
                    "window_start": start.isoformat(), "window_days": config.window.days,
                    "event_partitions": len(fingerprints),
                    "missing_event_partitions": missing,
                    "modalities": {r["modality"]: {"users": r["users"], "cells": int(r["cells"])}
                                   for r in summary},
                    "assembly": assembly, "event_fingerprints": fingerprints}
        publisher.write_text(f"{staging}/_manifest.json", json.dumps(manifest, indent=2))
        publisher.publish(staging, final)
    finally:
        publisher.cleanup()
    report = {k: v for k, v in manifest.items() if k != "event_fingerprints"}
    report["seconds"] = round(time.perf_counter() - started, 2)
    log.info("snapshot %s: published in %.1f s (%s)", ds, report["seconds"], assembly["mode"])
    return report


def _union(frames):
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def _totals(per_date: dict) -> dict:
    totals: dict[str, dict] = {}
    for sources in per_date.values():
        for source, c in sources.items():
            t = totals.setdefault(source, {"rows_read": 0, "rows_encoded": 0,
                                           "rows_rejected": {}})
            t["rows_read"] += c["rows_read"]
            t["rows_encoded"] += c["rows_encoded"]
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


def build_parser(prog: str = "spark-submit jobs/encode.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Encode raw purchase and points logs of one landing date (or, with "
                    "--full, of the whole window) into daily sparse heatmap cells with "
                    "quarantined rejects and exact row accounting, then assemble the snapshot "
                    "of the window ending at --ds.")
    parser.add_argument("--config", required=True, help="pipeline config YAML")
    parser.add_argument("--ds", type=dt.date.fromisoformat, default=None,
                        help="snapshot date YYYY-MM-DD (default: the config's window.end)")
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
    parser.add_argument("--master", default=None,
                        help="Spark master, e.g. local[2], yarn, spark://host:7077 (default: "
                             "spark-submit's, else local[*])")
    add_override_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "spark-submit jobs/encode.py") -> int:
    args = build_parser(prog).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.full and args.snapshot_only:
        print(f"{prog}: error: --full and --snapshot-only exclude each other", file=sys.stderr)
        return 2
    config = load_config(args.config, overrides=args.overrides)
    ds = args.ds or config.window.end
    if ds is None:
        print(f"{prog}: error: --ds is required (the config has no window.end)", file=sys.stderr)
        return 2
    from jobs.spark import build_session
    spark = build_session(f"metaprofile-encode-{ds}", master=args.master)
    try:
        if args.snapshot_only:
            report = {"ds": ds.isoformat(), "snapshot": build_snapshot(
                spark, config, ds, incremental=args.incremental_snapshot)}
        else:
            report = run(spark, config, ds, full=args.full, snapshot=args.snapshot,
                         incremental_snapshot=args.incremental_snapshot)
    except EncodeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
