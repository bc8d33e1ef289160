"""The snapshot of the window ending at ds: per user and modality, relative (day, hour, channel,
value) arrays and the paper's text form, updated from the nearest earlier snapshot where its
partitions are unchanged."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from typing import Iterable, Sequence

from common import catalog, storage
from common.publish import Publisher
from jobs.encoding import snapshot_arrow
from jobs.encoding.validation import (
    EncodeError,
    check_missing,
    landing_partitions,
    missing_dates,
    partition_dates,
    window_dates,
)
from schemas.config import PipelineConfig, WindowConfig
from schemas.contracts import SNAPSHOT, SPARSE_EVENTS, spark_ddl

log = logging.getLogger("metaprofile.encode")


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


def _write_spark(spark, snapshot, staging: str) -> dict[str, dict[str, int]]:
    """Write a snapshot frame into ``staging``; per modality, its users and cells."""
    from pyspark.sql import functions as F

    snapshot.write.mode("overwrite").parquet(staging)
    summary = (spark.read.parquet(staging).groupBy("modality")
               .agg(F.count(F.lit(1)).alias("users"), F.sum(F.size("day")).alias("cells"))
               .collect())
    return {r["modality"]: {"users": r["users"], "cells": int(r["cells"])} for r in summary}


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
            dates.append(dt.date.fromisoformat(name.removeprefix(f"{catalog.DAILY_KEY}=")))
        except ValueError:
            continue  # staging folders and anything else that is not a snapshot
    for base_ds in sorted(dates, key=lambda d: (abs((d - ds).days), d > ds)):
        if abs((base_ds - ds).days) >= window_days:
            break
        uri = catalog.daily_path(snapshots_uri, base_ds)
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


def arrow_usable(config: PipelineConfig) -> str | None:
    """Why the update cannot run in Arrow (``snapshot_arrow``), or None when it can:
    ``raw.engine`` is ``auto`` and the events and snapshots are on local storage."""
    if config.raw.engine != "auto":
        return f"raw.engine is {config.raw.engine!r}"
    for key in ("events", "snapshots"):
        if not storage.is_local(config.storage.uri(key)):
            return f"storage.{key} is not local"
    return None


def _update_in_arrow(config: PipelineConfig, ds: dt.date, base_uri: str, base_manifest: dict,
                     redo: Sequence[dt.date], needed: Sequence[str], staging: str
                     ) -> dict | None:
    """The incremental update in one process (``snapshot_arrow``), written into ``staging``;
    its per-modality summary, or None when Spark must do it (the folder is then removed)."""
    import shutil

    from jobs.typed_read import data_files

    events_uri = config.storage.uri("events")
    update = snapshot_arrow.Update(
        base_start=dt.date.fromisoformat(base_manifest["window_start"]),
        start=config.window.start(ds), window_days=config.window.days, redo=redo)
    event_files = [f for path in landing_partitions(events_uri, map(dt.date.fromisoformat,
                                                                     needed))
                   for f in data_files(path)]
    folder = storage.local_path(staging)
    try:
        return snapshot_arrow.write_update(data_files(base_uri), event_files, update, folder)
    except snapshot_arrow.NeedsSpark as exc:
        log.info("snapshot %s: updated in Spark instead of Arrow (%s)", ds, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def build_snapshot(spark, config: PipelineConfig, ds: dt.date,
                   publisher: Publisher | None = None, incremental: bool = True) -> dict:
    """Assemble and publish ``snapshots/ds=<ds>`` from the daily event partitions.

    With ``incremental`` (the default), the nearest published snapshot is updated instead:
    only the dates it cannot supply are re-derived from the daily partitions (see
    ``find_base``). Without one, or with ``incremental=False``, every partition of the window
    is read. The update runs in Arrow, without Spark, where :func:`arrow_usable` allows;
    ``spark`` may be a function that starts the session, called only when Spark is needed.
    """
    from jobs.spark import publisher_for, session_of

    publisher = publisher or publisher_for(spark, config)
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
        session = session_of(spark)
        if not dts:
            return session.createDataFrame([], ddl)
        return (session.read.schema(ddl).option("basePath", events_uri)
                .parquet(*landing_partitions(events_uri, map(dt.date.fromisoformat, dts))))

    base = find_base(publisher, snapshots_uri, ds, config.window.days, fingerprints) \
        if incremental else None
    final = catalog.daily_path(snapshots_uri, ds)
    staging = publisher.staging(final)
    try:
        summary, assembly = None, {}
        if base is None:
            log.info("snapshot %s: assembling from %d event partitions", ds, len(fingerprints))
            snapshot = assemble_snapshot(events_of(sorted(fingerprints)), config, ds)
            assembly = {"mode": "full", "event_partitions_read": len(fingerprints)}
        else:
            base_uri, base_manifest, redo = base
            needed = sorted({(d + dt.timedelta(days=k)).isoformat()
                             for d in redo for k in (-1, 0, 1)} & set(fingerprints))
            log.info("snapshot %s: updating the snapshot of %s; re-deriving %d date(s) from %d "
                     "event partition(s)", ds, base_manifest["ds"], len(redo), len(needed))
            assembly = {"mode": "incremental", "base_ds": base_manifest["ds"],
                        "dates_rederived": [d.isoformat() for d in redo],
                        "event_partitions_read": len(needed)}
            why_not = arrow_usable(config)
            if why_not is None:
                summary = _update_in_arrow(config, ds, base_uri, base_manifest, redo, needed,
                                           staging)
            else:
                log.info("snapshot %s: updated in Spark (%s)", ds, why_not)
            assembly["engine"] = "spark" if summary is None else "arrow"
            if summary is None:
                base_cells = sum(m["cells"] for m in base_manifest["modalities"].values())
                estimate = CELL_BYTES * base_cells * len(redo) / base_manifest["window_days"]
                snapshot = update_snapshot(
                    session_of(spark).read.schema(spark_ddl(SNAPSHOT)).parquet(base_uri),
                    dt.date.fromisoformat(base_manifest["window_start"]),
                    events_of(needed), config, ds, redo,
                    broadcast=estimate <= BROADCAST_DELTA_BYTES)
        if summary is None:
            summary = _write_spark(session_of(spark), snapshot, staging)
        manifest = {"format": FINGERPRINTED_SINCE, "ds": ds.isoformat(),
                    "window_start": start.isoformat(), "window_days": config.window.days,
                    "event_partitions": len(fingerprints),
                    "missing_event_partitions": missing,
                    "modalities": summary,
                    "assembly": assembly, "event_fingerprints": fingerprints}
        publisher.write_text(f"{staging}/_manifest.json", json.dumps(manifest, indent=2))
        publisher.publish(staging, final)
    finally:
        publisher.cleanup()
    report = {k: v for k, v in manifest.items() if k != "event_fingerprints"}
    report["seconds"] = round(time.perf_counter() - started, 2)
    log.info("snapshot %s: published in %.1f s (%s)", ds, report["seconds"], assembly["mode"])
    return report
