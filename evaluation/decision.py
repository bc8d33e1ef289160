"""The product's targets, checked on a summary, and the publish decision against the deployed
model."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from evaluation.settings import (
    AUTO,
    MASKING,
    META_METHODS,
    METHOD_LABELS,
    METHODS,
    PROBE,
    SCRATCH,
    SEEDS_PU,
    TABLE3,
    ZERO,
)
from evaluation.summary import summarise
from model.baselines import CLASSIC_METHODS
from schemas.config import PipelineConfig

log = logging.getLogger(__name__)

PAPER_AVERAGE_GROWTH = 0.08  # the paper's average AUPR growth over normal training
TARGET_GROWTH = 0.15  # zero-training's average AUPR growth over scratch, the bar
# The ratio of the best Meta-Profile method's mean AUPR to the best classic baseline's
# (``auto_head`` is on neither side): a clear win where few-shot learning matters, the PU
# campaign setting at FEW_SHOT_PU seeds, with the lower end of its 95 % interval above 1; and
# never worse than the DMP from MANY_SHOT_PU seeds and on the whole adaptation set.
FEW_SHOT_RATIO = 1.10
FEW_SHOT_PU = (10, 100)  # seed counts, inclusive
NEVER_WORSE_RATIO = 1.0
MANY_SHOT_PU = (300, 1000)
TARGET_SCRATCH_AUROC = 0.55  # a from-scratch baseline that learns
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


def ratio_checks(entries: Sequence[dict], levels: Sequence, bar: float,
                 intervals: Sequence[dict] | None = None, need_low_above: float | None = None
                 ) -> tuple[list[str], list[str]]:
    """Per level: ``"level: best-meta / best-classic = ratio [low, high]"`` texts, and the
    levels that miss ``bar`` (or, with ``need_low_above``, whose interval's lower end is not
    above it, or has no interval), or lack a method of either kind."""
    means = {(e["level"], e["method"]): e["aupr_mean"] for e in entries}
    spans = {i["level"]: i for i in intervals or ()}
    texts, missed = [], []
    for level in levels:
        meta, meta_value = _best(means, level, META_METHODS)
        classic, classic_value = _best(means, level, CLASSIC_METHODS)
        if meta is None or classic is None:
            missed.append(f"{level:g}")
            texts.append(f"{level:g}: not measured")
            continue
        ratio = meta_value / classic_value if classic_value else float("nan")
        span = spans.get(level)
        low = span["ratio_low"] if span else float("nan")
        texts.append(f"{level:g}: {meta} {meta_value:.3f} / {classic} {classic_value:.3f} = "
                     f"{ratio:.2f}" + (f" [{low:.2f}, {span['ratio_high']:.2f}]" if span
                                       else ""))
        if not ratio >= bar or need_low_above is not None and not low > need_low_above:
            missed.append(f"{level:g}")
    return texts, missed


def check_targets(table: dict, curves: dict, intervals: dict | None = None) -> list[dict]:
    """The learning issue's targets, each ``{"target", "met", "evidence"}``.

    ``met`` is ``None`` when the run did not measure what the target needs (an experiment,
    a method, or for the few-shot target the bootstrap intervals). The figures are means
    over repeats (of means over tasks for the sweeps); ``intervals`` (experiment → the
    entries of :func:`evaluation.intervals.ratio_intervals`) adds each ratio's 95 %
    interval."""
    intervals = intervals or {}
    out = []
    average = table.get("average", {})
    rows = table.get("rows", [])
    cells = {(1.0, m): average.get(f"{m}_aupr", np.nan) for m in METHODS}
    whole = list(curves.get(TABLE3) or [])  # Table 3 means over tasks, without scratch too
    if not whole:
        whole = [{"level": lv, "method": m, "aupr_mean": v} for (lv, m), v in cells.items()]
        cells = {(1.0, e["method"]): e["aupr_mean"] for e in whole}
    texts, missed = ratio_checks(whole, [1.0], NEVER_WORSE_RATIO, intervals.get(TABLE3))
    out.append({"target": "best Meta-Profile method's mean AUPR at least "
                          f"{NEVER_WORSE_RATIO:g}x the best classic baseline's on the whole "
                          "adaptation set (Table 3)",
                "met": None if texts[0].endswith("not measured") else not missed,
                "evidence": texts[0].replace("1: ", "", 1)})
    for (low, high), bar, strict in ((FEW_SHOT_PU, FEW_SHOT_RATIO, True),
                                     (MANY_SHOT_PU, NEVER_WORSE_RATIO, False)):
        entries = [e for e in curves.get(SEEDS_PU) or [] if low <= e["level"] <= high]
        levels = sorted({e["level"] for e in entries})
        target = (f"{SEEDS_PU}: best Meta-Profile method's mean AUPR at least {bar:g}x the "
                  f"best classic baseline's at every seed count from {low} to {high}"
                  + (", the lower end of its 95 % interval above 1" if strict else ""))
        if not levels:
            out.append({"target": target, "met": None,
                        "evidence": f"no {SEEDS_PU} level between {low} and {high}"})
            continue
        spans = intervals.get(SEEDS_PU)
        texts, missed = ratio_checks(entries, levels, bar, spans, 1.0 if strict else None)
        out.append({"target": target,
                    "met": None if strict and not spans else not missed,
                    "evidence": "; ".join(texts) + (f" (missed at {', '.join(missed)})"
                                                    if missed else "")
                    + (" (no bootstrap intervals in this run)" if strict and not spans
                       else "")})
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
    out.append(auto_head_target(cells, curves.get(SEEDS_PU) or []))
    return out


def auto_head_target(table3_cells: dict, pu_entries: Sequence[dict]) -> dict:
    """``auto_head`` (the nightly ``lookalike.head: auto``) is never worse than the best
    classic baseline: on the whole adaptation set and at every ``seeds_pu`` seed count."""
    target = (f"{AUTO} mean AUPR at least {NEVER_WORSE_RATIO:g}x the best classic baseline's "
              f"on the whole adaptation set and at every {SEEDS_PU} seed count")
    settings = [("whole set", {m: v for (_, m), v in table3_cells.items()})]
    for level in sorted({e["level"] for e in pu_entries}):
        settings.append((f"{level:g} PU seeds", {e["method"]: e["aupr_mean"]
                                                 for e in pu_entries if e["level"] == level}))
    texts, missed, measured = [], [], 0
    for name, means in settings:
        classic, classic_value = _best({(0, m): v for m, v in means.items()}, 0,
                                       CLASSIC_METHODS)
        mine = means.get(AUTO, float("nan"))
        if classic is None or not np.isfinite(mine):
            continue
        measured += 1
        ratio = mine / classic_value if classic_value else float("nan")
        texts.append(f"{name}: {mine:.3f} / {classic} {classic_value:.3f} = {ratio:.2f}")
        if not ratio >= NEVER_WORSE_RATIO:
            missed.append(name)
    if not measured:
        return {"target": target, "met": None, "evidence": f"no {AUTO} result"}
    return {"target": target, "met": not missed,
            "evidence": "; ".join(texts) + (f" (missed: {', '.join(missed)})" if missed
                                            else "")}


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
    ``lookalike.head: probe``, zero-training for ``prototype``, ``auto_head`` for ``auto``."""
    return {"probe": PROBE, "auto": AUTO}.get(config.lookalike.head, ZERO)


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
