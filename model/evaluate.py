"""Meta-testing on unseen target tasks (paper section 4): Table 3, Figures 3 and 4, and a
seed-count sweep against classic DMP baselines.

    cfg = EvalConfig(repeats=3)                       # or EvalConfig.quick_preset()
    result = evaluate(config, "models/20260630T021500Z", eval_cfg=cfg)
    result["out"]                                     # reports/evaluation/<version>/

**Protocol.** For each unseen target task the users labelled for it (``target_labels``) are
split by a salted hash of ``(repeat seed, user id)`` into an *adaptation* set (the labelled
"support / prediction" data of section 4, ``adaptation_fraction`` of the users) and a *test*
set. The split does not depend on the task, so within one repeat a user is an adaptation
user for every task or for none. Every method sees only (a subset of) the adaptation set's
labels and is scored on the whole test set of the task, with AUROC and AUPR (average
precision). The same test set serves every experiment and level of a (task, repeat), so
levels compare on the same users.

**Methods.**

* ``meta_profile`` — zero-training: prototypes of the adaptation users' embeddings from the
  meta-trained g_θ, relation logits r(q, p⁺) − r(q, p⁻) from its f_θ
  (``adapt.prototype_scores`` on embeddings computed once).
* ``meta_profile_probe`` — a cross-validated logistic regression on the frozen embedding
  beside the aggregates (``baselines.probe_scores``): a head that uses more seeds.
* ``meta_profile_fine_tuned`` — ``adapt.fine_tune_scores``: the meta-trained model trained on
  the adaptation labels, early-stopped on a validation fold, then prototypes as above.
* ``scratch`` — the paper's baseline "normal training" (section 4.1): ``adapt.scratch_scores``,
  the same network and f_θ randomly initialised and trained with the same early-stopped
  procedure (its own learning rate). Its results do not depend on the meta-trained weights
  and are reused across runs (:class:`ScratchCache`).
* ``logreg``, ``hgb`` and ``cosine`` — classic DMP baselines (scikit-learn, see
  ``model/baselines.py``) on per-user aggregates: per modality the channel totals and
  hour-of-day totals over the year (log1p), the numeric demographics with their missing
  flags and the categorical demographics one-hot, standardised with the adaptation side's
  statistics.

**Experiments** (each a list of levels; a level is a subset of the adaptation set, drawn by
ranking users by a salted hash so it is deterministic for a seed and nested across levels):

* ``table3`` — the whole adaptation set (paper Table 3).
* ``masking`` — fraction of adaptation labels kept, stratified by class (the prevalence stays
  the task's): 100, 80, 60, 40, 20 % (moderate) and 5, 3, 1, 0.5 % (extreme), paper Figure 3.
  Each class keeps ``max(1, round(fraction · n_class))`` users, so at least one positive and
  one negative always remain: at 0.5 % of 900 users that is 1 positive and 4 negatives.
* ``imbalance`` — ratio positives / negatives in the adaptation set, ``0.5 · 2^k`` for k = 0..6
  (paper Figure 4), by subsampling to a fixed total per task: the largest total that every
  ratio can reach with the task's adaptation positives and negatives (or
  ``imbalance_total``), so only the ratio changes between levels. The realised ratio of each
  subset is recorded (rounding moves it for small totals).
* ``seeds`` — n positive seeds plus n labelled negatives from the adaptation set, n in
  ``seed_counts``.
* ``seeds_pu`` — the campaign setting: n positive seeds only, and ``pu_background``
  unlabelled users of the adaptation side as negatives (positive-unlabelled learning).

**Leakage guards** (:class:`LeakageError`): target labels must come from a period after the
feature window (:func:`check_label_periods`); source and target task names are disjoint
(:func:`check_tasks_disjoint`); the users scored for a task never include its adaptation
users, asserted for every trial (:func:`check_disjoint_users`).

**Memory.** Heatmaps are read once, every split, through ``make_dataset(shuffle=False,
repeat=False)``. Each batch is embedded with the meta-trained model, reduced to the baseline
aggregates, and kept *sparse* (:class:`UserStore`: the non-zero cells, about a kilobyte per
user instead of ~0.56 MB dense). Fine-tuning, training from scratch and re-embedding the test
users with an adapted model densify only the rows a step or an embedding batch needs
(:class:`LazyRows`), so no dense heatmap of all users is ever held.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from metaprofile import storage
from model.baselines import (CLASSIC_METHODS, COSINE, HGB, LOGREG, aggregate_feature_names,
                             aggregate_features, classic_scores, probe_scores)
from model.metrics import as_arrays, auroc
from model.spec import InputSpec
from schemas.config import PipelineConfig

log = logging.getLogger(__name__)

ZERO = "meta_profile"
PROBE = "meta_profile_probe"
FINE_TUNED = "meta_profile_fine_tuned"
SCRATCH = "scratch"
METHODS = (ZERO, PROBE, FINE_TUNED, SCRATCH, LOGREG, HGB, COSINE)
META_METHODS = (ZERO, PROBE, FINE_TUNED)
TRAINED_METHODS = (FINE_TUNED, SCRATCH)
METHOD_LABELS = {ZERO: "Meta-Profile (zero-training)",
                 PROBE: "Meta-Profile (probe: logistic regression on embedding + aggregates)",
                 FINE_TUNED: "Meta-Profile (fine-tuned)",
                 SCRATCH: "Normal training (from scratch)",
                 LOGREG: "DMP logistic regression",
                 HGB: "DMP gradient-boosted trees",
                 COSINE: "DMP cosine to seed centroid"}
METHOD_COLORS = {ZERO: "tab:red", PROBE: "tab:purple", FINE_TUNED: "tab:orange",
                 SCRATCH: "tab:blue", LOGREG: "tab:green", HGB: "tab:olive",
                 COSINE: "tab:gray"}

TABLE3, MASKING, IMBALANCE = "table3", "masking", "imbalance"
SEEDS, SEEDS_PU = "seeds", "seeds_pu"
EXPERIMENTS = (TABLE3, MASKING, IMBALANCE, SEEDS, SEEDS_PU)
SEED_EXPERIMENTS = (SEEDS, SEEDS_PU)
MODERATE_LEVELS = (1.0, 0.8, 0.6, 0.4, 0.2)
EXTREME_LEVELS = (0.05, 0.03, 0.01, 0.005)
IMBALANCE_RATIOS = tuple(0.5 * 2 ** k for k in range(7))
SEED_COUNTS = (1, 2, 5, 10, 20, 50, 100, 300)
PU_SEED_COUNTS = (10, 20, 50, 100, 300, 1000)

RESULT_COLUMNS = ("task", "experiment", "level", "method", "repeat", "seed", "auroc", "aupr",
                  "adaptation_users", "adaptation_positives", "test_users", "test_positives",
                  "seconds", "status")


class LeakageError(ValueError):
    """The evaluation would let target labels or adaptation users leak into what is scored."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and with which budget. A run is a pure function of these values,
    the data and the model: the repeats use ``seeds`` (default ``0 .. repeats-1``)."""

    tasks: tuple[str, ...] = ()  # target tasks; empty = every target task of the config
    max_tasks: int | None = None  # keep only the first N tasks (the quick preset uses 2)
    repeats: int = 3
    seeds: tuple[int, ...] = ()  # one per repeat; overrides ``repeats`` when given
    experiments: tuple[str, ...] = EXPERIMENTS
    methods: tuple[str, ...] = METHODS  # Table 3
    # Figures 3 and 4 (masking, imbalance): the paper's pair plus the classic baselines; the
    # fine-tuned model doubles their cost (add it with figure_methods=METHODS).
    figure_methods: tuple[str, ...] = (ZERO, PROBE, SCRATCH, LOGREG, HGB, COSINE)
    # the seed-count sweeps (labelled negatives, and PU)
    seed_sweep_methods: tuple[str, ...] = (ZERO, PROBE, LOGREG, HGB, COSINE)
    adaptation_fraction: float = 0.5  # share of a task's labelled users used for adaptation
    masking_levels: tuple[float, ...] = MODERATE_LEVELS + EXTREME_LEVELS
    imbalance_ratios: tuple[float, ...] = IMBALANCE_RATIOS
    imbalance_total: int | None = None  # None: the largest total every ratio can reach
    seed_counts: tuple[int, ...] = SEED_COUNTS
    # seeds_pu: n positive seeds, negatives = pu_background unlabelled adaptation-side users
    pu_seed_counts: tuple[int, ...] = PU_SEED_COUNTS
    pu_background: int = 1000
    # fine-tuning and from-scratch budget (adapt.AdaptConfig): early-stopped on a validation
    # fold of the adaptation subset, at most fine_tune_epochs epochs
    fine_tune_epochs: int = 20
    patience: int = 2
    batch_size: int = 32  # query users per fine-tuning episode
    k_shot: int = 1  # supports per class per fine-tuning episode
    learning_rate: float = 1e-4  # fine-tuning: small steps from the meta-trained weights
    scratch_learning_rate: float = 1e-3  # from scratch: random weights need larger steps
    embed_batch_size: int = 128  # users densified and embedded at a time
    read_batch_size: int = 64  # users per batch of the TFRecord pipeline
    scratch_cache: bool = True  # reuse from-scratch results of earlier runs (ScratchCache)
    scratch_cache_dir: str | None = None  # default: <storage reports>/evaluation/_scratch_cache
    quick: bool = False  # set by quick_preset (recorded in results.json)

    def __post_init__(self) -> None:
        problems = []
        for name, values, known in (("experiments", self.experiments, EXPERIMENTS),
                                    ("methods", self.methods, METHODS),
                                    ("figure_methods", self.figure_methods, METHODS),
                                    ("seed_sweep_methods", self.seed_sweep_methods, METHODS)):
            unknown = [v for v in values if v not in known]
            if unknown:
                problems.append(f"{name}: {unknown} not in {list(known)}")
        if not self.seeds and self.repeats < 1:
            problems.append(f"repeats: {self.repeats} must be at least 1")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {list(self.seeds)} repeats a seed")
        if not 0.0 < self.adaptation_fraction < 1.0:
            problems.append(f"adaptation_fraction: {self.adaptation_fraction} must lie in (0, 1)")
        if any(not 0.0 < f <= 1.0 for f in self.masking_levels):
            problems.append(f"masking_levels: {list(self.masking_levels)} must lie in (0, 1]")
        if any(r <= 0 for r in self.imbalance_ratios):
            problems.append(f"imbalance_ratios: {list(self.imbalance_ratios)} must be positive")
        for name in ("seed_counts", "pu_seed_counts"):
            if any(n < 1 for n in getattr(self, name)):
                problems.append(f"{name}: {list(getattr(self, name))} must be at least 1")
        if self.imbalance_total is not None and self.imbalance_total < 2:
            problems.append(f"imbalance_total: {self.imbalance_total} must be at least 2")
        if self.max_tasks is not None and self.max_tasks < 1:
            problems.append(f"max_tasks: {self.max_tasks} must be at least 1")
        for name in ("fine_tune_epochs", "patience", "batch_size", "k_shot",
                     "embed_batch_size", "read_batch_size", "pu_background"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be at least 1")
        if self.learning_rate <= 0 or self.scratch_learning_rate <= 0:
            problems.append("learning_rate and scratch_learning_rate must be positive")
        if problems:
            raise ValueError("invalid evaluation config: " + "; ".join(problems))

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(self.seeds) if self.seeds else tuple(range(self.repeats))

    def methods_for(self, experiment: str) -> tuple[str, ...]:
        if experiment in SEED_EXPERIMENTS:
            return tuple(self.seed_sweep_methods)
        if experiment in (MASKING, IMBALANCE):
            return tuple(self.figure_methods)
        return tuple(self.methods)

    @classmethod
    def quick_preset(cls, **changes) -> "EvalConfig":
        """For CI and DAG runs: 1 repeat, 2 tasks, Table 3 without the fine-tuned model, at
        most 3 epochs of training from scratch, 3 masking levels, 3 imbalance ratios, 3 seed
        counts per sweep."""
        values = dict(repeats=1, max_tasks=2, fine_tune_epochs=3, patience=1,
                      methods=tuple(m for m in METHODS if m != FINE_TUNED),
                      masking_levels=(1.0, 0.2, 0.05), imbalance_ratios=(0.5, 2.0, 8.0),
                      seed_counts=(5, 20, 100), pu_seed_counts=(10, 50, 300), quick=True)
        values.update(changes)
        return cls(**values)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "seed_list": list(self.seed_list)}


# --------------------------------------------------------------------------- metrics


def average_precision(labels, scores) -> float:
    """AUPR as scikit-learn's average precision (tied scores form one threshold); NaN when
    there is no positive."""
    from sklearn.metrics import average_precision_score
    labels, scores = as_arrays(labels, scores)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve as sk_roc_curve
    labels, scores = as_arrays(labels, scores)
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct score, highest score first."""
    from sklearn.metrics import precision_recall_curve as sk_pr_curve
    labels, scores = as_arrays(labels, scores)
    precision, recall, _ = sk_pr_curve(labels, scores, drop_intermediate=False)
    return recall[:-1][::-1], precision[:-1][::-1]


# --------------------------------------------------------------------------- leakage guards


def check_label_periods(config: PipelineConfig, ds: dt.date, tasks: Sequence[str]) -> None:
    """Target labels must come from after the feature window ending at ``ds``."""
    if config.window.end is not None and ds > config.window.end:
        raise LeakageError(f"snapshot ds {ds} is after window.end {config.window.end} of config "
                           f"{config.name!r}; the target label periods were checked against "
                           "window.end, so the features could overlap the label period")
    by_name = {t.name: t for t in config.target_tasks}
    for name in tasks:
        task = by_name.get(name)
        if task is None:
            raise LeakageError(f"{name!r} is not a target task of config {config.name!r} "
                               f"(target tasks: {sorted(by_name)}); its label period is unknown")
        if task.label_period_start is None or task.label_period_start <= ds:
            raise LeakageError(f"target task {name!r}: label_period_start "
                               f"{task.label_period_start} is not after the feature window "
                               f"ending {ds}; labels would overlap the features")


def check_tasks_disjoint(source_tasks: Iterable[str], target_tasks: Iterable[str]) -> None:
    """A target task must be unseen: no source task the model was trained on has its name."""
    shared = sorted(set(source_tasks) & set(target_tasks))
    if shared:
        raise LeakageError(f"task(s) {shared} are both source tasks of the model and target "
                           "tasks of the evaluation; a target task must be unseen in "
                           "meta-training")


def check_disjoint_users(scored_ids: Iterable[str], adaptation_ids: Iterable[str], task: str,
                         experiment: str) -> None:
    """The users scored for a task never include its support / adaptation users."""
    overlap = sorted(set(scored_ids) & set(adaptation_ids))
    if overlap:
        raise LeakageError(f"task {task!r}, experiment {experiment!r}: {len(overlap)} scored "
                           f"user(s) are also adaptation users, e.g. {overlap[:3]}")


# --------------------------------------------------------------------------- subsets


def hash_unit(keys: Iterable[str]) -> np.ndarray:
    """A deterministic number in [0, 1) per key (BLAKE2b), independent of PYTHONHASHSEED."""
    return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big")
                     / 2.0 ** 64 for k in keys], dtype=np.float64)


def adaptation_mask(user_ids: Sequence[str], seed: int, fraction: float) -> np.ndarray:
    """True for adaptation users: ``hash(seed, user id) < fraction`` (task-independent)."""
    return hash_unit(f"adapt:{seed}:{u}" for u in user_ids) < fraction


def _ranked(user_ids: Sequence[str], positions: np.ndarray, key: str) -> np.ndarray:
    """``positions`` ordered by a salted hash of their user ids."""
    ranks = hash_unit(f"{key}:{user_ids[p]}" for p in positions)
    return positions[np.argsort(ranks, kind="mergesort")]


def _classes(labels) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    return np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)


def _need_both_classes(labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = _classes(labels)
    if not len(pos) or not len(neg):
        raise ValueError(f"{what}: needs at least one positive and one negative, has "
                         f"{len(pos)} and {len(neg)}")
    return pos, neg


def mask_labels(user_ids: Sequence[str], labels, fraction: float, key: str) -> np.ndarray:
    """Positions kept when only ``fraction`` of the labels are available: per class
    ``max(1, round(fraction · n))`` users in hash order, so the prevalence is kept, at least
    one of each class remains, and a smaller fraction keeps a subset of a larger one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"masking fraction {fraction} must lie in (0, 1]")
    pos, neg = _need_both_classes(labels, "label masking")
    kept = [_ranked(user_ids, members, f"mask:{key}")[:max(1, round(fraction * len(members)))]
            for members in (pos, neg)]
    return np.sort(np.concatenate(kept))


def imbalance_counts(total: int, ratio: float) -> tuple[int, int]:
    """(positives, negatives) of ``total`` users at ``ratio`` = positives / negatives."""
    negatives = max(1, int(round(total / (1.0 + ratio))))
    return max(1, total - negatives), negatives


def max_imbalance_total(positives: int, negatives: int, ratios: Sequence[float]) -> int:
    """The largest total every ratio reaches with the available users of each class."""
    best = 0
    for total in range(2, positives + negatives + 1):
        if all(p <= positives and n <= negatives
               for p, n in (imbalance_counts(total, r) for r in ratios)):
            best = total
    if best < 2:
        raise ValueError(f"{positives} positives and {negatives} negatives cannot form every "
                         f"imbalance ratio {list(ratios)}")
    return best


def imbalance_subsample(user_ids: Sequence[str], labels, ratio: float, total: int,
                        key: str) -> np.ndarray:
    """Positions of ``total`` users with positives / negatives ≈ ``ratio`` (both ≥ 1)."""
    if ratio <= 0:
        raise ValueError(f"imbalance ratio {ratio} must be positive")
    pos, neg = _need_both_classes(labels, "class imbalance")
    want_pos, want_neg = imbalance_counts(total, ratio)
    if want_pos > len(pos) or want_neg > len(neg):
        raise ValueError(f"ratio {ratio} of {total} users needs {want_pos} positives and "
                         f"{want_neg} negatives; the adaptation set has {len(pos)} and "
                         f"{len(neg)}")
    return np.sort(np.concatenate([_ranked(user_ids, pos, f"imb+:{key}")[:want_pos],
                                   _ranked(user_ids, neg, f"imb-:{key}")[:want_neg]]))


def seed_subsample(user_ids: Sequence[str], labels, seeds: int, key: str) -> np.ndarray:
    """Positions of ``seeds`` positive seeds and as many labelled negatives (capped by what
    the adaptation set has), nested across seed counts."""
    pos, neg = _need_both_classes(labels, "seed sweep")
    return np.sort(np.concatenate([_ranked(user_ids, pos, f"seed+:{key}")[:seeds],
                                   _ranked(user_ids, neg, f"seed-:{key}")[:seeds]]))


def positive_seeds(user_ids: Sequence[str], labels, seeds: int, key: str) -> np.ndarray:
    """Positions of ``seeds`` positive users (capped by what there is), nested across counts:
    the seed list of a campaign that has no labelled negatives."""
    pos, _ = _classes(labels)
    if not len(pos):
        raise ValueError("PU seed sweep: the adaptation set has no positive user")
    return np.sort(_ranked(user_ids, pos, f"pu+:{key}")[:seeds])


def unlabelled_background(pool_rows: np.ndarray, pool_ids: Sequence[str], exclude: np.ndarray,
                          size: int, key: str) -> np.ndarray:
    """``size`` rows of the unlabelled population ``pool_rows`` (salted-hash order, nested
    across sizes), leaving out the rows in ``exclude`` (the seeds): the negatives of a PU
    lookalike. They are unlabelled, so a few may be positives, as in a real campaign."""
    order = pool_rows[np.argsort(hash_unit(f"pu-:{key}:{u}" for u in pool_ids),
                                 kind="mergesort")]
    return order[~np.isin(order, exclude)][:size]


# --------------------------------------------------------------------------- zero-training


def zero_training_scores(model, support_embedding: np.ndarray, labels,
                         query_embedding: np.ndarray) -> np.ndarray:
    """``adapt.prototype_scores`` on embeddings computed once: the positive (and negative)
    prototype of the supports, then f_θ's logits r(q, p⁺) − r(q, p⁻) ``[Q]``."""
    from keras import ops
    labels = np.asarray(labels).reshape(-1)
    if not (labels == 1).any():
        raise ValueError("the labelled set has no positive user; a prototype needs one")
    pos = support_embedding[labels == 1].mean(axis=0, keepdims=True)  # [1, E]
    neg = (support_embedding[labels == 0].mean(axis=0, keepdims=True)
           if (labels == 0).any() else None)  # [1, E]
    logits = model.score(query_embedding, pos, neg)  # [Q, 1]
    return ops.convert_to_numpy(logits)[:, 0]


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
        self.heatmap_keys = tuple(k for k in self.feature_keys if k.startswith("heatmap/"))
        self.shapes = {f"heatmap/{name}": spec.heatmap_shape(name) for name, _ in spec.modalities}
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

    def add(self, batch: dict) -> None:
        """Append a numpy batch dict (model/spec.py keys)."""
        ids = [u.decode() if isinstance(u, bytes) else str(u) for u in batch["user_id"]]
        self._ids += ids
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
        self._counts, self._cells, self._values, self._dense = {}, {}, {}, {}
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
        shape = self.shapes[key]
        out = np.zeros((len(rows), shape[0] * shape[1] * shape[2]), np.float32)
        starts, ends = self.offsets[key][rows], self.offsets[key][rows + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total:
            owner = np.repeat(np.arange(len(rows)), lengths)
            first = np.repeat(np.cumsum(lengths) - lengths, lengths)
            positions = np.arange(total) - first + np.repeat(starts, lengths)
            out[owner, self.cells[key][positions]] = self.values[key][positions]
        return out.reshape(len(rows), *shape)  # [N, D, 24, C]

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
        from jobs.encode import load_pseudonym_key, pseudonym
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


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class Trial:
    """One level of one experiment: a subset of a task's adaptation users."""

    experiment: str
    level: float
    positions: np.ndarray  # into the task's adaptation arrays
    methods: tuple[str, ...]
    note: str = ""
    background: bool = False  # seeds_pu: unlabelled users join the positives as negatives


def plan_trials(adaptation_ids: np.ndarray, adaptation_labels: np.ndarray, task: str,
                seed: int, cfg: EvalConfig) -> list[Trial]:
    """The trials of one task and repeat, in :data:`EXPERIMENTS` order."""
    trials = []
    key = f"{seed}:{task}"
    everyone = np.arange(len(adaptation_ids))
    n_pos, n_neg = (len(c) for c in _classes(adaptation_labels))
    for experiment in (e for e in EXPERIMENTS if e in cfg.experiments):
        methods = cfg.methods_for(experiment)
        if not methods:
            continue
        if experiment == TABLE3:
            trials.append(Trial(TABLE3, 1.0, everyone, methods))
        elif experiment == MASKING:
            trials += [Trial(MASKING, f, mask_labels(adaptation_ids, adaptation_labels, f, key),
                             methods) for f in cfg.masking_levels]
        elif experiment == IMBALANCE:
            total = cfg.imbalance_total or max_imbalance_total(n_pos, n_neg,
                                                               cfg.imbalance_ratios)
            for ratio in cfg.imbalance_ratios:
                rows = imbalance_subsample(adaptation_ids, adaptation_labels, ratio, total, key)
                pos = int(adaptation_labels[rows].sum())
                trials.append(Trial(IMBALANCE, ratio, rows, methods,
                                    note=f"total {total}, realised ratio "
                                         f"{pos / max(len(rows) - pos, 1):.3g}"))
        elif experiment == SEEDS:
            for count in cfg.seed_counts:
                rows = seed_subsample(adaptation_ids, adaptation_labels, count, key)
                capped = "" if min(n_pos, n_neg) >= count else (
                    f"capped at {min(n_pos, count)} positives and {min(n_neg, count)} negatives")
                trials.append(Trial(SEEDS, float(count), rows, methods, note=capped))
        elif experiment == SEEDS_PU:
            for count in cfg.pu_seed_counts:
                rows = positive_seeds(adaptation_ids, adaptation_labels, count, key)
                capped = "" if n_pos >= count else f"capped at {n_pos} positives"
                trials.append(Trial(SEEDS_PU, float(count), rows, methods, note=capped,
                                    background=True))
    return trials


def trial_seed(seed: int, task: str, positions: np.ndarray) -> int:
    """The adaptation seed of a trial: a function of the subset, so two experiments that
    draw the same subset (masking at 100 % and Table 3) train identically."""
    digest = hashlib.blake2b(f"{seed}:{task}:".encode() + np.asarray(positions, np.int64)
                             .tobytes(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


# --------------------------------------------------------------------------- summaries


def _finite_mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if not finite.size:
        return float("nan"), float("nan"), 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), std, int(finite.size)


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean ± std over repeats per (task, experiment, level, method)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["experiment"], row["level"], row["method"]),
                          []).append(row)
    out = []
    for (task, experiment, level, method), members in groups.items():
        entry = {"task": task, "experiment": experiment, "level": level, "method": method}
        for metric in ("auroc", "aupr"):
            mean, std, n = _finite_mean_std([m[metric] for m in members])
            entry.update({f"{metric}_mean": mean, f"{metric}_std": std})
        entry["repeats"] = n
        out.append(entry)
    return out


def over_tasks(rows: Sequence[dict], experiment: str) -> list[dict]:
    """Per (level, method): the mean over tasks within each repeat, then mean ± std over
    repeats. Only tasks with a finite value for every method at that level and repeat count,
    so methods are averaged over the same tasks."""
    members = [r for r in rows if r["experiment"] == experiment]
    methods = sorted({r["method"] for r in members}, key=_method_order)
    by_cell: dict[tuple, dict[str, dict]] = {}
    for r in members:
        by_cell.setdefault((r["level"], r["repeat"], r["task"]), {})[r["method"]] = r
    per_repeat: dict[tuple, list[float]] = {}
    for (level, repeat, task), cell in by_cell.items():
        if not all(m in cell and np.isfinite(cell[m]["aupr"]) for m in methods):
            continue
        for m in methods:
            for metric in ("auroc", "aupr"):
                per_repeat.setdefault((level, m, metric, repeat), []).append(cell[m][metric])
    out = []
    for level in sorted({r["level"] for r in members}, reverse=experiment == MASKING):
        for m in methods:
            entry = {"experiment": experiment, "level": level, "method": m}
            for metric in ("auroc", "aupr"):
                means = [float(np.mean(v)) for (lv, mm, mt, _), v in per_repeat.items()
                         if lv == level and mm == m and mt == metric]
                mean, std, n = _finite_mean_std(means)
                entry.update({f"{metric}_mean": mean, f"{metric}_std": std, "repeats": n})
            entry["tasks"] = max((len(v) for (lv, mm, _, _), v in per_repeat.items()
                                  if lv == level and mm == m), default=0)
            out.append(entry)
    return out


def _method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def growth(candidate: float, baseline: float) -> float:
    """The paper's growth rate: (candidate − baseline) / baseline."""
    return (candidate - baseline) / baseline if baseline else float("nan")


def table3(summary: Sequence[dict], tasks: Sequence[str], primary: str = ZERO,
           baseline: str = SCRATCH) -> dict:
    """Table 3 rows (per task: every method's mean AUPR/AUROC, ``primary`` minus
    ``baseline`` and the growth rate) and the averages the paper quotes."""
    cells = {(s["task"], s["method"]): s for s in summary if s["experiment"] == TABLE3}
    methods = sorted({m for (_, m) in cells}, key=_method_order)
    rows = []
    for task in tasks:
        if (task, primary) not in cells or (task, baseline) not in cells:
            continue
        row = {"task": task}
        for m in methods:
            if (task, m) in cells:
                for metric in ("aupr", "auroc"):
                    row[f"{m}_{metric}"] = cells[(task, m)][f"{metric}_mean"]
                    row[f"{m}_{metric}_std"] = cells[(task, m)][f"{metric}_std"]
        for metric in ("aupr", "auroc"):
            row[f"diff_{metric}"] = row[f"{primary}_{metric}"] - row[f"{baseline}_{metric}"]
            row[f"growth_{metric}"] = growth(row[f"{primary}_{metric}"],
                                             row[f"{baseline}_{metric}"])
        rows.append(row)
    average = {"task": "average"}
    if rows:
        for column in rows[0]:
            if column != "task":
                average[column] = float(np.nanmean([r.get(column, np.nan) for r in rows]))
        for metric in ("aupr", "auroc"):  # growth of the means, beside the mean of growths
            average[f"growth_of_mean_{metric}"] = growth(average[f"{primary}_{metric}"],
                                                         average[f"{baseline}_{metric}"])
        average["tasks_primary_better_aupr"] = int(sum(r["diff_aupr"] > 0 for r in rows))
    return {"primary": primary, "baseline": baseline, "methods": methods, "rows": rows,
            "average": average}


PAPER_AVERAGE_GROWTH = 0.08  # the paper's average AUPR growth over normal training
TARGET_GROWTH = 0.15  # zero-training's average AUPR growth over scratch, the bar
TARGET_RATIO = 1.05  # best Meta-Profile method's AUPR over the best classic baseline's
TARGET_SCRATCH_AUROC = 0.55  # a from-scratch baseline that learns
TARGET_SEED_RANGE = (10, 300)  # seed counts where the ratio target applies
SCARCE_LABELS = 0.01  # label-masking levels at or below this are "scarce"


def gap_slope(entries: Sequence[dict], levels: Sequence[float], method: str = ZERO,
              baseline: str = SCRATCH) -> tuple[list[float], float]:
    """The AUPR gap ``method − baseline`` at each of ``levels`` (in the order given, from the
    easiest to the hardest setting) and its least-squares slope against the level's position.
    Levels where either method has no finite mean are left out."""
    means = {(e["level"], e["method"]): e["aupr_mean"] for e in entries}
    points = [(i, means[(lv, method)] - means[(lv, baseline)]) for i, lv in enumerate(levels)
              if np.isfinite(means.get((lv, method), np.nan))
              and np.isfinite(means.get((lv, baseline), np.nan))]
    gaps = [g for _, g in points]
    if len(points) < 2:
        return gaps, float("nan")
    x, y = np.array([p[0] for p in points], float), np.array(gaps)
    return gaps, float(np.polyfit(x, y, 1)[0])


def _best(means: dict, level, methods: Sequence[str]) -> tuple[str | None, float]:
    found = [(means[(level, m)], m) for m in methods
             if np.isfinite(means.get((level, m), np.nan))]
    if not found:
        return None, float("nan")
    value, method = max(found)
    return method, value


def ratio_checks(entries: Sequence[dict], levels: Sequence) -> tuple[list[str], list[str]]:
    """Per level: ``"level: best-meta / best-classic = ratio"`` texts, and the levels that
    miss :data:`TARGET_RATIO` (or lack a method of either kind)."""
    means = {(e["level"], e["method"]): e["aupr_mean"] for e in entries}
    texts, missed = [], []
    for level in levels:
        meta, meta_value = _best(means, level, META_METHODS)
        classic, classic_value = _best(means, level, CLASSIC_METHODS)
        if meta is None or classic is None:
            missed.append(f"{level:g}")
            texts.append(f"{level:g}: not measured")
            continue
        ratio = meta_value / classic_value if classic_value else float("nan")
        texts.append(f"{level:g}: {meta} {meta_value:.3f} / {classic} {classic_value:.3f} = "
                     f"{ratio:.2f}")
        if not ratio >= TARGET_RATIO:
            missed.append(f"{level:g}")
    return texts, missed


def check_targets(table: dict, curves: dict) -> list[dict]:
    """The lookalike issue's targets, each ``{"target", "met", "evidence"}``.

    ``met`` is ``None`` when the run did not measure what the target needs (an experiment or
    a method left out). The figures are means over repeats (of means over tasks for the
    sweeps); a target is met on the means, the spread is in the report."""
    out = []
    average = table.get("average", {})
    rows = table.get("rows", [])
    cells = {(1.0, m): average.get(f"{m}_aupr", np.nan) for m in METHODS}
    texts, missed = ratio_checks([{"level": lv, "method": m, "aupr_mean": v}
                                  for (lv, m), v in cells.items()], [1.0])
    out.append({"target": f"best Meta-Profile method's mean AUPR at least {TARGET_RATIO:g}x "
                          "the best classic baseline's on the whole adaptation set (Table 3)",
                "met": None if rows == [] else not missed,
                "evidence": texts[0].replace("1: ", "", 1)})
    low, high = TARGET_SEED_RANGE
    for experiment in SEED_EXPERIMENTS:
        entries = [e for e in curves.get(experiment) or [] if low <= e["level"] <= high]
        levels = sorted({e["level"] for e in entries})
        target = (f"{experiment}: best Meta-Profile method's mean AUPR at least "
                  f"{TARGET_RATIO:g}x the best classic baseline's at every seed count from "
                  f"{low} to {high}")
        if not levels:
            out.append({"target": target, "met": None,
                        "evidence": f"no {experiment} level between {low} and {high}"})
            continue
        texts, missed = ratio_checks(entries, levels)
        out.append({"target": target, "met": not missed,
                    "evidence": "; ".join(texts) + (f" (missed at {', '.join(missed)})"
                                                    if missed else "")})
    scratch_auroc = average.get(f"{SCRATCH}_auroc", float("nan"))
    out.append({"target": f"scratch mean AUROC at least {TARGET_SCRATCH_AUROC} in Table 3 "
                          "(a baseline that learns)",
                "met": None if not np.isfinite(scratch_auroc)
                else bool(scratch_auroc >= TARGET_SCRATCH_AUROC),
                "evidence": f"mean AUROC {scratch_auroc:.3f}"})
    if rows:
        losing = [r["task"] for r in rows if not r["diff_aupr"] > 0]
        mean_growth = average.get("growth_aupr", float("nan"))
        out.append({"target": "Meta-Profile zero-training AUPR above scratch on every target "
                              f"task, average growth at least +{TARGET_GROWTH:.0%}",
                    "met": not losing and bool(mean_growth >= TARGET_GROWTH),
                    "evidence": f"{len(rows) - len(losing)} of {len(rows)} tasks"
                                + (f" (not on {', '.join(losing)})" if losing else "")
                                + f"; mean of the per-task growth rates {mean_growth:+.1%}"})
    else:
        out.append({"target": "Meta-Profile zero-training above scratch on every task",
                    "met": None,
                    "evidence": "no Table 3 rows with Meta-Profile and training from scratch"})
    entries = curves.get(MASKING) or []
    means = {(e["level"], e["method"]): e["aupr_mean"] for e in entries}
    scarce = [lv for lv in sorted({e["level"] for e in entries}) if lv <= SCARCE_LABELS
              and all(np.isfinite(means.get((lv, m), np.nan)) for m in (ZERO, SCRATCH))]
    full = all(np.isfinite(means.get((1.0, m), np.nan)) for m in (ZERO, SCRATCH))
    target = (f"label masking: the gap to scratch at <= {SCARCE_LABELS:.0%} of the labels is "
              "at least the gap at 100 %")
    if not scarce or not full:
        out.append({"target": target, "met": None,
                    "evidence": "masking needs Meta-Profile and scratch at 100 % and at a "
                                f"level <= {SCARCE_LABELS:.0%}"})
    else:
        gap_full = means[(1.0, ZERO)] - means[(1.0, SCRATCH)]
        gaps = {lv: means[(lv, ZERO)] - means[(lv, SCRATCH)] for lv in scarce}
        out.append({"target": target, "met": all(g >= gap_full for g in gaps.values()),
                    "evidence": f"gap {gap_full:+.3f} at 100 %; "
                                + ", ".join(f"{g:+.3f} at {lv:.1%}" for lv, g in gaps.items())})
    return out


def model_summary(rows: Sequence[dict], tasks: Sequence[str]) -> dict:
    """Mean Table 3 AUPR/AUROC per method over the tasks (the decision's inputs)."""
    summary = summarise([r for r in rows if r["experiment"] == TABLE3])
    out = {}
    for method in METHODS:
        for metric in ("aupr", "auroc"):
            values = [s[f"{metric}_mean"] for s in summary
                      if s["method"] == method and s["task"] in tasks]
            if values:
                out[f"mean_{method}_{metric}"] = float(np.nanmean(values))
    return out


def deployed_method(config: PipelineConfig) -> str:
    """The evaluation method that measures what the nightly job deploys: the probe for
    ``lookalike.head: probe``, zero-training for ``prototype``."""
    return PROBE if config.lookalike.head == "probe" else ZERO


def decide(candidate: dict, published: dict | None, published_error: str | None = None,
           compared: bool = True, method: str = ZERO) -> dict:
    """decision.json: is the candidate model better than what is published?

    ``method`` is the Meta-Profile method the nightly job scores with
    (:func:`deployed_method`). With a published model (evaluated with the same protocol and
    seeds), better means a higher mean Table 3 AUPR of that method over the target tasks.
    Without one (none published, or it cannot be evaluated: ``published_error``), or when no
    comparison was asked for, better means that AUPR beats training from scratch.
    """
    key, scratch_key = f"mean_{method}_aupr", f"mean_{SCRATCH}_aupr"
    label = METHOD_LABELS.get(method, method)
    mine = candidate.get(key)
    if mine is None or not np.isfinite(mine):
        return {"better": False, "method": method,
                "reason": f"the candidate has no Table 3 AUPR of {label} (run the table3 "
                          f"experiment with {method})",
                "candidate": candidate, "published": published}
    if published is not None:
        theirs = published.get(key)
        if candidate.get("path") and candidate.get("path") == published.get("path"):
            return {"better": False, "method": method,
                    "reason": "the candidate is the published model",
                    "candidate": candidate, "published": published}
        if theirs is None or not np.isfinite(theirs):
            return {"better": True, "method": method,
                    "reason": f"the published model has no AUPR of {label} to compare with",
                    "candidate": candidate, "published": published}
        better = bool(mine > theirs)
        return {"better": better, "method": method,
                "reason": f"mean AUPR of {label} {mine:.4f} vs published "
                          f"{published.get('version', '?')} {theirs:.4f} "
                          f"({'higher' if better else 'not higher'})",
                "candidate": candidate, "published": published}
    scratch = candidate.get(scratch_key)
    prefix = (f"no published model to compare with ({published_error}); " if published_error
              else "" if compared else "not compared with a published model "
                                       "(--compare-published not given); ")
    if scratch is None or not np.isfinite(scratch):
        return {"better": False, "method": method,
                "reason": prefix + "no Table 3 from-scratch result to compare with either "
                                   "(run table3 with scratch)",
                "candidate": candidate, "published": None}
    better = bool(mine > scratch)
    return {"better": better, "method": method,
            "reason": prefix + f"mean AUPR of {label} {mine:.4f} vs training from scratch "
                               f"{scratch:.4f} ({'higher' if better else 'not higher'})",
            "candidate": candidate, "published": None}


# --------------------------------------------------------------------------- the protocol


@dataclass
class TaskData:
    """One task's labelled users present in the heatmaps, as store rows."""

    name: str
    ids: np.ndarray  # [L] user ids
    labels: np.ndarray  # [L] 0/1
    rows: np.ndarray  # [L] store rows
    missing: int  # labelled users without a heatmap example


@dataclass
class ModelUnderTest:
    """A model with what the protocol needs from it."""

    name: str  # "candidate" or "published"
    path: str
    version: str
    model: object  # MetaProfileModel
    model_config: object  # ModelConfig
    embeddings: np.ndarray  # [users, E] of every store row, meta-trained weights


@dataclass
class Outcome:
    rows: list[dict] = field(default_factory=list)
    curves: dict = field(default_factory=dict)  # (task, method) -> (labels, scores), repeat 0
    notes: list[str] = field(default_factory=list)
    guards: int = 0  # user-disjointness checks passed
    # trained methods: {task, experiment, level, method, repeat, best_epoch, curve}
    learning_curves: list[dict] = field(default_factory=list)


@dataclass
class Support:
    """The labelled users one trial adapts to, as store rows, and what scores them."""

    rows: np.ndarray  # [S] store rows
    labels: np.ndarray  # [S] 0/1
    reference: np.ndarray  # store rows whose feature statistics standardise the features


SCRATCH_CACHE_VERSION = 1  # bump when the from-scratch procedure changes


class ScratchCache:
    """Results of training from scratch, kept across evaluations.

    The from-scratch baseline never sees the meta-trained weights. Its scores are a function
    of the data (the heatmap manifest's digest), the architecture (the model config), the
    budget, the support users and labels, the test users and the seed, so an evaluation
    that judges a change to meta-training reuses them instead of paying for them again: they
    are most of an evaluation's cost. One JSON file per result under ``root``; a file that
    cannot be read counts as a miss and is written again.
    """

    def __init__(self, root: str, data_sha256: str, model_config: dict):
        self.root = root
        self.base = {"version": SCRATCH_CACHE_VERSION, "data": data_sha256,
                     "model_config": model_config}
        self.hits = self.misses = 0

    def key(self, adapt_cfg, support_ids, labels, query_ids) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps({**self.base, "adapt": dataclasses.asdict(adapt_cfg)},
                                 sort_keys=True, default=str).encode())
        for part in (support_ids, labels, query_ids):
            digest.update("\n".join(map(str, part)).encode() + b"\0")
        return digest.hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        uri = storage.join(self.root, f"{key}.json")
        try:
            document = storage.read_json(uri)
            scores = np.asarray(document["scores"], dtype=np.float64)
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return scores, document["extra"]

    def put(self, key: str, scores: np.ndarray, extra: dict) -> None:
        storage.write_json({"scores": [float(v) for v in scores], "extra": extra},
                           storage.join(self.root, f"{key}.json"))


class Adapters:
    """Scores a trial's queries with one method; owns the trained methods' learners (one per
    method: traced once, reset per trial)."""

    def __init__(self, candidate: ModelUnderTest, store: UserStore, features: np.ndarray,
                 cfg: EvalConfig, scratch_cache: ScratchCache | None = None):
        self.candidate, self.store, self.features, self.cfg = candidate, store, features, cfg
        self.learners: dict = {}
        self.scratch_cache = scratch_cache

    def _adapt_config(self, method: str, seed: int):
        from model.adapt import AdaptConfig
        cfg = self.cfg
        return AdaptConfig(max_epochs=cfg.fine_tune_epochs, patience=cfg.patience,
                           batch_size=cfg.batch_size, k_shot=cfg.k_shot,
                           learning_rate=(cfg.scratch_learning_rate if method == SCRATCH
                                          else cfg.learning_rate),
                           seed=seed, embed_batch_size=cfg.embed_batch_size)

    def scores(self, method: str, support: Support, query_rows: np.ndarray, seed: int
               ) -> tuple[np.ndarray, dict]:
        """``[Q]`` scores of ``query_rows`` and, for trained methods, the learning curve."""
        from model.adapt import Learner, fine_tune_scores, scratch_scores
        c, f = self.candidate, self.features
        if method == ZERO:
            return zero_training_scores(c.model, c.embeddings[support.rows], support.labels,
                                        c.embeddings[query_rows]), {}
        if method in CLASSIC_METHODS:
            return classic_scores(method, f[support.rows], support.labels, f[query_rows],
                                  f[support.reference], seed), {}
        if method == PROBE:
            return probe_scores(c.embeddings[support.rows], f[support.rows], support.labels,
                                c.embeddings[query_rows], f[query_rows],
                                c.embeddings[support.reference], f[support.reference],
                                seed), {}
        adapt_cfg = self._adapt_config(method, seed)
        key = None
        if method == SCRATCH and self.scratch_cache is not None:
            key = self.scratch_cache.key(adapt_cfg, self.store.ids[support.rows],
                                         support.labels, self.store.ids[query_rows])
            cached = self.scratch_cache.get(key)
            if cached is not None:
                return cached
        if method not in self.learners:
            self.learners[method] = Learner(c.model.spec, c.model_config,
                                            adapt_cfg.learning_rate, adapt_cfg.bn_momentum)
        learner = self.learners[method]
        batch, queries = self.store.lazy(support.rows), self.store.lazy(query_rows)
        if method == FINE_TUNED:
            scores = fine_tune_scores(c.model, c.model_config, batch, support.labels, queries,
                                      adapt_cfg, learner)
        elif method == SCRATCH:
            scores = scratch_scores(c.model.spec, c.model_config, batch, support.labels,
                                    queries, adapt_cfg, learner)
        else:
            raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
        extra = {"best_epoch": learner.best_epoch,
                 "curve": [[e, round(v, 5)] for e, v in learner.curve]}
        if key is not None:
            self.scratch_cache.put(key, np.asarray(scores, dtype=np.float64), extra)
        return scores, extra


def run_protocol(candidate: ModelUnderTest, store: UserStore, features: np.ndarray,
                 tasks: Sequence[TaskData], cfg: EvalConfig,
                 progress: Callable[[str], None] = print, start: float | None = None,
                 scratch_cache: ScratchCache | None = None) -> Outcome:
    """Every repeat × task × experiment × level × method of ``cfg`` for one model."""
    start = time.perf_counter() if start is None else start
    outcome = Outcome()
    adapters = Adapters(candidate, store, features, cfg, scratch_cache)
    seeds = cfg.seed_list
    for r, seed in enumerate(seeds):
        adapt_user = adaptation_mask(store.ids, seed, cfg.adaptation_fraction)  # [users]
        pool_rows = np.flatnonzero(adapt_user)  # the adaptation side, labelled or not
        pool_ids = store.ids[pool_rows]
        for t, task in enumerate(tasks, start=1):
            in_adaptation = adapt_user[task.rows]
            a_ids, a_labels, a_rows = (task.ids[in_adaptation], task.labels[in_adaptation],
                                       task.rows[in_adaptation])
            q_ids, q_labels, q_rows = (task.ids[~in_adaptation], task.labels[~in_adaptation],
                                       task.rows[~in_adaptation])
            head = f"{candidate.name} repeat {r + 1}/{len(seeds)} (seed {seed}), task " \
                   f"{t}/{len(tasks)} {task.name}"
            try:
                _need_both_classes(a_labels, f"task {task.name} adaptation set")
                _need_both_classes(q_labels, f"task {task.name} test set")
                trials = plan_trials(a_ids, a_labels, task.name, seed, cfg)
            except ValueError as exc:
                outcome.notes.append(f"{head}: skipped: {exc}")
                progress(f"[{_clock(start)}] {head}: skipped: {exc}")
                continue
            check_disjoint_users(q_ids, a_ids, task.name, "split")
            outcome.guards += 1
            cache: dict[tuple, tuple[float, float, np.ndarray | None, str, dict]] = {}
            progress(f"[{_clock(start)}] {head}: {len(a_ids)} adaptation users "
                     f"({int(a_labels.sum())} positive), {len(q_ids)} test users "
                     f"({int(q_labels.sum())} positive), {len(trials)} trials")
            for trial in trials:
                if trial.background:
                    seed_rows = a_rows[trial.positions]
                    negatives = unlabelled_background(pool_rows, pool_ids, seed_rows,
                                                      cfg.pu_background, f"{seed}:{task.name}")
                    support = Support(np.r_[seed_rows, negatives],
                                      np.r_[np.ones(len(seed_rows), np.int8),
                                            np.zeros(len(negatives), np.int8)], pool_rows)
                    note = ", ".join(x for x in (trial.note, f"{len(negatives)} unlabelled "
                                                 "negatives") if x)
                else:
                    support = Support(a_rows[trial.positions], a_labels[trial.positions],
                                      pool_rows)
                    note = trial.note
                s_ids = store.ids[support.rows]
                check_disjoint_users(q_ids, s_ids, task.name, trial.experiment)
                outcome.guards += 1
                adapt_seed = trial_seed(seed, task.name, support.rows)
                messages = []
                for method in trial.methods:
                    key = (method, adapt_seed, support.rows.tobytes(), support.labels.tobytes())
                    began = time.perf_counter()
                    fresh = key not in cache
                    if fresh:
                        extra: dict = {}
                        try:
                            scores, extra = adapters.scores(method, support, q_rows, adapt_seed)
                            scores = np.asarray(scores, dtype=np.float64)
                            status = "ok" if np.all(np.isfinite(scores)) else "non-finite scores"
                        except ValueError as exc:
                            scores, status = None, f"skipped: {exc}"
                        ok = scores is not None and status == "ok"
                        cache[key] = (auroc(q_labels, scores) if ok else float("nan"),
                                      average_precision(q_labels, scores) if ok
                                      else float("nan"), scores, status, extra)
                        seconds = time.perf_counter() - began
                    else:
                        seconds = 0.0
                    roc, pr, scores, status, extra = cache[key]
                    if status == "ok" and (note or extra):
                        details = [note] if note else []
                        if extra and extra["curve"]:
                            details.append(f"best epoch {extra['best_epoch']} of "
                                           f"{len(extra['curve']) - 1}")
                        elif extra:
                            details.append(f"{extra['best_epoch']} epochs, too few users "
                                           "for a validation fold")
                        status = f"ok ({'; '.join(details)})"
                    row = {
                        "task": task.name, "experiment": trial.experiment,
                        "level": float(trial.level), "method": method, "repeat": r,
                        "seed": seed, "auroc": roc, "aupr": pr,
                        "adaptation_users": int(len(s_ids)),
                        "adaptation_positives": int(support.labels.sum()),
                        "test_users": int(len(q_ids)), "test_positives": int(q_labels.sum()),
                        "seconds": round(seconds, 3), "status": status}
                    outcome.rows.append(row)
                    if extra and fresh:
                        outcome.learning_curves.append(
                            {k: row[k] for k in ("task", "experiment", "level", "method",
                                                 "repeat", "seconds")} | extra)
                    if trial.experiment == TABLE3 and r == 0 and scores is not None:
                        outcome.curves[(task.name, method)] = (q_labels.copy(), scores)
                    messages.append(f"{method} {pr:.3f}")
                progress(f"[{_clock(start)}] {head}: {trial.experiment} "
                         f"{_level_text(trial.experiment, trial.level)} "
                         f"({len(s_ids)} users): AUPR " + ", ".join(messages))
    return outcome


def _clock(start: float) -> str:
    seconds = int(time.perf_counter() - start)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def _level_text(experiment: str, level: float) -> str:
    if experiment == MASKING:
        return f"{level * 100:g}%"
    if experiment == IMBALANCE:
        return f"ratio {level:g}"
    if experiment in SEED_EXPERIMENTS:
        return f"{int(level)} seeds"
    return "all"


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
            store.add(batch)
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


# --------------------------------------------------------------------------- the driver


def evaluate(config: PipelineConfig, model_path: str | None = None, *,
             ds: dt.date | None = None, eval_cfg: EvalConfig | None = None,
             out: str | None = None, heatmaps: str | None = None,
             compare_published: bool = False,
             progress: Callable[[str], None] = print) -> dict:
    """Evaluate a model artifact on the config's unseen target tasks and write the report.

    ``model_path`` defaults to the published model. ``out`` defaults to
    ``<storage reports>/evaluation/<model version>``. Returns ``{"out", "files",
    "decision", "table3", "seconds"}``.
    """
    from model.artifact import load_artifact
    from model.inputs import check_manifest, read_manifest

    cfg = eval_cfg or EvalConfig()
    start = time.perf_counter()
    timing: dict[str, float] = {}
    ds = ds or config.window.end
    if ds is None:
        raise ValueError("no ds given and the config has no window.end")
    tasks = resolve_tasks(config, cfg)
    check_label_periods(config, ds, tasks)
    check_tasks_disjoint([t.name for t in config.source_tasks], tasks)

    published_pointer, published_error = None, None
    try:
        from metaprofile.registry import RegistryError, published_model
        published_pointer = published_model(config)
    except RegistryError as exc:
        published_error = str(exc)
    if model_path is None:
        if published_pointer is None:
            raise ValueError(f"no --model given and {published_error}")
        model_path = published_pointer["path"]

    heatmaps = heatmaps or f"{config.storage.uri('heatmaps')}/ds={ds.isoformat()}"
    manifest = read_manifest(heatmaps)
    check_manifest(manifest, config)
    spec = InputSpec.from_config(config)
    artifact = load_artifact(model_path, spec, manifest["spec"])
    check_tasks_disjoint(artifact.input_spec.tasks, tasks)
    progress(f"model {artifact.version} ({artifact.path}); heatmaps {heatmaps}; tasks "
             f"{len(tasks)}; seeds {list(cfg.seed_list)}; experiments {list(cfg.experiments)}")

    labels, accounting = load_target_labels(config, tasks)
    store, features, embeddings = read_users(heatmaps, manifest, spec, config, artifact.model,
                                             cfg, progress)
    timing["read_and_embed"] = time.perf_counter() - start
    progress(f"[{_clock(start)}] {len(store)} users read once and embedded; sparse store "
             f"{store.nbytes / 1e6:.1f} MB, {features.shape[1]} aggregate features")
    data = task_data(labels, store, tasks)
    for task in data:
        accounting[task.name].update({"without_heatmaps": task.missing,
                                      "evaluated_users": int(len(task.ids)),
                                      "positives": int(task.labels.sum())})
    candidate = ModelUnderTest("candidate", artifact.path, artifact.version, artifact.model,
                               artifact.model_config, embeddings)
    began = time.perf_counter()
    scratch_cache = None
    if cfg.scratch_cache:
        scratch_cache = ScratchCache(
            cfg.scratch_cache_dir or storage.join(config.storage.uri("reports"), "evaluation",
                                                  "_scratch_cache"),
            manifest["sha256"], artifact.model_config.to_dict())
    outcome = run_protocol(candidate, store, features, data, cfg, progress, start,
                           scratch_cache)
    cache_stats = None if scratch_cache is None else {
        "root": scratch_cache.root, "hits": scratch_cache.hits, "misses": scratch_cache.misses}
    timing["candidate_trials"] = time.perf_counter() - began

    published_result, published_summary = None, None
    if compare_published and published_pointer is not None:
        if published_pointer["path"].rstrip("/") == artifact.path.rstrip("/"):
            published_summary = {"path": artifact.path, "version": artifact.version,
                                 **model_summary(outcome.rows, tasks)}
        else:
            began = time.perf_counter()
            try:
                published_result = _evaluate_published(published_pointer, spec, manifest,
                                                       store, features, data, cfg, progress,
                                                       start, deployed_method(config))
                published_summary = {"path": published_pointer["path"],
                                     "version": published_pointer.get("version"),
                                     **model_summary(published_result.rows, tasks)}
            except (ValueError, FileNotFoundError) as exc:
                published_error = f"published model {published_pointer['path']} cannot be " \
                                  f"evaluated: {exc}"
                progress(published_error)
            timing["published_trials"] = time.perf_counter() - began

    candidate_summary = {"path": artifact.path, "version": artifact.version,
                         **model_summary(outcome.rows, tasks)}
    decision = decide(candidate_summary, published_summary,
                      published_error if compare_published else None,
                      compared=compare_published, method=deployed_method(config))
    timing["total"] = time.perf_counter() - start
    summary = summarise(outcome.rows)
    result = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.name, "ds": ds.isoformat(), "heatmaps": heatmaps,
        "data_manifest_sha256": manifest["sha256"],
        "model": {"path": artifact.path, "version": artifact.version,
                  "model_config": artifact.model_config.to_dict(),
                  "trained_on_manifest_sha256": artifact.data_manifest_sha256,
                  "source_tasks": list(artifact.input_spec.tasks)},
        "eval_config": cfg.to_dict(), "tasks": tasks, "labels": accounting,
        "users": len(store), "aggregate_features": aggregate_feature_names(spec),
        "leakage_checks": {"label_periods_after_window": True, "tasks_disjoint": True,
                           "user_disjointness_checks_passed": outcome.guards},
        "rows": outcome.rows, "summary": summary,
        "table3": table3(summary, tasks),
        "table3_fine_tuned": table3(summary, tasks, primary=FINE_TUNED),
        "curves": {e: over_tasks(outcome.rows, e) for e in cfg.experiments if e != TABLE3},
        "notes": outcome.notes, "learning_curves": outcome.learning_curves,
        "scratch_cache": cache_stats,
        "published": None if published_result is None else {
            "path": published_summary["path"], "version": published_summary["version"],
            "rows": published_result.rows, "summary": summarise(published_result.rows)},
        "decision": decision, "timing_seconds": {k: round(v, 1) for k, v in timing.items()},
    }
    result["targets"] = check_targets(result["table3"], result["curves"])  # the bar
    out = out or storage.join(config.storage.uri("reports"), "evaluation", artifact.version)
    files = write_outputs(out, result, outcome.curves)
    progress(f"[{_clock(start)}] wrote {out}: {', '.join(files)}")
    progress(f"decision: better={decision['better']}: {decision['reason']}")
    return {"out": out, "files": files, "decision": decision, "table3": result["table3"],
            "seconds": timing["total"]}


def _evaluate_published(pointer: dict, spec: InputSpec, manifest: dict, store: UserStore,
                        features: np.ndarray, data: Sequence[TaskData], cfg: EvalConfig,
                        progress: Callable[[str], None], start: float, method: str = ZERO
                        ) -> Outcome:
    """The published model under the same protocol and seeds, for the decision's metric:
    Table 3 with ``method``, the deployed head (:func:`deployed_method`)."""
    from model.artifact import load_artifact

    artifact = load_artifact(pointer["path"], spec, manifest["spec"])
    check_tasks_disjoint(artifact.input_spec.tasks, [t.name for t in data])
    progress(f"[{_clock(start)}] published model {artifact.version}: embedding "
             f"{len(store)} users")
    embeddings = embed_rows(artifact.model, store, np.arange(len(store)), cfg.embed_batch_size)
    published = ModelUnderTest("published", artifact.path, artifact.version, artifact.model,
                               artifact.model_config, embeddings)
    same_protocol = dataclasses.replace(cfg, experiments=(TABLE3,), methods=(method,))
    return run_protocol(published, store, features, data, same_protocol, progress, start)


# --------------------------------------------------------------------------- outputs


def rows_to_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and k in ("auroc", "aupr")
                             else v) for k, v in row.items()})
    return buffer.getvalue()


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


def write_outputs(out: str, result: dict, curves: dict) -> list[str]:
    """results.json, results.csv, decision.json, the PNG plots and report.md under ``out``
    (replaced whole: staged and renamed on local disk, ``_SUCCESS`` last elsewhere)."""
    from model import eval_report

    def write_all(directory: str) -> list[str]:
        images = eval_report.plot_all(directory, result, curves)
        documents = {"results.json": _json_safe(result),
                     "decision.json": _json_safe(result["decision"])}
        for name, document in documents.items():
            with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=2, sort_keys=True, allow_nan=False)
                fh.write("\n")
        with open(os.path.join(directory, "results.csv"), "w", encoding="utf-8") as fh:
            fh.write(rows_to_csv(result["rows"]))
        with open(os.path.join(directory, "report.md"), "w", encoding="utf-8") as fh:
            fh.write(eval_report.render_markdown(result, images))
        return sorted(["results.json", "decision.json", "results.csv", "report.md", *images])

    if storage.is_local(out):
        with storage.atomic_directory(out) as staging:
            return write_all(staging)
    staging = tempfile.mkdtemp(prefix="metaprofile-eval-")
    try:
        files = write_all(staging)
        for name in files:
            with open(os.path.join(staging, name), "rb") as fh:
                storage.write_bytes(fh.read(), storage.join(out, name))
        storage.write_bytes(b"", storage.join(out, storage.SUCCESS))
        return files
    finally:
        shutil.rmtree(staging, ignore_errors=True)
