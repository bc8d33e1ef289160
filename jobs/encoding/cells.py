"""Valid rows to heatmap cells: route genres and point types to channels, bin into local (date,
hour), aggregate, and set exact copies aside."""
from __future__ import annotations

import logging

from jobs.encoding.validation import CORRUPT, genre_matches
from jobs.spark import union_all
from schemas.config import ModalityConfig, PipelineConfig
from schemas.contracts import RAW_SOURCES

log = logging.getLogger("metaprofile.encode")


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
    return union_all(frames)


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

