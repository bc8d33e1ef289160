"""Leakage guards, and the deterministic subsets of the adaptation users that each experiment level
draws."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Iterable, Sequence

import numpy as np

from evaluation.settings import LeakageError
from schemas.config import PipelineConfig

log = logging.getLogger(__name__)

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
