"""Benchmark: heatmap TFRecords on disk, the Spark writer, and the tf.data input pipeline.

    ./run demo                                   # once: encodes both demo data sets
    .work/venv-jobs/bin/python bench/bench_heatmaps.py
    .work/venv-jobs/bin/python bench/bench_heatmaps.py --config synthetic --replicate 50

For each config (default: the synthetic and The Complete Journey demo configs, whose
snapshots ``./run demo`` writes), prints:

* the heatmaps job on Spark ``local[2]``: examples written per second;
* bytes per user on disk (only without ``--replicate``) (GZIP TFRecord) against a dense float32 ``365×24×C`` heatmap per
  user, and the ratio (target: at least 100× smaller);
* the input pipeline (read, parse, densify, shuffle) in examples per second over the
  training split, repeated;
* with ``--train`` (default on), the full Table 2 profile network's training examples per
  second on in-memory tensors of the same shape, and the ratio of the two (target: the
  pipeline at least 5× faster than training consumes it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402
from schemas.tfrecord_spec import heatmap_key

CONFIG_PATHS = {"synthetic": PROJECT_ROOT / "conf" / "synthetic.yaml",
                "completejourney": PROJECT_ROOT / "conf" / "completejourney.yaml"}


def spark_session():
    from jobs.spark import build_session
    return build_session("metaprofile-bench-heatmaps", master="local[2]")


def replicate(config, copies: int):
    """A config whose snapshot, demographics and labels hold ``copies`` renamed copies of
    every user of ``config``'s, so the writer can be timed at scale without re-encoding."""
    from pyspark.sql import functions as F

    from schemas.config import load_config
    root = PROJECT_ROOT / ".work" / "bench" / f"heatmaps-{config.name}-x{copies}"
    scaled = load_config(CONFIG_PATHS[config.name], overrides=[f"storage.root={root}"])
    spark = spark_session()
    ds = config.window.end.isoformat()
    copy = spark.range(copies).withColumnRenamed("id", "copy")

    def renamed(frame):
        return (frame.crossJoin(copy)
                .withColumn("user_id", F.concat("user_id", F.lit("~"), F.col("copy")))
                .drop("copy"))

    marker = root / "snapshots" / f"ds={ds}" / "_SUCCESS"
    if not marker.exists():
        for key in ("demographics", "source_labels"):
            renamed(spark.read.parquet(config.storage.uri(key))).write.mode("overwrite") \
                .parquet(scaled.storage.uri(key))
        source = f"{config.storage.uri('snapshots')}/ds={ds}"
        target = f"{scaled.storage.uri('snapshots')}/ds={ds}"
        renamed(spark.read.parquet(source)).write.mode("overwrite").parquet(target)
        (Path(target) / "_manifest.json").write_bytes(Path(source, "_manifest.json").read_bytes())
        marker.touch()
    return scaled


def write_heatmaps(config) -> dict:
    from jobs import heatmaps
    return heatmaps.run(spark_session(), config, config.window.end)


def dense_bytes_per_user(config) -> int:
    return config.window.days * 24 * sum(m.num_channels for m in config.modalities) * 4


def pipeline_rate(config, batch_size: int, batches: int) -> float:
    from model.inputs import make_dataset
    from schemas.input_spec import InputSpec
    uri = f"{config.storage.uri('heatmaps')}/ds={config.window.end}"
    ds = make_dataset(uri, "train", InputSpec.from_config(config), batch_size,
                      shuffle=True, repeat=True, seed=1)
    iterator = iter(ds)
    next(iterator)  # warm-up: builds the graph and fills the prefetch buffer
    started = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    batch["labels"].numpy()
    return batches * batch_size / (time.perf_counter() - started)


def training_rate(config, batch_size: int, steps: int) -> float | None:
    """Full-size profile network + a linear head, trained on in-memory tensors."""
    try:
        from model.network import build_profile_network
        from model.settings import ModelConfig
    except ImportError:
        return None
    import keras
    import numpy as np
    import tensorflow as tf

    from schemas.input_spec import InputSpec
    spec = InputSpec.from_config(config)
    net = build_profile_network(spec, ModelConfig())
    rng = np.random.default_rng(0)
    batch = {heatmap_key(name): tf.constant(
        rng.random((batch_size, spec.days, 24, channels), np.float32))
        for name, channels in spec.modalities}
    batch["demo/numeric"] = tf.zeros((batch_size, len(spec.numeric)))
    batch["demo/numeric_missing"] = tf.zeros((batch_size, len(spec.numeric)))
    for name, _ in spec.categorical:
        batch[f"demo/{name}"] = tf.ones((batch_size,), tf.int32)
    head = keras.layers.Dense(len(spec.tasks))
    optimizer = keras.optimizers.Adam(1e-3)
    target = tf.zeros((batch_size, len(spec.tasks)))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = head(net(batch, training=True))
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(target, logits))
        variables = net.trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    step()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    return steps * batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", choices=sorted(CONFIG_PATHS),
                        default=None, help="demo data set (repeatable; default: both)")
    parser.add_argument("--replicate", type=int, default=1,
                        help="time the writer on this many renamed copies of every user "
                             "(e.g. 50 turns the 2,000 synthetic demo users into 100,000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="pipeline batches to time")
    parser.add_argument("--train-steps", type=int, default=5,
                        help="full-model training steps to time (0: skip)")
    args = parser.parse_args(argv)
    configure_environment()
    from schemas.config import load_config

    for name in args.config or CONFIG_PATHS:
        config = load_config(CONFIG_PATHS[name])
        if args.replicate > 1:
            config = replicate(config, args.replicate)
        report = write_heatmaps(config)
        per_user = report["bytes"] / max(report["examples"], 1)
        dense = dense_bytes_per_user(config)
        print(f"[{config.name}] heatmaps job (Spark local[2]): {report['examples']:,} examples in "
              f"{report['seconds']:.1f} s = {report['examples_per_second']:,.0f} examples/s, "
              f"{report['shards']} shards")
        if args.replicate == 1:  # copies of the same user compress too well to count
            print(f"[{config.name}] on disk: {per_user:,.0f} bytes/user (GZIP TFRecord) vs "
                  f"{dense:,} bytes/user dense float32 = {dense / per_user:,.0f}x smaller")
        rate = pipeline_rate(config, args.batch_size, args.batches)
        print(f"[{config.name}] input pipeline (read, parse, densify): {rate:,.0f} examples/s "
              f"at batch {args.batch_size}")
        if args.train_steps:
            train = training_rate(config, args.batch_size, args.train_steps)
            if train is None:
                print(f"[{config.name}] training rate: model.network not available")
            else:
                print(f"[{config.name}] full Table 2 model training on in-memory tensors: "
                      f"{train:,.1f} examples/s; the pipeline is {rate / train:,.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
