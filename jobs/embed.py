"""Embed every user of a snapshot with the published model's profile network g_θ.

    spark-submit --master 'local[*]' jobs/embed.py --config conf/synthetic.yaml --ds 2026-06-30
    metaprofile embed --config conf/synthetic.yaml --ds 2026-06-30 --model .work/models/20260630T021500Z
    metaprofile embed --config conf/synthetic.yaml --engine tf     # a GPU host: the TF input pipeline

**Spark engine (default).** The users are the heatmaps job's: everyone in the snapshot or the
demographics, joined the same way (``jobs/heatmaps.py``). Executors receive Arrow batches
through ``mapInArrow``, load the model once per Python worker, densify the sparse cells in
the worker (``model/embedding.py``: same transforms as the input pipeline; the aggregate
features' totals come from the sparse cells, not the dense heatmaps) and run g_θ. Each task
prints one progress line when it finishes (its users, seconds and users/s) on the worker's
stderr.

**TF engine.** Reads the heatmap TFRecords of the same ``ds`` through ``model/inputs.py``
(every split) and embeds with the same model, for a GPU host; the output is the same table.

**Output.** ``embeddings/ds=<ds>/``: Parquet with ``user_id``, ``embedding`` (float32 list),
``features`` (the user's aggregate features, float32, in the order of the manifest's
``features`` names: ``model/baselines.py``; the campaigns' probe heads read them beside the
embedding) and ``model_version``, plus ``_manifest.json`` (model path and version, users,
dimension, feature names).
Staged and renamed into place with ``_SUCCESS``; a rerun replaces it.

The model is the one ``--model`` names, else the published one (``models/published.json``,
written by ``metaprofile publish``). It is checked against the config: a model built for
another window, channel set or demographics is refused with the differing fields named.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from typing import Iterator, Sequence

if __package__ in (None, ""):  # spark-submit jobs/embed.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import catalog, registry, storage
from common.errors import PipelineError
from common.privacy import pseudonymise_frame
from common.publish import Publisher
from jobs import runner
from jobs.heatmaps import (
    assemble_examples,
    clean_demographics,
    modality_frames,
    read_demographics,
    read_snapshot,
)
from jobs.runner import Job, JobContext
from schemas.config import PipelineConfig
from schemas.contracts import EMBEDDINGS, spark_ddl
from schemas.manifests import MANIFEST, EmbeddingsManifest

log = logging.getLogger("metaprofile.embed")

EMBEDDINGS_DDL = spark_ddl(EMBEDDINGS, nullable=True)


class EmbedError(PipelineError):
    """A run that must not publish (no model, a model for other inputs, no snapshot)."""


def embedding_inputs(spark, config: PipelineConfig, ds: dt.date, publisher: Publisher):
    """One row per user with the heatmap columns and demographics (no labels)."""
    snapshot, _, _ = read_snapshot(spark, config, ds, publisher)
    demographics = pseudonymise_frame(read_demographics(spark, config), config.pseudonymisation)
    demographics = clean_demographics(demographics, config).drop("_rows")
    return assemble_examples(modality_frames(snapshot, config), demographics, None, config)


def embed_batches(model_path: str, config: PipelineConfig, normalisation: dict,
                  batch_rows: int):
    """The ``mapInArrow`` function: Arrow rows → (user_id, embedding, features,
    model_version).

    The model is loaded by ``model.embedding.load_worker``, which keeps it for the life of
    the Python worker, so each worker loads it once, not once per task or batch.
    """
    from schemas.input_spec import InputSpec
    spec = InputSpec.from_config(config).to_dict()
    vocabularies = {c.name: list(c.vocabulary) for c in config.demographics.categorical}
    transform = config.value_transform

    def apply(batches: Iterator) -> Iterator:
        if "tfrecord" in sys.modules:
            raise RuntimeError(
                "this Spark Python worker has imported the tfrecord package (a heatmaps task "
                "of the same application?), and TensorFlow cannot share a process with it: "
                "run embed as its own application, or set spark.python.worker.reuse=false")
        import pyarrow as pa

        from model.embedding import load_worker
        began = time.perf_counter()
        limit_tf_threads()
        worker = load_worker(model_path, spec, transform, vocabularies, normalisation)
        users = 0
        for batch in batches:
            for start in range(0, batch.num_rows, batch_rows):
                chunk = batch.slice(start, batch_rows)
                vectors, features = worker.embed(chunk)  # [b, E], [b, F]
                users += chunk.num_rows
                yield pa.RecordBatch.from_arrays(
                    [chunk.column(chunk.schema.get_field_index("user_id")),
                     float_lists(vectors), float_lists(features),
                     pa.repeat(pa.scalar(worker.version, pa.string()), chunk.num_rows)],
                    names=["user_id", "embedding", "features", "model_version"])
        report_task(users, time.perf_counter() - began)

    return apply


def report_task(users: int, seconds: float) -> None:
    """One progress line per finished task on the worker's stderr (the driver's console on
    ``local[*]``, the executor's log on a cluster): a long embedding shows it is moving."""
    from pyspark import TaskContext

    context = TaskContext.get()
    task = f"partition {context.partitionId()}" if context is not None else "batches"
    print(f"metaprofile embed: {task}: {users:,} users embedded in {seconds:.1f} s "
          f"({users / max(seconds, 1e-9):,.0f} users/s)", file=sys.stderr, flush=True)


def limit_tf_threads() -> None:
    """Give TensorFlow in this Python worker the task's cores (``spark.task.cpus``, default
    1), not every core of the machine: Spark already runs a task per core, and each TF
    runtime sizing its pools to the whole machine oversubscribes it. Only possible before
    TF's runtime starts in the process; later calls leave it as it is."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return
    import tensorflow as tf

    threads = max(1, int(context.cpus()))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime is already up (a reused worker): keep its pools
        pass


def float_lists(rows):
    """A ``[B, D]`` array as an Arrow list<float32> column, without a Python object per row."""
    import numpy as np
    import pyarrow as pa

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * rows.shape[1])
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1)))


def resolve_model(config: PipelineConfig, model: str | None) -> str:
    if model:
        return model
    try:
        return registry.published_model(config)["path"]
    except registry.RegistryError as exc:
        raise EmbedError(str(exc)) from None


def run(spark, config: PipelineConfig, ds: dt.date, model: str | None = None,
        partitions: int | None = None, batch_rows: int = 256) -> dict:
    """Write ``embeddings/ds=<ds>`` with the Spark engine; return the report."""
    from pyspark.sql import functions as F

    from model.baselines import aggregate_feature_names
    from schemas.input_spec import InputSpec

    started = time.perf_counter()
    publisher = Publisher(spark)
    model_path = resolve_model(config, model)
    info = registry.describe_model(model_path, config)  # refuses a mismatched model early
    rows = embedding_inputs(spark, config, ds, publisher)
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    embedded = (rows.repartition(partitions, "user_id")
                .mapInArrow(embed_batches(model_path, config, info["normalisation"], batch_rows),
                            EMBEDDINGS_DDL))
    final = catalog.partition(config, "embeddings", ds)
    staging = publisher.staging(final)
    try:
        log.info("embedding the users of %s with model %s in %d Spark tasks (each logs "
                 "its users when it finishes)", ds, info["version"], partitions)
        embedded.sortWithinPartitions("user_id").write.mode("overwrite").parquet(staging)
        users = spark.read.parquet(staging).select(F.count(F.lit(1)).alias("n")).first()["n"]
        manifest = EmbeddingsManifest(
            ds=ds.isoformat(), engine="spark", model=model_path, model_version=info["version"],
            users=users, embedding_dim=info["embedding_dim"],
            features=tuple(aggregate_feature_names(InputSpec.from_config(config))))
        publisher.write_text(f"{staging}/{MANIFEST}", manifest.to_json())
        publisher.publish(staging, final)
    finally:
        publisher.cleanup()
    seconds = time.perf_counter() - started
    return {**manifest.to_dict(), "embeddings": final, "seconds": round(seconds, 2),
            "users_per_second": round(users / seconds, 1)}


def run_tf(config: PipelineConfig, ds: dt.date, model: str | None = None,
           batch_size: int = 256) -> dict:
    """Write the same table from the heatmap TFRecords with the TF input pipeline."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model.artifact import load_artifact
    from model.baselines import aggregate_feature_names, aggregate_features
    from model.inputs import check_manifest, make_dataset, read_manifest
    from model.network import select_inputs
    from schemas.input_spec import InputSpec

    started = time.perf_counter()
    model_path = resolve_model(config, model)
    heatmaps = catalog.partition(config, "heatmaps", ds)
    manifest = read_manifest(heatmaps)
    check_manifest(manifest, config)
    spec = InputSpec.from_config(config)
    artifact = load_artifact(model_path, spec)
    normalisation = registry.describe_model(model_path, config)["normalisation"]
    manifest = {**manifest, "numeric_normalisation": normalisation}  # the model's scale
    tables = []
    for split in manifest["splits"]:
        if not manifest["splits"][split]["shards"]:
            continue
        for batch in make_dataset(heatmaps, split, spec, batch_size, shuffle=False,
                                  repeat=False, manifest=manifest,
                                  value_transform=config.value_transform):
            vectors = artifact.model.profile(select_inputs(batch, spec), training=False).numpy()
            features = aggregate_features({k: v.numpy() for k, v in batch.items()}, spec)
            tables.append(pa.table({
                "user_id": pa.array([u.decode() for u in batch["user_id"].numpy()]),
                "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
                "features": pa.array(list(features.astype(np.float32)),
                                     pa.list_(pa.float32())),
                "model_version": pa.array([artifact.version] * len(vectors))}))
    table = pa.concat_tables(tables).sort_by("user_id").cast(EMBEDDINGS)
    final = catalog.partition(config, "embeddings", ds)
    document = EmbeddingsManifest(
        ds=ds.isoformat(), engine="tf", model=model_path, model_version=artifact.version,
        users=table.num_rows, embedding_dim=artifact.model_config.embedding_dim,
        features=tuple(aggregate_feature_names(spec)))
    with Publisher().staged(final) as directory:
        fs, path = storage.resolve(storage.join(directory, "part-00000.parquet"))
        pq.write_table(table, path, filesystem=fs)
        storage.write_bytes(document.to_json().encode(), storage.join(directory, MANIFEST))
    seconds = time.perf_counter() - started
    return {**document.to_dict(), "embeddings": final, "seconds": round(seconds, 2),
            "users_per_second": round(table.num_rows / seconds, 1)}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model artifact directory (default: the published model, "
                             "models/published.json)")
    parser.add_argument("--engine", choices=("spark", "tf"), default="spark",
                        help="spark: executors embed Arrow batches of the snapshot (default); "
                             "tf: the TF input pipeline over the heatmap TFRecords (GPU hosts)")
    parser.add_argument("--batch-rows", type=int, default=256,
                        help="users per model call inside an executor (default: %(default)s)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="Spark tasks (default: spark.sql.shuffle.partitions)")


def _run(job: JobContext) -> dict:
    args = job.args
    try:
        if args.engine == "tf":
            return run_tf(job.config, job.ds, args.model)
        return run(job.spark, job.config, job.ds, args.model, args.partitions, args.batch_rows)
    except ValueError as exc:  # a model artifact that does not fit the config
        raise EmbedError(str(exc)) from None


JOB = Job(
    name="embed", run=_run, arguments=_arguments,
    description="Embed every user of the snapshot of --ds with the model's profile network and "
                "write embeddings/ds=<ds> (user_id, embedding, model_version).")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
