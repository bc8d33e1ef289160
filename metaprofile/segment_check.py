"""What a DMP would have exported from the same seeds, for the main job's side-by-side.

For every exported campaign of a night, :func:`dmp_lifts` rebuilds the segment the way a DMP
builds a lookalike from a few dozen aggregates: the evaluation's ``logreg`` baseline (a
cross-validated logistic regression on the aggregate features alone,
``model.baselines.fit_linear_head``), fitted on the same support seeds against the same
kind of negatives as the campaign's probe head (its explicit negatives and
``lookalike.background_users`` unlabelled users that are none of its seeds; drawn here with
a fixed numpy seed, where ``jobs/campaigns.py`` draws by a hash in Spark). The segment has
the exported one's size over the same eligible users, and its lift is measured on the same
held-out seeds: the recall of the held-out seeds at the segment's cut-off over its reach.

It reads the night's outputs with pyarrow only (embeddings with their features, the
supports' members, the segments' manifests); no Spark, no model.
"""
from __future__ import annotations

import datetime as dt
import glob

import numpy as np
import pyarrow.dataset as pads

from common import catalog, storage
from schemas.contracts import SUPPORT_MEMBERS
from schemas.manifests import SUPPORT, SupportDocument


def _table(uri: str, columns: list[str]):
    fs, path = storage.resolve(uri)
    return pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=columns)


def holdout_lift(scores: np.ndarray, eligible: np.ndarray, held: np.ndarray, size: int
                 ) -> float | None:
    """Recall of the held-out rows at the cut-off of the ``size`` best eligible rows, over
    the segment's reach (``size`` / eligible rows); ``None`` without held-out rows."""
    pool = scores[eligible]
    if not held.any() or size < 1 or pool.size == 0:
        return None
    size = min(size, pool.size)
    cutoff = np.partition(pool, pool.size - size)[pool.size - size]
    recall = float((scores[held] >= cutoff).mean())
    return recall / (size / pool.size)


def top_eligible(scores: np.ndarray, eligible: np.ndarray, size: int) -> np.ndarray:
    """The rows of the ``size`` best-scored eligible rows (ties by row order)."""
    pool = np.flatnonzero(eligible)
    order = np.argsort(-scores[pool], kind="stable")
    return pool[order[:max(size, 0)]]


def dmp_lifts(config, ds: dt.date, seed: int = 0) -> dict[str, float | None]:
    """Per exported campaign of ``ds``: the held-out lift of the DMP's segment."""
    return {c: None if s is None else s["lift"] for c, s in dmp_segments(config, ds, seed).items()}


def dmp_segments(config, ds: dt.date, seed: int = 0) -> dict[str, dict | None]:
    """Per exported campaign of ``ds``: the DMP's segment, the exported selection's size
    (segment and control group), as ``{"lift": held-out lift, "members": user ids}``; None
    where the DMP could fit no head."""
    from jobs.export import forbidden_users
    from model.baselines import fit_linear_head
    embeddings = _table(catalog.partition(config, "embeddings", ds),
                        ["user_id", "features"])
    if "features" not in embeddings.column_names:
        return {}
    ids = np.asarray(embeddings.column("user_id").to_pylist(), dtype=object)
    features = np.stack(embeddings.column("features").to_numpy(zero_copy_only=False)
                        ).astype(np.float64)  # [U, F]
    row_of = {u: i for i, u in enumerate(ids)}
    root = catalog.partition(config, "segments", ds)
    supports = catalog.partition(config, "supports", ds)
    lifts: dict[str, dict | None] = {}
    for path in sorted(glob.glob(f"{root}/campaign=*/_manifest.json")):
        manifest = storage.read_json(path)
        campaign = manifest["campaign_id"]
        where = f"{catalog.campaign_path(supports, campaign)}/{SUPPORT}"
        support = SupportDocument.from_json(storage.read_bytes(where), where)
        members = _table(f"{catalog.campaign_path(supports, campaign)}/members", SUPPORT_MEMBERS.names)
        rows = {role: np.array([row_of[u] for u, r in zip(
            members.column("user_id").to_pylist(), members.column("role").to_pylist())
            if r == role and u in row_of], np.int64) for role in ("support", "negative",
                                                                   "holdout")}
        forbidden = forbidden_users(config, campaign, list(support.exclude_campaigns))
        listed = np.array([u in forbidden for u in ids])  # seeds and opted-out users
        rng = np.random.default_rng(seed)
        unlabelled = np.flatnonzero(~listed)
        background = rng.choice(unlabelled, min(config.lookalike.background_users,
                                                unlabelled.size), replace=False)
        if rows["support"].size == 0 or background.size + rows["negative"].size == 0:
            lifts[campaign] = None
            continue
        train = np.concatenate([rows["support"], rows["negative"], background])
        labels = np.r_[np.ones(rows["support"].size),
                       np.zeros(rows["negative"].size + background.size)].astype(np.int8)
        try:
            head = fit_linear_head(features[train], labels, features[background], seed)
        except ValueError:  # e.g. a single class left: no DMP segment to compare with
            lifts[campaign] = None
            continue
        held = np.zeros(len(ids), bool)
        held[rows["holdout"]] = True
        selected = int(manifest["counts"]["selected"]) + int(manifest["counts"].get("control", 0))
        scores = head.decision(features)
        lifts[campaign] = {"lift": holdout_lift(scores, ~listed, held, selected),
                           "members": ids[top_eligible(scores, ~listed, selected)].tolist()}
    return lifts
