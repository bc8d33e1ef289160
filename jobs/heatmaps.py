"""Snapshot + demographics + source-task labels → GZIP TFRecord heatmap shards + manifest.

    spark-submit --master 'local[*]' jobs/heatmaps.py --config conf/synthetic.yaml --ds 2026-06-30
    metaprofile heatmaps --config conf/synthetic.yaml --ds 2026-06-30

One ``tf.train.Example`` per user (feature spec: ``schemas/tfrecord_spec.py``):

- ``user_id``: the (pseudonymised) id.
- Per modality, ``<m>/index`` (flat int64 ``(day*24 + hour)*C + channel``) and
  ``<m>/value`` (float): the heatmap stays sparse on disk.
- ``demo/<field>``: a float for numeric fields (NaN when missing) and a string for
  categorical ones (empty when missing).
- ``label/<task>`` and ``mask/<task>`` for every source task. The mask is 0 where the user
  has no label, or has contradicting labels.

The users are everyone in the snapshot or the demographics: a user with demographics but no
events gets empty modalities. Each user falls into train / validation / test by a salted
hash of the id (``heatmaps:`` in the config), so the split is stable across nights.

**Executors write the shards.** They use the ``tfrecord`` package (no TensorFlow there),
GZIP-compressed, with deterministic bytes, and start a new shard once the compressed size
passes ``heatmaps.max_shard_mb``. Each shard reports its SHA-256 and its counts to the
driver, which writes ``_manifest.json``: the feature spec and its fingerprint, the shards
with checksums, counts per split and task, empty modalities, and training-split statistics
of the numeric demographics. Labels that cannot be used (unknown task, a value other than
0/1, users with neither events nor demographics) are counted there too, never dropped
silently.

**Atomic and idempotent.** The ``heatmaps/ds=<ds>`` directory is staged and renamed into
place with ``_SUCCESS``. A rerun of a day replaces it with the same bytes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import os
import sys
import time
from typing import Iterator, Sequence

if __package__ in (None, ""):  # spark-submit jobs/heatmaps.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import catalog, storage
from common.errors import PipelineError
from common.privacy import pseudonymise_frame
from common.publish import Publisher
from jobs import runner
from jobs.runner import Job
from jobs.spark import without_erased
from jobs.typed_read import InputTypeError, read_folder
from schemas.config import PipelineConfig
from schemas.contracts import LABELS, MAX_RAW_VALUE, SNAPSHOT, demographics_schema, spark_ddl
from schemas.tfrecord_spec import (
    HOURS,
    column_index_key,
    column_value_key,
    record_index_key,
    record_value_key,
    spec_document,
    spec_fingerprint,
)

log = logging.getLogger("metaprofile.heatmaps")

SPLITS = ("train", "validation", "test")
SPLIT_BUCKETS = 1_000_000
MANIFEST = "_manifest.json"
SHARD_SUFFIX = ".tfrecord.gz"

# The per-shard report each executor task returns to the driver (metadata only, no users).
SHARD_REPORT_DDL = ("split STRING, path STRING, examples BIGINT, bytes BIGINT, "
                    "sha256 STRING, stats STRING")


class HeatmapsError(PipelineError):
    """A run that must not publish (missing snapshot, a snapshot of another window)."""


# --------------------------------------------------------------------------- pure transforms


def index_column(modality_channels: int):
    """The flat heatmap index of every cell of a snapshot row: ``(day*24+hour)*C+channel``."""
    from pyspark.sql import functions as F

    return F.transform(
        F.arrays_zip("day", "hour", "channel"),
        lambda c: (c["day"].cast("bigint") * HOURS + c["hour"].cast("bigint"))
        * modality_channels + c["channel"].cast("bigint"))


def split_column(config: PipelineConfig, user_id: str = "user_id"):
    """train / validation / test from a salted 64-bit hash of the user id."""
    from pyspark.sql import functions as F

    h = config.heatmaps
    bucket = F.pmod(F.xxhash64(F.lit(h.split_salt), F.col(user_id)), F.lit(SPLIT_BUCKETS))
    train_end = round(h.train * SPLIT_BUCKETS)
    validation_end = round((h.train + h.validation) * SPLIT_BUCKETS)
    return (F.when(bucket < train_end, "train")
            .when(bucket < validation_end, "validation").otherwise("test"))


def modality_frames(snapshot, config: PipelineConfig) -> list:
    """One (user_id, <m>__index, <m>__value) frame per modality."""
    from pyspark.sql import functions as F

    frames = []
    for m in config.modalities:
        frames.append(snapshot.where(F.col("modality") == m.name).select(
            "user_id",
            index_column(m.num_channels).alias(column_index_key(m.name)),
            F.col("value").alias(column_value_key(m.name))))
    return frames


def usable_number(column):
    """A numeric demographic as double; NaN, ±inf and values beyond ±MAX_RAW_VALUE (which
    would make the training set's mean and std inf) read as missing, and are counted."""
    from pyspark.sql import functions as F

    value = column.cast("double")
    return F.when(~F.isnan(value) & (F.abs(value) <= MAX_RAW_VALUE), value)


def demographics_accounting(demographics, config: PipelineConfig) -> dict:
    """Rows without a user id (left out) and, per numeric field, values that
    :func:`usable_number` reads as missing."""
    from pyspark.sql import functions as F

    fields = config.demographics.numeric
    row = demographics.agg(
        F.count(F.lit(1)).alias("_rows"),
        F.sum(F.col("user_id").isNull().cast("int")).alias("_no_id"),
        *[F.sum((F.col(n).isNotNull() & usable_number(F.col(n)).isNull()).cast("int"))
          .alias(n) for n in fields]).first()
    return {"rows": int(row["_rows"]), "rows_without_user_id": int(row["_no_id"] or 0),
            "unusable_values": {n: int(row[n] or 0) for n in fields if row[n]}}


def clean_demographics(demographics, config: PipelineConfig):
    """One row per user: numeric fields as double (NaN → null), categorical as string.

    A user listed more than once keeps the smallest value of each field (deterministic)
    and is counted in ``_rows``.
    """
    from pyspark.sql import functions as F

    numeric = [F.min(usable_number(F.col(n))).alias(n) for n in config.demographics.numeric]
    categorical = [F.min(F.when(F.trim(F.col(c.name)) != "", F.trim(F.col(c.name))))
                   .alias(c.name) for c in config.demographics.categorical]
    return (demographics.where(F.col("user_id").isNotNull())
            .groupBy("user_id")
            .agg(F.count(F.lit(1)).alias("_rows"), *numeric, *categorical))


def label_problems(labels, config: PipelineConfig):
    """Each label row with ``problem``: null, 'unknown_task' or 'invalid_label'."""
    from pyspark.sql import functions as F

    tasks = [t.name for t in config.source_tasks]
    return labels.withColumn(
        "problem",
        F.when(F.col("user_id").isNull(), "null_user_id")
        .when(~F.col("task").isin(tasks), "unknown_task")
        .when(~F.col("label").isin(0, 1) | F.col("label").isNull(), "invalid_label"))


def pivot_labels(valid_labels, config: PipelineConfig):
    """One row per labelled user: ``label__<task>`` and ``mask__<task>`` (0/1 ints).

    Repeated rows with the same label count once; a user labelled both 0 and 1 for a task is
    unlabelled for it (mask 0) and counted as conflicting.
    """
    from pyspark.sql import functions as F

    aggs = []
    for t in config.source_tasks:
        hit = F.col("task") == t.name
        aggs += [F.min(F.when(hit, F.col("label"))).alias(f"lo__{t.name}"),
                 F.max(F.when(hit, F.col("label"))).alias(f"hi__{t.name}")]
    if not aggs:  # behaviour tasks only (tasks.behaviour): no survey label columns
        return valid_labels.select("user_id").distinct()
    pivoted = valid_labels.groupBy("user_id").agg(*aggs)
    columns = ["user_id"]
    for t in config.source_tasks:
        lo, hi = F.col(f"lo__{t.name}"), F.col(f"hi__{t.name}")
        agreed = lo.isNotNull() & (lo == hi)
        columns += [F.when(agreed, hi).otherwise(0).cast("int").alias(f"label__{t.name}"),
                    F.when(agreed, 1).otherwise(0).cast("int").alias(f"mask__{t.name}"),
                    (lo.isNotNull() & (lo != hi)).cast("int").alias(f"conflict__{t.name}")]
    return pivoted.select(*columns)


def assemble_examples(modalities: list, demographics, labels, config: PipelineConfig):
    """Join everything into one row per user in the snapshot or the demographics.

    ``labels`` may be None (the embed job): the rows then carry no label or mask columns.
    """
    from pyspark.sql import functions as F

    users = modalities[0]
    for frame in modalities[1:]:
        users = users.join(frame, on="user_id", how="full_outer")
    users = users.join(demographics, on="user_id", how="full_outer")
    if labels is not None:
        users = users.join(labels, on="user_id", how="left")
    columns = ["user_id", split_column(config).alias("split")]
    for m in config.modalities:
        columns += [F.coalesce(column_index_key(m.name), F.array().cast("array<bigint>"))
                    .alias(column_index_key(m.name)),
                    F.coalesce(column_value_key(m.name), F.array().cast("array<float>"))
                    .alias(column_value_key(m.name))]
    columns += list(config.demographics.numeric)
    columns += [c.name for c in config.demographics.categorical]
    for t in config.source_tasks if labels is not None else ():
        columns += [F.coalesce(f"label__{t.name}", F.lit(0)).alias(f"label__{t.name}"),
                    F.coalesce(f"mask__{t.name}", F.lit(0)).alias(f"mask__{t.name}")]
    return users.select(*columns)


# --------------------------------------------------------------------------- executor side


class _HashingSink:
    """A write-only file wrapper that counts and hashes the bytes passing through."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


def example_datum(row: dict, config: PipelineConfig) -> dict:
    """A ``tfrecord`` writer datum for one assembled row (values as Python lists)."""
    datum = {"user_id": (row["user_id"].encode(), "byte")}
    for m in config.modalities:
        datum[record_index_key(m.name)] = (row[column_index_key(m.name)], "int")
        datum[record_value_key(m.name)] = (row[column_value_key(m.name)], "float")
    for n in config.demographics.numeric:
        value = row[n]
        datum[f"demo/{n}"] = (math.nan if value is None else value, "float")
    for c in config.demographics.categorical:
        datum[f"demo/{c.name}"] = ((row[c.name] or "").encode(), "byte")
    for t in config.source_tasks:
        datum[f"label/{t.name}"] = (row[f"label__{t.name}"], "int")
        datum[f"mask/{t.name}"] = (row[f"mask__{t.name}"], "int")
    return datum


def new_stats(config: PipelineConfig) -> dict:
    return {
        "tasks": {t.name: {"positives": 0, "negatives": 0, "unlabelled": 0}
                  for t in config.source_tasks},
        "empty_modality": {m.name: 0 for m in config.modalities},
        "no_events": 0,
        "cells": {m.name: 0 for m in config.modalities},
        "numeric": {n: {"count": 0, "missing": 0, "sum": 0.0, "sum_sq": 0.0}
                    for n in config.demographics.numeric},
        "categorical": {c.name: {"missing": 0, "unknown": 0}
                        for c in config.demographics.categorical},
    }


def update_stats(stats: dict, row: dict, config: PipelineConfig,
                 vocabularies: dict[str, set]) -> None:
    for t in config.source_tasks:
        counts = stats["tasks"][t.name]
        if not row[f"mask__{t.name}"]:
            counts["unlabelled"] += 1
        elif row[f"label__{t.name}"]:
            counts["positives"] += 1
        else:
            counts["negatives"] += 1
    empty = 0
    for m in config.modalities:
        cells = len(row[column_index_key(m.name)])
        stats["cells"][m.name] += cells
        if cells == 0:
            stats["empty_modality"][m.name] += 1
            empty += 1
    stats["no_events"] += empty == len(config.modalities)
    for n in config.demographics.numeric:
        s, value = stats["numeric"][n], row[n]
        if value is None:
            s["missing"] += 1
        else:
            s["count"] += 1
            s["sum"] += value
            s["sum_sq"] += value * value
    for c in config.demographics.categorical:
        value = row[c.name]
        if value is None:
            stats["categorical"][c.name]["missing"] += 1
        elif value not in vocabularies[c.name]:
            stats["categorical"][c.name]["unknown"] += 1


def merge_stats(total: dict, part: dict) -> dict:
    """Add ``part`` into ``total`` (nested dicts of numbers), returning ``total``."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge_stats(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def serialize_example(datum: dict) -> bytes:
    """One ``tf.train.Example``, serialised with its features in key order.

    The tfrecord package's own serialiser writes the feature map in hash-table order, which
    differs between processes, so two runs over the same snapshot wrote different bytes
    (found by the fault-injection suite). Sorted keys make a rerun byte-identical.
    """
    import numpy as np
    from tfrecord import example_pb2

    kinds = {"byte": ("bytes_list", example_pb2.BytesList),
             "float": ("float_list", example_pb2.FloatList),
             "int": ("int64_list", example_pb2.Int64List)}
    example = example_pb2.Example()
    for key in sorted(datum):
        value, dtype = datum[key]
        if not isinstance(value, (list, tuple, np.ndarray)):
            value = [value]
        field, kind = kinds[dtype]
        example.features.feature[key].CopyFrom(example_pb2.Feature(**{field: kind(value=value)}))
    return example.SerializeToString(deterministic=True)


def shard_writer(config: PipelineConfig, staging_uri: str):
    """The ``mapInArrow`` function: write this partition's rows as GZIP TFRecord shards.

    Shard names are a function of the partition id and a sequence number, so a retried task
    rewrites the same files, and the manifest lists only what successful tasks reported.
    """
    max_bytes = int(config.heatmaps.max_shard_mb * 1024 * 1024)
    vocabularies = {c.name: set(c.vocabulary) for c in config.demographics.categorical}

    def write(batches: Iterator) -> Iterator:
        import gzip

        import pyarrow as pa
        from pyspark import TaskContext
        from tfrecord.writer import TFRecordWriter

        if "tensorflow" in sys.modules:
            raise RuntimeError(
                "this Spark Python worker has imported TensorFlow (an embed task of the same "
                "application?), and the tfrecord package cannot share a process with it: run "
                "the heatmaps job as its own application, or set spark.python.worker.reuse=false")
        partition = TaskContext.get().partitionId()
        fs, root = storage.resolve(staging_uri)
        open_shards: dict[str, dict] = {}
        finished: list[dict] = []
        sequence = {s: 0 for s in SPLITS}

        def close(split: str) -> None:
            shard = open_shards.pop(split)
            shard["gzip"].close()
            shard["raw"].close()
            finished.append({"split": split, "path": shard["path"],
                             "examples": shard["examples"], "bytes": shard["sink"].size,
                             "sha256": shard["sink"].sha.hexdigest(),
                             "stats": json.dumps(shard["stats"])})

        def shard_for(split: str) -> dict:
            shard = open_shards.get(split)
            if shard is not None and shard["sink"].size >= max_bytes:
                close(split)
                shard = None
            if shard is None:
                relative = f"{split}/part-{partition:05d}-{sequence[split]:03d}{SHARD_SUFFIX}"
                sequence[split] += 1
                fs.create_dir(f"{root}/{split}", recursive=True)
                # compression=None: Arrow would otherwise gzip a '.gz' name a second time.
                raw = fs.open_output_stream(f"{root}/{relative}", compression=None)
                sink = _HashingSink(raw)
                # mtime=0 and no file name: the same rows give the same bytes on a rerun.
                compressed = gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0,
                                           compresslevel=6)
                shard = {"path": relative, "raw": raw, "sink": sink, "gzip": compressed,
                         "examples": 0, "stats": new_stats(config)}
                open_shards[split] = shard
            return shard

        for batch in batches:
            for row in batch.to_pylist():
                shard = shard_for(row["split"])
                record = serialize_example(example_datum(row, config))
                length = len(record).to_bytes(8, "little")
                out = shard["gzip"]
                out.write(length)
                out.write(TFRecordWriter.masked_crc(length))
                out.write(record)
                out.write(TFRecordWriter.masked_crc(record))
                shard["examples"] += 1
                update_stats(shard["stats"], row, config, vocabularies)
        for split in list(open_shards):
            close(split)
        if finished:
            yield pa.RecordBatch.from_pylist(finished)

    return write


# --------------------------------------------------------------------------- driver side


def numeric_statistics(train_stats: dict) -> dict:
    """Mean and standard deviation of each numeric field over the training split."""
    result = {}
    for name, s in train_stats.get("numeric", {}).items():
        n = s["count"]
        mean = s["sum"] / n if n else 0.0
        variance = max(s["sum_sq"] / n - mean * mean, 0.0) if n else 0.0
        std = math.sqrt(variance)
        result[name] = {"mean": mean, "std": std if std > 0 else 1.0, "count": n,
                        "missing": s["missing"]}
    return result


def build_manifest(config: PipelineConfig, ds: dt.date, reports: list[dict],
                   inputs: dict) -> dict:
    """The ``_manifest.json`` document from the executors' shard reports."""
    spec = spec_document(config)
    splits = {}
    for split in SPLITS:
        shards = sorted((r for r in reports if r["split"] == split), key=lambda r: r["path"])
        stats: dict = new_stats(config)
        for r in shards:
            merge_stats(stats, json.loads(r["stats"]))
        splits[split] = {
            "examples": sum(r["examples"] for r in shards),
            "bytes": sum(r["bytes"] for r in shards),
            "tasks": stats["tasks"],
            "empty_modality": stats["empty_modality"],
            "no_events": stats["no_events"],
            "cells": stats["cells"],
            "demographics": {"categorical": stats["categorical"],
                             "numeric_missing": {n: s["missing"]
                                                 for n, s in stats["numeric"].items()}},
            "shards": [{"path": r["path"], "examples": r["examples"], "bytes": r["bytes"],
                        "sha256": r["sha256"]} for r in shards],
            "_numeric": stats["numeric"],
        }
    normalisation = numeric_statistics({"numeric": splits["train"]["_numeric"]})
    for split in splits.values():
        del split["_numeric"]
    return {
        "ds": ds.isoformat(),
        "config": config.name,
        "compression": "GZIP",
        "spec": spec,
        "spec_fingerprint": spec_fingerprint(spec),
        "split": {"salt": config.heatmaps.split_salt, **config.heatmaps.fractions},
        "max_shard_mb": config.heatmaps.max_shard_mb,
        "examples": sum(s["examples"] for s in splits.values()),
        "splits": splits,
        "numeric_normalisation": normalisation,
        "inputs": inputs,
    }


def read_snapshot(spark, config: PipelineConfig, ds: dt.date, publisher: Publisher):
    uri = catalog.partition(config, "snapshots", ds)
    if not publisher.exists(f"{uri}/_SUCCESS"):
        raise HeatmapsError(f"no finished snapshot at {uri} (no _SUCCESS); run "
                            f"`metaprofile encode --ds {ds}` first")
    manifest = storage.read_json(f"{uri}/_manifest.json")
    if manifest.get("window_days") != config.window.days:
        raise HeatmapsError(
            f"{uri}/_manifest.json: window_days is {manifest.get('window_days')} but the "
            f"config's window.days is {config.window.days}; re-encode the snapshot")
    frame = spark.read.schema(spark_ddl(SNAPSHOT)).parquet(uri)
    return frame, uri, manifest


def read_table(spark, uri: str, contract, what: str, missing_ok: bool = False):
    """A side input (Parquet) in ``contract``'s columns and types, whatever types its files
    hold (an int64 label, integer ids; :mod:`jobs.typed_read`). With ``missing_ok``, no
    input at ``uri`` reads as an empty table."""
    if not storage.exists(uri):
        if missing_ok:
            log.info("%s: nothing at %s; read as empty", what, uri)
            return spark.createDataFrame([], spark_ddl(contract))
        raise HeatmapsError(f"{what}: nothing at {uri} (storage.{what} in the config)")
    try:
        return read_folder(spark, uri, contract, f"storage.{what}")
    except InputTypeError as exc:
        raise HeatmapsError(str(exc)) from None


def read_demographics(spark, config: PipelineConfig):
    """The demographics side input; a config that names no field needs no table."""
    frame = read_table(spark, config.storage.uri("demographics"), demographics_schema(config),
                       "demographics", missing_ok=not config.demographics.field_names)
    return without_erased(spark, frame, config, "demographics")


def run(spark, config: PipelineConfig, ds: dt.date, partitions: int | None = None) -> dict:
    """Write ``heatmaps/ds=<ds>`` (shards + manifest) and return the report."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    publisher = Publisher(spark)
    snapshot, snapshot_uri, snapshot_manifest = read_snapshot(spark, config, ds, publisher)
    demographics = read_demographics(spark, config)
    labels = without_erased(spark, read_table(
        spark, config.storage.uri("source_labels"), LABELS, "source_labels",
        missing_ok=not config.source_tasks), config, "source_labels")  # behaviour tasks: no file
    # The snapshot is pseudonymised; bring the side inputs along.
    demographics = pseudonymise_frame(demographics, config.pseudonymisation)
    labels = pseudonymise_frame(labels, config.pseudonymisation)

    demographic_rows = demographics_accounting(demographics, config)
    demographics = clean_demographics(demographics, config).persist(StorageLevel.MEMORY_AND_DISK)
    checked = label_problems(labels, config)
    valid = pivot_labels(checked.where(F.col("problem").isNull()), config).persist(
        StorageLevel.MEMORY_AND_DISK)
    frames = modality_frames(snapshot, config)
    examples = assemble_examples(frames, demographics.drop("_rows"), valid, config)
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    final = catalog.partition(config, "heatmaps", ds)
    staging = publisher.staging(final)
    try:
        log.info("writing heatmap shards for %s into %d partition(s)", ds, partitions)
        reports = [r.asDict() for r in (
            examples.repartition(partitions, "user_id").sortWithinPartitions("user_id")
            .mapInArrow(shard_writer(config, staging), SHARD_REPORT_DDL).collect())]
        inputs = label_and_user_accounting(checked, valid, examples, demographics, config)
        inputs["demographics"].update(demographic_rows)
        inputs.update({"snapshot": snapshot_uri,
                       "snapshot_modalities": snapshot_manifest.get("modalities", {}),
                       "pseudonymised": config.pseudonymisation.enabled})
        manifest = build_manifest(config, ds, reports, inputs)
        publisher.write_text(f"{staging}/{MANIFEST}", json.dumps(manifest, indent=2,
                                                                 sort_keys=True))
        publisher.publish(staging, final)
    finally:
        demographics.unpersist()
        valid.unpersist()
        publisher.cleanup()
    seconds = time.perf_counter() - started
    return {"ds": ds.isoformat(), "heatmaps": final, "examples": manifest["examples"],
            "splits": {s: v["examples"] for s, v in manifest["splits"].items()},
            "shards": sum(len(v["shards"]) for v in manifest["splits"].values()),
            "bytes": sum(v["bytes"] for v in manifest["splits"].values()),
            "labels": inputs["labels"], "seconds": round(seconds, 2),
            "examples_per_second": round(manifest["examples"] / seconds, 1)}


def label_and_user_accounting(checked, valid, examples, demographics,
                              config: PipelineConfig) -> dict:
    """Counts that explain every label row and every demographics row."""
    from pyspark.sql import functions as F

    problems = {r["problem"] or "used": r["n"] for r in
                checked.groupBy("problem").agg(F.count(F.lit(1)).alias("n")).collect()}
    conflicts = (valid.agg(*[F.sum(f"conflict__{t.name}").alias(t.name)
                             for t in config.source_tasks]).first()
                 if config.source_tasks else {})  # behaviour tasks only: no label columns
    orphans = valid.join(examples.select("user_id"), on="user_id", how="left_anti").count()
    duplicates = demographics.where(F.col("_rows") > 1).count()
    return {
        "labels": {"rows": sum(problems.values()),
                   "rows_by_problem": dict(sorted(problems.items())),
                   "conflicting": {t.name: int(conflicts[t.name] or 0)
                                   for t in config.source_tasks},
                   "labelled_users_without_data": orphans},
        "demographics": {"users": demographics.count(),
                         "users_with_duplicate_rows": duplicates},
    }


# --------------------------------------------------------------------------- entry point


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=None,
                        help="writer tasks; each writes at least one shard per split it sees "
                             "(default: spark.sql.shuffle.partitions)")


JOB = Job(
    name="heatmaps", arguments=_arguments,
    run=lambda job: run(job.spark, job.config, job.ds, partitions=job.args.partitions),
    description="Join the snapshot of --ds with the demographics and the source-task labels "
                "into one TFRecord example per user: GZIP shards of bounded size under "
                "heatmaps/ds=<ds>, split train/validation/test by hashed user id, with a "
                "_manifest.json of the feature spec, counts and checksums.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
