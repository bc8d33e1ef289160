"""The trials of one task and repeat, and the loop that scores every method on each
(:func:`run_protocol`)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from common import storage
from evaluation.intervals import bootstrap_weights, percentile_interval, replicate_aupr
from evaluation.metrics import average_precision
from evaluation.sampling import (
    _classes,
    _need_both_classes,
    adaptation_mask,
    check_disjoint_users,
    imbalance_subsample,
    mask_labels,
    max_imbalance_total,
    positive_seeds,
    seed_subsample,
    unlabelled_background,
)
from evaluation.settings import (
    AUTO,
    EXPERIMENTS,
    FINE_TUNED,
    IMBALANCE,
    MASKING,
    METHODS,
    PROBE,
    SCRATCH,
    SEED_EXPERIMENTS,
    SEEDS,
    SEEDS_PU,
    TABLE3,
    TASKS,
    ZERO,
    EvalConfig,
)
from evaluation.store import TaskData, UserStore
from model.baselines import CLASSIC_METHODS, LOGREG, classic_scores, probe_scores
from model.metrics import auroc

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- the protocol


@dataclass
class ModelUnderTest:
    """A model with what the protocol needs from it."""

    name: str  # "candidate" or "published"
    path: str
    version: str
    model: object  # MetaProfileModel
    model_config: object  # ModelConfig
    embeddings: np.ndarray  # [users, E] of every store row, meta-trained weights
    # [users, T]: the network's source-task scores of every store row (model/task_scores.py)
    task_scores: np.ndarray | None = None


@dataclass
class Outcome:
    rows: list[dict] = field(default_factory=list)
    curves: dict = field(default_factory=dict)  # (task, method) -> (labels, scores), repeat 0
    notes: list[str] = field(default_factory=list)
    guards: int = 0  # user-disjointness checks passed
    # trained methods: {task, experiment, level, method, repeat, best_epoch, curve}
    learning_curves: list[dict] = field(default_factory=list)
    # (task, experiment, level, method, repeat) -> [B] AUPRs on the shared bootstrap copies
    # of the test set (evaluation/intervals.py), and the AUPR on the test set itself
    replicates: dict = field(default_factory=dict)
    points: dict = field(default_factory=dict)


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


def auto_head_scores(candidate: ModelUnderTest, features: np.ndarray, support: Support,
                     query_rows: np.ndarray, seed: int) -> np.ndarray:
    """``auto_head``: the nightly ``lookalike.head: auto`` rule on a trial's support (every
    label-0 support user is a negative prototype's member, as in zero-training)."""
    from model.auto_head import centroid_scores, fit_auto_head
    from model.baselines import LinearHead
    from model.scoring import RelationWeights
    e = candidate.embeddings
    rows = np.hstack([e[support.rows], features[support.rows]])
    reference = np.hstack([e[support.reference], features[support.reference]])
    head = fit_auto_head(rows, support.labels, reference, e.shape[1],
                         RelationWeights.from_module(candidate.model.relation),
                         support.labels == 0, seed)
    if head["kind"] == "probe":
        return LinearHead.from_dict(head).decision(np.hstack([e[query_rows],
                                                              features[query_rows]]))
    if head["kind"] == "centroid":
        return centroid_scores(head, features[query_rows])
    return zero_training_scores(candidate.model, e[support.rows], support.labels,
                                e[query_rows])


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
        if method == AUTO:
            return auto_head_scores(c, f, support, query_rows, seed), {}
        if method == TASKS:
            if c.task_scores is None:
                raise ValueError(f"{method} needs the model's source-task scores; none were "
                                 "computed for this model")
            g = np.hstack([c.task_scores, f])
            return classic_scores(LOGREG, g[support.rows], support.labels, g[query_rows],
                                  g[support.reference], seed), {}
        if method == PROBE:
            return probe_scores(c.embeddings[support.rows], f[support.rows], support.labels,
                                c.embeddings[query_rows], f[query_rows],
                                c.embeddings[support.reference], f[support.reference],
                                seed), {}
        adapt_cfg = self._adapt_config(method, seed)
        support = capped_support(support, self.cfg.trained_max_users, self.store.ids, seed)
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
                 "curve": [[e, round(v, 5)] for e, v in learner.curve],
                 "adapted_users": int(len(support.rows))}
        if key is not None:
            self.scratch_cache.put(key, np.asarray(scores, dtype=np.float64), extra)
        return scores, extra


def capped_support(support: Support, cap: int | None, ids: np.ndarray, seed: int) -> Support:
    """``support`` cut to at most ``cap`` users for a trained method: per class the same
    share of its users, in hash order (``mask_labels``), so the prevalence is kept and a
    smaller cap keeps a subset of a larger one."""
    if cap is None or len(support.rows) <= cap:
        return support
    kept = mask_labels(ids[support.rows], support.labels, cap / len(support.rows),
                       f"cap:{seed}")
    return Support(support.rows[kept], support.labels[kept], support.reference)


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
            copies = (bootstrap_weights(q_labels, cfg.bootstrap_replicates, seed, task.name)
                      if cfg.bootstrap_replicates else None)  # [B, test users], shared
            cache: dict[tuple, tuple] = {}
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
                                      else float("nan"), scores, status, extra,
                                      replicate_aupr(q_labels, scores, copies)
                                      if ok and copies is not None else None)
                        seconds = time.perf_counter() - began
                    else:
                        seconds = 0.0
                    roc, pr, scores, status, extra, replicated = cache[key]
                    if status == "ok" and (note or extra):
                        details = [note] if note else []
                        if extra and extra.get("adapted_users", len(s_ids)) < len(s_ids):
                            details.append(f"adapted on {extra['adapted_users']} of "
                                           f"{len(s_ids)} users (trained_max_users)")
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
                    if replicated is not None:
                        row["aupr_low"], row["aupr_high"] = percentile_interval(replicated)
                        where = (task.name, trial.experiment, float(trial.level), method, r)
                        outcome.replicates[where], outcome.points[where] = replicated, pr
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
