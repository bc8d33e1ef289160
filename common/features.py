"""What the model sees of a user, computed once per form: the value transform, densification
of the sparse heatmap cells, and the standardisation of numeric demographics.

Each step has a numpy form (the Spark embedding executors, the evaluation's user store, the
classic baselines) and a TensorFlow form (the training input pipeline), side by side here so
that they cannot drift. ``tests/test_plumbing.py`` checks that the two forms agree, and
``tests/test_lookalike.py`` that the Spark and TensorFlow embedding engines do.
TensorFlow is imported only inside the ``*_tf`` functions, so the Spark side never loads it.
"""
from __future__ import annotations

import numpy as np

VALUE_TRANSFORMS = ("none", "log1p")


def _check_transform(transform: str | None) -> None:
    if transform not in (*VALUE_TRANSFORMS, None):
        raise ValueError(f"value_transform {transform!r} is not one of log1p, none")


# --------------------------------------------------------------------------- value transform


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x)·log1p(|x|)``: log1p that keeps the sign of a net cancellation."""
    return np.sign(x) * np.log1p(np.abs(x))


def transform_values(values: np.ndarray, transform: str | None) -> np.ndarray:
    _check_transform(transform)
    return signed_log1p(values) if transform == "log1p" else values


def transform_values_tf(values, transform: str | None):
    import tensorflow as tf

    _check_transform(transform)
    return tf.sign(values) * tf.math.log1p(tf.abs(values)) if transform == "log1p" else values


# --------------------------------------------------------------------------- densify


def densify(owners: np.ndarray, cells: np.ndarray, values: np.ndarray, rows: int,
            shape: tuple[int, int, int], unique: bool = False) -> np.ndarray:
    """Sparse flat cells → dense ``[rows, D, 24, C]`` float32.

    ``owners[i]`` is the row of cell ``i``, ``cells[i]`` its flat index
    ``(day·24 + hour)·C + channel`` and ``values[i]`` its (already transformed) value.
    Repeated cells add up, as in the TensorFlow form; ``unique=True`` promises that none
    repeats (a store built from dense rows) and takes the faster plain assignment (about 3×
    ``np.add.at``). Cells in strictly increasing (row, index) order, as a snapshot stores
    them, cannot repeat either, and take it too.
    """
    size = shape[0] * shape[1] * shape[2]
    dense = np.zeros((rows, size), np.float32)  # [rows, D*24*C]
    if len(cells):
        if cells.min() < 0 or cells.max() >= size:
            bad = int(cells[(cells < 0) | (cells >= size)][0])
            raise ValueError(f"heatmap index {bad} is outside 0..{size - 1} for shape {shape}")
        if not unique:
            keys = np.asarray(owners, np.int64) * size + cells  # [nnz]
            unique = bool((keys[1:] > keys[:-1]).all())
        if unique:
            dense[owners, cells] = values
        else:
            np.add.at(dense, (owners, cells), values.astype(np.float32))
    return dense.reshape(rows, *shape)


def densify_tf(index, values, shape: tuple[int, int, int], transform: str | None):
    """A batch's sparse cells (``tf.SparseTensor`` of flat indices and of values) → dense
    ``[B, D, 24, C]``, after the value transform. ``scatter_nd`` adds repeated indices and
    needs no ordering, so it is exact for any writer."""
    import tensorflow as tf

    size = shape[0] * shape[1] * shape[2]
    rows = index.indices[:, 0]  # [nnz] example of each stored cell
    flat = tf.stack([rows, index.values], axis=1)  # [nnz, 2]
    batch = index.dense_shape[0]
    dense = tf.scatter_nd(flat, transform_values_tf(values.values, transform),
                          tf.stack([batch, tf.constant(size, tf.int64)]))  # [B, D*24*C]
    return tf.reshape(dense, (-1, *shape))  # [B, D, 24, C]


# --------------------------------------------------------------------------- standardise


def standardise(raw: np.ndarray, means, stds) -> tuple[np.ndarray, np.ndarray]:
    """Numeric demographics ``[B, F]`` (NaN = missing) → (standardised with 0 where missing,
    missing flags), both float32."""
    missing = np.isnan(raw)
    values = np.where(missing, 0.0, (raw - np.asarray(means)) / np.asarray(stds))
    return values.astype(np.float32), missing.astype(np.float32)


def standardise_tf(raw, means, stds):
    import tensorflow as tf

    missing = tf.math.is_nan(raw)
    standard = (raw - means) / stds
    return tf.where(missing, tf.zeros_like(raw), standard), tf.cast(missing, tf.float32)
