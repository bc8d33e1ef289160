"""Per-level means over repeats and tasks, and the paper's Table 3."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from evaluation.settings import MASKING, METHODS, SCRATCH, TABLE3, ZERO

log = logging.getLogger(__name__)

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
    for (level, repeat, _task), cell in by_cell.items():
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
