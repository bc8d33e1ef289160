"""Why a segment: the features that drive a campaign's head, and its reach/precision curve.

Both are pure numpy over what the nightly jobs already hold, for the segment's manifest
and its ``why.png`` (``jobs/export.py``):

* :func:`top_features`: the head's largest standardised weights, named. For a probe (a
  logistic regression folded onto raw columns) a weight times its column's standard
  deviation in the background is the change in log-odds per standard deviation; for a
  centroid head, the seeds' centroid in standard deviations of the background. The
  prototypes have no per-feature weight.
* :func:`reach_curve`: at fixed reaches, the held-out seeds' recall at the cut-off that
  reaches that share of the scored users, the lift over a random segment of that size,
  and the precision it implies at the seeds' prevalence (``jobs/export.precision_estimate``).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

REACHES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
CHANNEL = re.compile(r"^(?P<modality>[^/]+)/channel_(?P<index>\d+)$")


def feature_names(embedding_dim: int, features: Sequence[str],
                  channels: Mapping[str, Sequence[str]]) -> list[str]:
    """The names of a head's columns: ``embedding[i]``, then the aggregate features, a
    ``<modality>/channel_<i>`` named by its channel in the config (``channels``: per
    modality, its channel names in order)."""
    def name(feature: str) -> str:
        m = CHANNEL.match(feature)
        if not m or m["modality"] not in channels:
            return feature
        names = channels[m["modality"]]
        index = int(m["index"])
        return f"{m['modality']}/{names[index]}" if index < len(names) else feature
    return [f"embedding[{i}]" for i in range(embedding_dim)] + [name(f) for f in features]


def top_features(head: Mapping, background: np.ndarray, names: Sequence[str],
                 embedding_dim: int, k: int = 10) -> list[dict]:
    """The ``k`` columns with the largest standardised weights of a probe or centroid head
    (``background``: the ``[n, E + F]`` rows whose statistics standardise them), largest
    first, as ``{"feature", "weight"}``; empty for any other head."""
    if head.get("kind") == "probe":
        std = np.asarray(background, np.float64).std(axis=0)
        weights = np.asarray(head["weights"], np.float64) * std
        labels = list(names)
    elif head.get("kind") == "centroid":
        weights = np.asarray(head["centroid"], np.float64)
        labels = list(names[embedding_dim:])
    else:
        return []
    order = np.argsort(-np.abs(weights), kind="stable")[:k]
    return [{"feature": labels[i], "weight": round(float(weights[i]), 4)} for i in order
            if weights[i] != 0]


def reach_curve(histogram: Sequence[int], holdout_scores: Sequence[float],
                prevalence: float, reaches: Sequence[float] = REACHES) -> list[dict]:
    """Per reach: the score cut-off that selects about that share of the scored users (the
    lower edge of the highest histogram bin that, with the bins above it, holds at least
    that share: a reach is met at bin resolution), the held-out seeds' recall at it, the
    lift over a random segment of that size and the estimated precision (lift ×
    prevalence, at most 1). Empty without scored users."""
    counts = np.asarray(histogram, np.float64)
    total = counts.sum()
    if total == 0:
        return []
    bins = len(counts)
    above = np.cumsum(counts[::-1])[::-1] / total  # share of users in bin b or higher
    held = np.asarray(holdout_scores, np.float64)
    out = []
    for reach in reaches:
        # the highest bin whose users, with every higher bin's, reach at least `reach`
        candidates = np.flatnonzero(above >= reach)
        b = int(candidates.max()) if candidates.size else 0
        cutoff, actual = b / bins, float(above[b])
        recall = float((held >= cutoff).mean()) if held.size else None
        lift = None if recall is None else recall / actual
        out.append({"reach": round(actual, 6), "cutoff_score": cutoff, "recall": recall,
                    "lift": lift, "estimated_precision":
                    None if lift is None else min(1.0, lift * prevalence)})
    return out


def why_png(campaign: str, curve: Sequence[Mapping], features: Sequence[Mapping],
            segment_reach: float | None) -> bytes:
    """A campaign's ``why.png``: its reach/precision curve (held-out recall and estimated
    precision against reach, the segment's reach marked) beside its head's top features."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    points = [p for p in curve if p["recall"] is not None]
    if points:
        reach = [100 * p["reach"] for p in points]
        left.plot(reach, [100 * p["recall"] for p in points], "o-", label="held-out recall")
        left.plot(reach, [100 * p["estimated_precision"] for p in points], "s--",
                  label="estimated precision")
        left.set_xscale("log")
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "no held-out seeds", ha="center", va="center",
                  transform=left.transAxes)
    if segment_reach:
        left.axvline(100 * segment_reach, color="grey", linestyle=":", label="segment")
    left.set_xlabel("reach (% of scored users)")
    left.set_ylabel("%")
    left.set_title(f"{campaign}: reach and precision", fontsize=10)
    if features:
        shown = list(features)[::-1]
        right.barh([f["feature"] for f in shown], [f["weight"] for f in shown],
                   color=["#1f77b4" if f["weight"] > 0 else "#d62728" for f in shown])
        right.tick_params(axis="y", labelsize=7)
        right.set_xlabel("standardised weight")
    else:
        right.text(0.5, 0.5, "this head has no per-feature weights", ha="center",
                   va="center", transform=right.transAxes)
    right.set_title("what the head weighs most", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
