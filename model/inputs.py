"""The tf.data input pipeline: heatmap TFRecord shards → dense batches (see schemas/input_spec.py).

    manifest = read_manifest(uri)                # refuses an unfinished or foreign directory
    check_manifest(manifest, config)             # refuses a spec that differs from the model's
    ds = make_dataset(uri, "train", spec, 32, shuffle=True, repeat=True, seed=7)

The file list comes from the manifest, never from a directory listing, so stray files of a
failed task attempt are never read. Before reading, every shard is checked against the
manifest's size and SHA-256; a missing, truncated or altered shard fails with an error naming
the file. TFRecord CRC checks stay on while reading as well.

Heatmaps stay sparse until the last step: whole batches are parsed with
``tf.io.parse_example`` after ``batch`` and scattered into dense ``[B, D, 24, C]`` tensors,
after applying the configured value transform to the stored values. ``log1p`` is applied
sign-preserving (``sign(x)·log1p(|x|)``), because net cancellations can make a cell negative.
"""
from __future__ import annotations

import hashlib
import json

import tensorflow as tf

from common import storage
from common.features import densify_tf, standardise_tf
from schemas.config import PipelineConfig
from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import (
    heatmap_key,
    record_index_key,
    record_value_key,
    spec_differences,
    spec_document,
)

MANIFEST = "_manifest.json"
AUTOTUNE = tf.data.AUTOTUNE


class ManifestError(ValueError):
    """The heatmap directory cannot be used: unfinished, another spec, or a bad shard."""


# --------------------------------------------------------------------------- manifest


def read_manifest(uri: str) -> dict:
    """The manifest of a finished heatmap directory, plus its own ``sha256``."""
    uri = uri.rstrip("/")
    if not storage.exists(storage.join(uri, storage.SUCCESS)):
        raise ManifestError(f"{uri}: no _SUCCESS marker; the heatmaps job has not finished "
                            f"writing this directory (run `metaprofile heatmaps`)")
    raw = storage.read_bytes(storage.join(uri, MANIFEST))
    manifest = json.loads(raw)
    manifest["sha256"] = hashlib.sha256(raw).hexdigest()
    manifest["uri"] = uri
    return manifest


def check_manifest(manifest: dict, config: PipelineConfig) -> None:
    """Refuse heatmaps written with a feature spec other than the one ``config`` implies."""
    differences = spec_differences(spec_document(config), manifest.get("spec", {}))
    if differences:
        listed = "\n  - ".join(differences[:20])
        raise ManifestError(f"{manifest.get('uri', '<heatmaps>')}/{MANIFEST}: the feature "
                            f"spec differs from the config's:\n  - {listed}")


def shard_uris(manifest: dict, split: str) -> list[str]:
    if split not in manifest["splits"]:
        raise ManifestError(f"{manifest['uri']}/{MANIFEST}: no split {split!r}; has "
                            f"{sorted(manifest['splits'])}")
    return [storage.join(manifest["uri"], s["path"]) for s in manifest["splits"][split]["shards"]]


def verify_shards(manifest: dict, split: str) -> None:
    """Check each shard of ``split`` against the manifest's byte count and SHA-256."""
    for shard in manifest["splits"][split]["shards"]:
        uri = storage.join(manifest["uri"], shard["path"])
        if not storage.exists(uri):
            raise ManifestError(f"{uri}: shard listed in the manifest is missing")
        fs, path = storage.resolve(uri)
        digest, size = hashlib.sha256(), 0
        with fs.open_input_stream(path, compression=None) as src:  # the bytes as stored
            while chunk := src.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
        if size != shard["bytes"]:
            raise ManifestError(f"{uri}: {size} bytes, the manifest says {shard['bytes']} "
                                f"(truncated or replaced shard); rerun the heatmaps job")
        if digest.hexdigest() != shard["sha256"]:
            raise ManifestError(f"{uri}: SHA-256 differs from the manifest (corrupt shard); "
                                f"rerun the heatmaps job")


# --------------------------------------------------------------------------- parsing


def feature_description(spec: InputSpec) -> dict:
    """``tf.io.parse_example`` features for the stored example (schemas/tfrecord_spec.py)."""
    features = {"user_id": tf.io.FixedLenFeature([], tf.string)}
    for name, _ in spec.modalities:
        features[record_index_key(name)] = tf.io.VarLenFeature(tf.int64)
        features[record_value_key(name)] = tf.io.VarLenFeature(tf.float32)
    for name in spec.numeric:
        features[f"demo/{name}"] = tf.io.FixedLenFeature([], tf.float32)
    for name, _ in spec.categorical:
        features[f"demo/{name}"] = tf.io.FixedLenFeature([], tf.string)
    for task in spec.tasks:
        features[f"label/{task}"] = tf.io.FixedLenFeature([], tf.int64)
        features[f"mask/{task}"] = tf.io.FixedLenFeature([], tf.int64)
    return features


def make_parser(spec: InputSpec, manifest: dict, transform: str):
    """A function from a batch of serialized examples to the batch dict of schemas/input_spec.py."""
    features = feature_description(spec)
    stats = manifest.get("numeric_normalisation", {})
    # Statistics of the training split, so validation and scoring use the same scale.
    means = [float(stats.get(n, {}).get("mean", 0.0)) for n in spec.numeric]
    stds = [float(stats.get(n, {}).get("std", 1.0)) for n in spec.numeric]
    vocabularies = manifest["spec"]["demographics"]["categorical"]
    tables = {}
    for name, size in spec.categorical:
        vocabulary = vocabularies[name]
        if len(vocabulary) != size:
            raise ManifestError(f"demographics.categorical.{name}: {len(vocabulary)} values in "
                                f"the manifest, the model expects {size}")
        tables[name] = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary, tf.string),
                tf.range(1, len(vocabulary) + 1, dtype=tf.int32)),
            default_value=0)  # 0: missing or not in the vocabulary

    def parse(serialized: tf.Tensor) -> dict:
        parsed = tf.io.parse_example(serialized, features)
        batch = {"user_id": parsed["user_id"]}
        for name, _ in spec.modalities:
            batch[heatmap_key(name)] = densify_tf(parsed[record_index_key(name)],
                                                  parsed[record_value_key(name)],
                                                  spec.heatmap_shape(name), transform)
        if spec.numeric:
            raw = tf.stack([parsed[f"demo/{n}"] for n in spec.numeric], axis=1)  # [B, F]
            batch["demo/numeric"], batch["demo/numeric_missing"] = standardise_tf(
                raw, means, stds)
        else:
            size = tf.shape(parsed["user_id"])[0]
            batch["demo/numeric"] = tf.zeros([size, 0], tf.float32)
            batch["demo/numeric_missing"] = tf.zeros([size, 0], tf.float32)
        for name, _ in spec.categorical:
            batch[f"demo/{name}"] = tables[name].lookup(parsed[f"demo/{name}"])  # [B]
        if spec.tasks:
            labels = [parsed[f"label/{t}"] for t in spec.tasks]
            masks = [parsed[f"mask/{t}"] for t in spec.tasks]
            batch["labels"] = tf.cast(tf.stack(labels, axis=1), tf.float32)  # [B, T]
            batch["mask"] = tf.cast(tf.stack(masks, axis=1), tf.float32)  # [B, T]
        else:  # no survey tasks: behaviour tasks (model/behaviour.py) add the columns
            size = tf.shape(parsed["user_id"])[0]
            batch["labels"] = tf.zeros([size, 0], tf.float32)
            batch["mask"] = tf.zeros([size, 0], tf.float32)
        return batch

    return parse


def make_dataset(heatmaps_uri: str, split: str, spec: InputSpec, batch_size: int, *,
                 shuffle: bool, repeat: bool, seed: int = 0,
                 value_transform: str | None = None, verify: bool = True,
                 shuffle_buffer: int = 2048, manifest: dict | None = None) -> tf.data.Dataset:
    """Batches of ``split`` as dicts (schemas/input_spec.py), interleaved over the shards.

    ``value_transform`` defaults to the manifest's. With ``repeat`` the last partial batch is
    dropped so every step sees ``batch_size`` users; without it every user is yielded once.
    """
    manifest = manifest or read_manifest(heatmaps_uri)
    stored = manifest["spec"]
    if stored.get("window_days") != spec.days:
        raise ManifestError(f"{manifest['uri']}/{MANIFEST}: spec.window_days is "
                            f"{stored.get('window_days')}, the model expects {spec.days}")
    for name, channels in spec.modalities:
        have = len(stored.get("modalities", {}).get(name, []))
        if have != channels:
            raise ManifestError(f"{manifest['uri']}/{MANIFEST}: spec.modalities.{name} has "
                                f"{have} channels, the model expects {channels}")
    if list(stored.get("source_tasks", [])) != list(spec.tasks):
        raise ManifestError(f"{manifest['uri']}/{MANIFEST}: spec.source_tasks is "
                            f"{stored.get('source_tasks')}, the model expects {list(spec.tasks)}")
    files = shard_uris(manifest, split)
    if not files:
        raise ManifestError(f"{manifest['uri']}: split {split!r} has no shards (no users)")
    if verify:
        verify_shards(manifest, split)
    paths = [storage.local_path(f) if storage.is_local(f) else f for f in files]
    transform = value_transform or stored.get("value_transform", "none")

    ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(4, len(paths)), block_length=16,
        num_parallel_calls=AUTOTUNE, deterministic=True)  # same seed, same order
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=repeat)
    ds = ds.map(make_parser(spec, manifest, transform), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
