"""Embed users outside the tf.data pipeline: Arrow rows → dense batch → g_θ → embeddings.

The nightly job (``jobs/embed.py``) runs this inside Spark executors, one Arrow batch at a
time. A row carries what a heatmap example carries, as columns: ``user_id``, per modality
``<m>__index`` (flat ``(day*24+hour)*C+channel``) and ``<m>__value`` lists, the numeric
demographics as doubles (null = missing) and the categorical ones as strings. Densifying here
applies exactly the transforms of ``model/inputs.py`` (the same value transform, the
training split's numeric statistics, id 0 for a missing or unknown category), so a user gets
the same embedding from either path; a test holds the two paths together.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.features import densify, standardise, transform_values
from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import column_index_key, column_value_key, heatmap_key


def sparse_cells(index: pa.ListArray, values: pa.ListArray, transform: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One modality's list columns → the row of each cell, its flat index and its
    transformed float32 value."""
    flat = index.flatten().to_numpy(zero_copy_only=False)
    owners = pc.list_parent_indices(index).to_numpy(zero_copy_only=False)
    stored = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return owners, flat, transform_values(stored, transform)


def densify_column(index: pa.ListArray, values: pa.ListArray, shape: tuple[int, int, int],
                   transform: str) -> np.ndarray:
    """One modality of a batch: list columns of flat cells → ``[B, D, 24, C]`` float32."""
    owners, flat, transformed = sparse_cells(index, values, transform)
    return densify(owners, flat, transformed, len(index), shape)


def _columns(batch: pa.RecordBatch | pa.Table) -> dict[str, pa.Array]:
    columns = {name: batch.column(batch.schema.get_field_index(name))
               for name in batch.schema.names}
    return {name: column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            for name, column in columns.items()}


def cell_totals(batch: pa.RecordBatch | pa.Table, spec: InputSpec, transform: str
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per heatmap key, the rows' channel and hour-of-day totals, summed from the sparse
    cells (``model.baselines.sparse_heatmap_totals``): what ``aggregate_features`` would sum
    from the dense heatmaps, at a fraction of the cost (measured in bench/bench_lookalike.py's
    embed part)."""
    from model.baselines import sparse_heatmap_totals

    columns = _columns(batch)
    return {heatmap_key(name): sparse_heatmap_totals(
                *sparse_cells(columns[column_index_key(name)], columns[column_value_key(name)],
                              transform), batch.num_rows, spec.heatmap_shape(name))
            for name, _ in spec.modalities}


def dense_batch(batch: pa.RecordBatch | pa.Table, spec: InputSpec, transform: str,
                normalisation: dict, vocabularies: dict[str, list[str]]) -> dict:
    """The schemas/input_spec.py batch dict (features only) for the rows of ``batch``."""
    columns = _columns(batch)
    out = {}
    for name, _ in spec.modalities:
        out[heatmap_key(name)] = densify_column(columns[column_index_key(name)],
                                                columns[column_value_key(name)],
                                                spec.heatmap_shape(name), transform)
    rows = batch.num_rows
    if spec.numeric:
        raw = np.stack([columns[n].to_numpy(zero_copy_only=False).astype(np.float64)
                        for n in spec.numeric], axis=1)  # [B, F]; nulls become NaN
        means = np.array([normalisation.get(n, {}).get("mean", 0.0) for n in spec.numeric])
        stds = np.array([normalisation.get(n, {}).get("std", 1.0) for n in spec.numeric])
        out["demo/numeric"], out["demo/numeric_missing"] = standardise(raw, means, stds)
    else:
        out["demo/numeric"] = np.zeros((rows, 0), np.float32)
        out["demo/numeric_missing"] = np.zeros((rows, 0), np.float32)
    for name, size in spec.categorical:
        vocabulary = vocabularies[name]
        if len(vocabulary) != size:
            raise ValueError(f"demographics.categorical.{name}: {len(vocabulary)} values, the "
                             f"model expects {size}")
        position = pc.index_in(columns[name], value_set=pa.array(vocabulary, pa.string()))
        out[f"demo/{name}"] = (pc.fill_null(position, -1).to_numpy(zero_copy_only=False)
                               .astype(np.int32) + 1)  # [B]: 0 for missing or unknown
    return out


# --------------------------------------------------------------------------- executor side

_WORKERS: dict[str, "EmbeddingWorker"] = {}


class EmbeddingWorker:
    """A loaded model and the transforms of its training data, for one Python process."""

    def __init__(self, artifact, spec: InputSpec, transform: str,
                 vocabularies: dict[str, list[str]], normalisation: dict):
        self.artifact = artifact
        self.version = artifact.version
        self.spec = spec
        self.transform = transform
        self.vocabularies = vocabularies
        self.normalisation = normalisation
        self._profile = None

    def profile(self, inputs: dict) -> np.ndarray:
        """g_θ on one dense batch, through a ``tf.function`` traced once per worker instead of
        an eager Keras call per batch (measured level with ``predict_on_batch``)."""
        if self._profile is None:
            import tensorflow as tf

            model = self.artifact.model.profile
            self._profile = tf.function(lambda x: model(x, training=False),
                                        reduce_retracing=True)
        return self._profile(inputs).numpy()

    def embed(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """g_θ's embeddings ``[B, E]`` and the aggregate features ``[B, F]`` of the rows
        (``model.baselines.aggregate_features``, which the probe head reads beside them; its
        heatmap totals come from the sparse cells)."""
        from model.baselines import aggregate_features
        from model.network import select_inputs
        dense = dense_batch(batch, self.spec, self.transform, self.normalisation,
                            self.vocabularies)
        vectors = self.profile(select_inputs(dense, self.spec))  # [B, E]
        totals = cell_totals(batch, self.spec, self.transform)  # not from the dense heatmaps
        return vectors, aggregate_features(dense, self.spec, totals).astype(np.float32)


def load_worker(model_path: str, spec: dict, transform: str,
                vocabularies: dict[str, list[str]], normalisation: dict) -> EmbeddingWorker:
    """The worker for ``model_path``, loaded once per process and kept."""
    if model_path not in _WORKERS:
        from model.artifact import load_artifact
        input_spec = InputSpec.from_dict(spec)
        _WORKERS[model_path] = EmbeddingWorker(load_artifact(model_path, input_spec),
                                               input_spec, transform, vocabularies,
                                               normalisation)
    return _WORKERS[model_path]
