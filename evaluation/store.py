"""The users under test, held sparse (:class:`UserStore`), their target labels, and the tasks to
evaluate."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from common import storage
from common.features import densify
from evaluation.settings import EvalConfig
from model.baselines import aggregate_features
from schemas.config import PipelineConfig
from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import HEATMAP_PREFIX, heatmap_key

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- user store


class LazyRows:
    """Rows of one heatmap key of a :class:`UserStore`, densified only when indexed.

    Behaves like a ``[N, D, 24, C]`` float32 array for what the adaptation code does with a
    batch: ``len``, ``shape``, slicing, integer or boolean indexing, ``np.take(a, rows,
    axis=0)`` and ``np.asarray`` (which densifies every row: avoid it for large sets).
    """

    def __init__(self, store: "UserStore", key: str, rows: np.ndarray):
        self.store, self.key, self.rows = store, key, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.store.shapes[self.key])

    ndim = 4
    dtype = np.dtype(np.float32)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self.store.densify(self.key, self.rows[[item]])[0]
        if isinstance(item, tuple):
            raise IndexError("LazyRows supports indexing the user axis only")
        return self.store.densify(self.key, self.rows[item])

    def take(self, indices, axis=0, out=None, mode="raise"):
        if axis != 0 or out is not None:
            raise ValueError("LazyRows.take supports axis=0 without out only")
        return self[np.asarray(indices, dtype=np.int64)]

    def __array__(self, dtype=None, copy=None):
        dense = self.store.densify(self.key, self.rows)
        return dense if dtype is None else dense.astype(dtype)


class UserStore:
    """Every user's model features, held compactly: heatmaps as their non-zero cells (CSR by
    user), demographics dense. ``batch(rows)`` densifies rows exactly as the pipeline gave
    them (values already transformed); ``lazy(rows)`` defers that to indexing time."""

    def __init__(self, spec: InputSpec, feature_keys: Sequence[str]):
        self.spec = spec
        self.feature_keys = tuple(feature_keys)
        self.heatmap_keys = tuple(k for k in self.feature_keys if k.startswith(HEATMAP_PREFIX))
        self.shapes = {heatmap_key(name): spec.heatmap_shape(name) for name, _ in spec.modalities}
        self._ids: list[str] = []
        self._counts = {k: [] for k in self.heatmap_keys}
        self._cells = {k: [] for k in self.heatmap_keys}
        self._values = {k: [] for k in self.heatmap_keys}
        self._dense = {k: [] for k in self.feature_keys if k not in self.heatmap_keys}
        self.ids: np.ndarray | None = None
        self.offsets: dict[str, np.ndarray] = {}
        self.cells: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        self.dense: dict[str, np.ndarray] = {}
        self.row_of: dict[str, int] = {}
        # the source tasks' labels and masks [U, T] and each user's split, for the network's
        # source-task scores (model/task_scores.py)
        self._sources: list[tuple[np.ndarray, np.ndarray, str]] = []
        self.source_labels = self.source_mask = self.splits = None

    def add(self, batch: dict, split: str = "") -> None:
        """Append a numpy batch dict (schemas/input_spec.py keys) of ``split``."""
        ids = [u.decode() if isinstance(u, bytes) else str(u) for u in batch["user_id"]]
        self._ids += ids
        tasks = len(self.spec.tasks)
        self._sources.append((np.asarray(batch.get("labels", np.zeros((len(ids), tasks))),
                                         np.int8).reshape(len(ids), tasks),
                              np.asarray(batch.get("mask", np.zeros((len(ids), tasks))),
                                         np.int8).reshape(len(ids), tasks),
                              split))
        for key in self.heatmap_keys:
            flat = np.asarray(batch[key]).reshape(len(ids), -1)  # [B, D*24*C]
            rows, cells = np.nonzero(flat)
            self._counts[key].append(np.bincount(rows, minlength=len(ids)))
            self._cells[key].append(cells.astype(np.int32))
            self._values[key].append(flat[rows, cells].astype(np.float32))
        for key in self._dense:
            self._dense[key].append(np.asarray(batch[key]))

    def finish(self) -> "UserStore":
        self.ids = np.array(self._ids, dtype=object)
        if not len(self.ids):
            raise ValueError("no users were read")
        self.row_of = {u: i for i, u in enumerate(self._ids)}
        if len(self.row_of) != len(self._ids):
            raise ValueError(f"{len(self._ids) - len(self.row_of)} user id(s) occur in more "
                             "than one heatmap example")
        for key in self.heatmap_keys:
            self.offsets[key] = np.r_[0, np.cumsum(np.concatenate(self._counts[key]))]
            self.cells[key] = np.concatenate(self._cells[key])
            self.values[key] = np.concatenate(self._values[key])
        self.dense = {k: np.concatenate(v) for k, v in self._dense.items()}
        self.source_labels = np.concatenate([labels for labels, _, _ in self._sources])
        self.source_mask = np.concatenate([mask for _, mask, _ in self._sources])
        self.splits = np.concatenate([np.full(len(labels), split, dtype=object)
                                      for labels, _, split in self._sources])
        self._counts, self._cells, self._values, self._dense = {}, {}, {}, {}
        self._sources = []
        return self

    def __len__(self) -> int:
        return len(self._ids) if self.ids is None else len(self.ids)

    @property
    def nbytes(self) -> int:
        arrays = [*self.offsets.values(), *self.cells.values(), *self.values.values(),
                  *self.dense.values()]
        return int(sum(a.nbytes for a in arrays))

    def rows(self, user_ids: Iterable[str]) -> np.ndarray:
        return np.array([self.row_of[u] for u in user_ids], dtype=np.int64)

    def densify(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Dense ``[len(rows), D, 24, C]`` float32 heatmaps of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts, ends = self.offsets[key][rows], self.offsets[key][rows + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(rows)), lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = np.arange(int(lengths.sum())) - first + np.repeat(starts, lengths)
        return densify(owner, self.cells[key][positions], self.values[key][positions],
                       len(rows), self.shapes[key], unique=True)  # [N, D, 24, C]

    def batch(self, rows: np.ndarray) -> dict:
        """The dense feature batch of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = {k: self.densify(k, rows) for k in self.heatmap_keys}
        out.update({k: v[rows] for k, v in self.dense.items()})
        return out

    def lazy(self, rows: np.ndarray) -> dict:
        """A batch dict of ``rows`` whose heatmaps are densified on indexing."""
        rows = np.asarray(rows, dtype=np.int64)
        out = {k: LazyRows(self, k, rows) for k in self.heatmap_keys}
        out.update({k: v[rows] for k, v in self.dense.items()})
        return out


def embed_rows(model, store: UserStore, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeddings ``[N, E]`` of store rows, ``batch_size`` users densified at a time."""
    from model.adapt import embed
    parts = [embed(model, store.batch(rows[i:i + batch_size]), batch_size)
             for i in range(0, len(rows), batch_size)]
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, int(model.profile.output.shape[-1])), np.float32)


# --------------------------------------------------------------------------- labels


def load_target_labels(config: PipelineConfig, tasks: Sequence[str],
                       uri: str | None = None) -> tuple[dict, dict]:
    """``{task: (user ids, 0/1 labels)}`` of the target labels, and their accounting.

    A repeated (user, task, label) row counts once; a user labelled both 0 and 1 for a task is
    dropped as conflicting. With pseudonymisation on, ids are hashed with the snapshot's key so
    they match the heatmaps.
    """
    import pyarrow.parquet as pq

    uri = uri or config.storage.uri("target_labels")
    if not storage.exists(uri):
        raise FileNotFoundError(f"{uri}: no target labels (storage.target_labels of config "
                                f"{config.name!r})")
    fs, path = storage.resolve(uri)
    table = pq.read_table(path, filesystem=fs, columns=["user_id", "task", "label"])
    users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    names = np.asarray(table.column("task").to_pylist(), dtype=object)
    values = np.asarray(table.column("label").to_numpy(zero_copy_only=False))
    if config.pseudonymisation.enabled:
        from common.privacy import load_pseudonym_key, pseudonym
        key = load_pseudonym_key(config.pseudonymisation)
        hashed = {u: pseudonym(key, u) for u in set(users.tolist())}
        users = np.asarray([hashed[u] for u in users], dtype=object)
    labels, accounting = {}, {}
    for task in tasks:
        rows = names == task
        pairs = sorted(set(zip(users[rows].tolist(), values[rows].tolist())))
        seen: dict[str, set] = {}
        for user, label in pairs:
            seen.setdefault(user, set()).add(int(label))
        bad_values = sorted({v for s in seen.values() for v in s} - {0, 1})
        if bad_values:
            raise ValueError(f"{uri}: task {task!r} has label value(s) {bad_values}; labels "
                             "must be 0 or 1")
        kept = sorted(u for u, s in seen.items() if len(s) == 1)
        labels[task] = (np.asarray(kept, dtype=object),
                        np.asarray([next(iter(seen[u])) for u in kept], dtype=np.int8))
        accounting[task] = {"rows": int(rows.sum()),
                            "duplicate_rows": int(rows.sum()) - len(pairs),
                            "conflicting_users": len(seen) - len(kept),
                            "labelled_users": len(kept)}
    return labels, accounting


@dataclass
class TaskData:
    """One task's labelled users present in the heatmaps, as store rows."""

    name: str
    ids: np.ndarray  # [L] user ids
    labels: np.ndarray  # [L] 0/1
    rows: np.ndarray  # [L] store rows
    missing: int  # labelled users without a heatmap example


# --------------------------------------------------------------------------- reading


def read_users(heatmaps: str, manifest: dict, spec: InputSpec, config: PipelineConfig,
               model, cfg: EvalConfig, progress: Callable[[str], None] = print
               ) -> tuple[UserStore, np.ndarray, np.ndarray]:
    """One pass over every split: the sparse store, the baseline aggregates ``[U, F]`` and the
    meta-trained embeddings ``[U, E]`` of every user, in store order."""
    from model.adapt import embed
    from model.inputs import make_dataset
    from model.network import feature_keys

    store = UserStore(spec, feature_keys(spec))
    features, embeddings = [], []
    for split in sorted(manifest["splits"]):
        if not manifest["splits"][split].get("shards"):
            continue
        dataset = make_dataset(heatmaps, split, spec, cfg.read_batch_size, shuffle=False,
                               repeat=False, manifest=manifest,
                               value_transform=config.value_transform)
        for batch in dataset:
            batch = {k: v.numpy() for k, v in batch.items()}
            store.add(batch, split)
            features.append(aggregate_features(batch, spec))
            embeddings.append(embed(model, batch, cfg.embed_batch_size))
        progress(f"read split {split}: {len(store)} users so far")
    store.finish()
    return store, np.concatenate(features), np.concatenate(embeddings)


def task_data(labels: dict, store: UserStore, tasks: Sequence[str]) -> list[TaskData]:
    out = []
    for task in tasks:
        ids, values = labels[task]
        present = np.array([u in store.row_of for u in ids], dtype=bool)
        out.append(TaskData(task, ids[present], values[present].astype(np.int8),
                            store.rows(ids[present]), int((~present).sum())))
    return out


def resolve_tasks(config: PipelineConfig, cfg: EvalConfig) -> list[str]:
    known = [t.name for t in config.target_tasks]
    tasks = list(cfg.tasks) or known
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"task(s) {unknown} are not target tasks of config {config.name!r}; "
                         f"known: {known}")
    if cfg.max_tasks is not None:
        tasks = tasks[:cfg.max_tasks]
    if not tasks:
        raise ValueError(f"config {config.name!r} has no target task to evaluate")
    return tasks
