"""The evaluation report: PNG plots (matplotlib, Agg) and ``report.md`` from the result
dict that ``evaluation.run.evaluate`` builds. Nothing here computes a metric; it only lays out
what ``results.json`` holds, in the style of the paper's Table 3 and Figures 3 and 4."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from evaluation.metrics import precision_recall_curve, roc_curve
from evaluation.settings import (
    EXTREME_LEVELS,
    FINE_TUNED,
    IMBALANCE,
    MASKING,
    METHOD_COLORS,
    METHOD_LABELS,
    METHODS,
    SCRATCH,
    SEEDS,
    SEEDS_PU,
    TABLE3,
    ZERO,
)

TABLE3_PNG = "table3.png"
MASKING_PNG = "figure3_label_masking.png"
IMBALANCE_PNG = "figure4_class_imbalance.png"
SEEDS_PNG = "seed_sweep.png"
SEEDS_PU_PNG = "seed_sweep_pu.png"
ROC_PNG = "roc_curves.png"
PR_PNG = "pr_curves.png"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def moving_average(values: Sequence[float], period: int = 2) -> np.ndarray:
    """The trailing ``period``-point moving average; the first ``period − 1`` points are NaN
    (as the dashed lines of the paper's Figure 4 start at the second ratio)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    for i in range(period - 1, len(values)):
        out[i] = values[i - period + 1:i + 1].mean()
    return out


def _series(entries: Sequence[dict], method: str, levels: Sequence[float], metric: str):
    by_level = {e["level"]: e for e in entries if e["method"] == method}
    mean = np.array([by_level.get(lv, {}).get(f"{metric}_mean", np.nan) for lv in levels],
                    dtype=np.float64)
    std = np.array([by_level.get(lv, {}).get(f"{metric}_std", np.nan) for lv in levels],
                   dtype=np.float64)
    return np.nan_to_num(mean, nan=np.nan), np.nan_to_num(std, nan=0.0)


def _methods(entries: Sequence[dict]) -> list[str]:
    present = {e["method"] for e in entries}
    return [m for m in METHODS if m in present]


def _level_axis(ax, levels, labels, title, ylabel):
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels(labels)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_masking(path: str, entries: Sequence[dict]) -> None:
    plt = _pyplot()
    levels = sorted({e["level"] for e in entries}, reverse=True)
    groups = [("moderate", [lv for lv in levels if lv > max(EXTREME_LEVELS)]),
              ("extreme", [lv for lv in levels if lv <= max(EXTREME_LEVELS)])]
    groups = [(name, lv) for name, lv in groups if lv]
    fig, axes = plt.subplots(2, len(groups), figsize=(6 * len(groups), 7.5), squeeze=False)
    for row, metric in enumerate(("aupr", "auroc")):
        for col, (name, group) in enumerate(groups):
            ax = axes[row][col]
            for method in _methods(entries):
                mean, std = _series(entries, method, group, metric)
                ax.errorbar(range(len(group)), mean, yerr=std, marker="o", capsize=3,
                            color=METHOD_COLORS[method], label=METHOD_LABELS[method])
            _level_axis(ax, group, [f"{lv * 100:g}%" for lv in group],
                        f"{name} label masking", metric.upper())
            ax.set_xlabel("labels available (share of the adaptation set)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Figure 3: robustness to data insufficiency (mean over tasks; ± std over "
                 "repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_imbalance(path: str, entries: Sequence[dict]) -> None:
    plt = _pyplot()
    levels = sorted({e["level"] for e in entries})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("aupr", "auroc")):
        for method in _methods(entries):
            mean, std = _series(entries, method, levels, metric)
            ax.errorbar(range(len(levels)), mean, yerr=std, marker="o", capsize=3,
                        color=METHOD_COLORS[method], label=METHOD_LABELS[method])
            ax.plot(range(len(levels)), moving_average(mean), linestyle="--",
                    color=METHOD_COLORS[method], alpha=0.7)
        _level_axis(ax, levels, [f"{lv:g}" for lv in levels],
                    f"{metric.upper()} (dashed: 2-period moving average)", metric.upper())
        ax.set_xlabel("imbalance ratio = positives / negatives in the adaptation set")
    axes[0].legend(fontsize=8)
    fig.suptitle("Figure 4: robustness to class imbalance (mean over tasks; ± std over repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_seeds(path: str, entries: Sequence[dict], pu: bool = False) -> None:
    plt = _pyplot()
    levels = sorted({e["level"] for e in entries})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("aupr", "auroc")):
        for method in _methods(entries):
            mean, std = _series(entries, method, levels, metric)
            ax.errorbar(levels, mean, yerr=std, marker="o", capsize=3,
                        color=METHOD_COLORS[method], label=METHOD_LABELS[method])
        ax.set_xscale("log")
        ax.set_xticks(levels)
        ax.set_xticklabels([f"{int(lv)}" for lv in levels])
        ax.set_xlabel("positive seeds, negatives drawn from the unlabelled users" if pu
                      else "positive seeds (plus as many labelled negatives)")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Meta-Profile vs classic DMP baselines{' (PU)' if pu else ''} (mean over "
                 "tasks; ± std over repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_seeds_pu(path: str, entries: Sequence[dict]) -> None:
    plot_seeds(path, entries, pu=True)


def plot_table3(path: str, table: dict, tasks: Sequence[str]) -> None:
    plt = _pyplot()
    rows = {r["task"]: r for r in table["rows"]}
    tasks = [t for t in tasks if t in rows]
    methods = table["methods"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(tasks) + 3), 8))
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes, ("aupr", "auroc")):
        for i, method in enumerate(methods):
            means = [rows[t].get(f"{method}_{metric}", np.nan) for t in tasks]
            stds = [rows[t].get(f"{method}_{metric}_std", 0.0) for t in tasks]
            ax.bar(np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width, means, width,
                   yerr=stds, capsize=2, color=METHOD_COLORS[method],
                   label=METHOD_LABELS[method])
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(metric.upper())
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3)
    axes[0].set_title("Table 3: every unseen target task, whole adaptation set (± std over "
                      "repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: str, curves: dict, tasks: Sequence[str], kind: str) -> None:
    plt = _pyplot()
    tasks = [t for t in tasks if any(k[0] == t for k in curves)]
    cols = min(4, max(1, len(tasks)))
    nrows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    for ax, task in zip(axes.ravel(), tasks):
        prevalence = None
        for method in METHODS:
            if (task, method) not in curves:
                continue
            labels, scores = curves[(task, method)]
            prevalence = float(np.mean(labels))
            if kind == "roc":
                x, y = roc_curve(labels, scores)
                ax.plot(x, y, color=METHOD_COLORS[method], label=METHOD_LABELS[method], lw=1.2)
            else:
                x, y = precision_recall_curve(labels, scores)
                ax.step(x, y, where="post", color=METHOD_COLORS[method],
                        label=METHOD_LABELS[method], lw=1.2)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="black", lw=0.6, linestyle=":")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
        else:
            if prevalence is not None:
                ax.axhline(prevalence, color="black", lw=0.6, linestyle=":")
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_ylim(0, 1.02)
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{'ROC' if kind == 'roc' else 'Precision-recall'} curves on the test users "
                 "(Table 3 setting, first repeat)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_all(directory: str, result: dict, curves: dict) -> list[str]:
    """Every plot the result supports, written under ``directory``; returns the file names."""
    written = []
    tasks = result["tasks"]
    if result["table3"]["rows"]:
        plot_table3(os.path.join(directory, TABLE3_PNG), result["table3"], tasks)
        written.append(TABLE3_PNG)
    plotters = ((MASKING, MASKING_PNG, plot_masking), (IMBALANCE, IMBALANCE_PNG, plot_imbalance),
                (SEEDS, SEEDS_PNG, plot_seeds), (SEEDS_PU, SEEDS_PU_PNG, plot_seeds_pu))
    for experiment, name, plot in plotters:
        entries = result["curves"].get(experiment) or []
        if any(np.isfinite(e["aupr_mean"]) for e in entries):
            plot(os.path.join(directory, name), entries)
            written.append(name)
    if curves:
        plot_curves(os.path.join(directory, ROC_PNG), curves, tasks, "roc")
        plot_curves(os.path.join(directory, PR_PNG), curves, tasks, "pr")
        written += [ROC_PNG, PR_PNG]
    return written


# --------------------------------------------------------------------------- markdown


def _f(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _pct(value) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value * 100:+.2f}%"


def _signed(value) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.4f}"


def paper_table(table: dict) -> list[str]:
    """Table 3 in the paper's layout: normal training, Meta-Profile (diff), growth rate."""
    p, b = table["primary"], table["baseline"]
    lines = ["| Target task | AUPR: normal training | AUPR: " + METHOD_LABELS[p] + " (diff) | "
             "Growth rate | AUROC: normal training | AUROC: " + METHOD_LABELS[p] + " (diff) | "
             "Growth rate |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in [*table["rows"], table["average"]]:
        if f"{p}_aupr" not in row:
            continue
        name = "**average**" if row["task"] == "average" else row["task"]
        lines.append(f"| {name} | {_f(row[f'{b}_aupr'])} | {_f(row[f'{p}_aupr'])} "
                     f"({_signed(row['diff_aupr'])}) | {_pct(row['growth_aupr'])} | "
                     f"{_f(row[f'{b}_auroc'])} | {_f(row[f'{p}_auroc'])} "
                     f"({_signed(row['diff_auroc'])}) | {_pct(row['growth_auroc'])} |")
    average = table["average"]
    if "growth_of_mean_aupr" in average:
        lines.append("")
        lines.append(f"Average growth rate (mean of the per-task rates, as the paper quotes "
                     f"it): AUPR {_pct(average['growth_aupr'])}, AUROC "
                     f"{_pct(average['growth_auroc'])}; growth of the mean: AUPR "
                     f"{_pct(average['growth_of_mean_aupr'])}, AUROC "
                     f"{_pct(average['growth_of_mean_auroc'])}. "
                     f"{average['tasks_primary_better_aupr']} of {len(table['rows'])} tasks "
                     f"have a higher AUPR than normal training.")
    return lines


def all_methods_table(table: dict) -> list[str]:
    methods = table["methods"]
    lines = ["| Target task | " + " | ".join(METHOD_LABELS[m] for m in methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for row in [*table["rows"], table["average"]]:
        name = "**average**" if row["task"] == "average" else row["task"]
        cells = []
        for m in methods:
            mean, std = row.get(f"{m}_aupr"), row.get(f"{m}_aupr_std")
            cells.append(_f(mean) if row["task"] == "average" else f"{_f(mean)} ± {_f(std, 3)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _met(met) -> str:
    return "not measured" if met is None else ("yes" if met else "**no**")


def curve_table(entries: Sequence[dict], experiment: str) -> list[str]:
    methods = _methods(entries)
    levels = sorted({e["level"] for e in entries}, reverse=experiment == MASKING)
    head = {MASKING: "Labels kept", IMBALANCE: "Ratio +/−", SEEDS: "Seeds",
            SEEDS_PU: "Positive seeds"}[experiment]
    extra = [m for m in (ZERO, FINE_TUNED) if m in methods and SCRATCH in methods]
    lines = [f"| {head} | " + " | ".join(METHOD_LABELS[m] for m in methods)
             + "".join(f" | {METHOD_LABELS[m].split(' (')[-1].rstrip(')')} − scratch"
                       for m in extra) + " | tasks |",
             "|---|" + "---:|" * (len(methods) + len(extra) + 1)]
    for level in levels:
        cells = {e["method"]: e for e in entries if e["level"] == level}
        text = (f"{level * 100:g}%" if experiment == MASKING else f"{level:g}")
        values = [f"{_f(cells[m]['aupr_mean'])} ± {_f(cells[m]['aupr_std'], 3)}"
                  if m in cells else "n/a" for m in methods]
        gaps = [_signed(cells[m]["aupr_mean"] - cells[SCRATCH]["aupr_mean"])
                if m in cells and SCRATCH in cells else "n/a" for m in extra]
        tasks = max((c.get("tasks", 0) for c in cells.values()), default=0)
        lines.append(f"| {text} | " + " | ".join(values + gaps) + f" | {tasks} |")
    return lines


def interval_table(spans: Sequence[dict]) -> list[str]:
    """One row per (experiment, level): the two methods, their AUPRs, the ratio and its
    95 % interval."""
    lines = ["| setting | best Meta-Profile | AUPR | best classic | AUPR | ratio | 95 % "
             "interval | tasks × repeats |", "|---|---|---:|---|---:|---:|---|---:|"]
    for i in spans:
        setting = ("whole adaptation set" if i["experiment"] == TABLE3
                   else f"{i['experiment']} {i['level']:g}")
        lines.append(f"| {setting} | {i['meta_method']} | {_f(i['meta_aupr'], 3)} | "
                     f"{i['classic_method']} | {_f(i['classic_aupr'], 3)} | "
                     f"{_f(i['ratio'], 3)} | [{_f(i['ratio_low'], 3)}, "
                     f"{_f(i['ratio_high'], 3)}] | {i['tasks']} × {i['repeats']} |")
    return lines


def render_markdown(result: dict, images: Sequence[str]) -> str:
    cfg = result["eval_config"]
    decision = result["decision"]
    lines = [f"# Evaluation of model `{result['model']['version']}` on `{result['config']}`",
             "",
             f"Snapshot `ds={result['ds']}`, {result['users']:,} users read once from "
             f"`{result['heatmaps']}`; created {result['created_at']}; total "
             f"{result['timing_seconds'].get('total', 0):.0f} s.",
             "",
             f"**Decision:** better = `{str(decision['better']).lower()}` — "
             f"{decision['reason']}.",
             "",
             "## Protocol",
             "",
             f"* Unseen target tasks: {', '.join(result['tasks'])} (none is a source task of "
             f"the model: {', '.join(result['model']['source_tasks'])}).",
             f"* Per task, the labelled users are split by a hash of (seed, user id): "
             f"{cfg['adaptation_fraction']:.0%} adaptation (the support / prediction data), "
             "the rest test. Every method sees only adaptation labels; every metric is on "
             "the test users; AUPR is average precision.",
             f"* Repeats: {len(cfg['seed_list'])} with seeds {cfg['seed_list']}; tables show "
             "the mean (± std over repeats).",
             "* Fine-tuning and training from scratch: early-stopped on a validation fold "
             "of the adaptation subset (validation AUPR before training and after every "
             f"epoch, patience {cfg['patience']}, at most {cfg['fine_tune_epochs']} epochs, "
             f"best epoch kept), query batch {cfg['batch_size']}, K = {cfg['k_shot']}, Adam "
             f"{cfg['learning_rate']:g} (fine-tuning) and {cfg['scratch_learning_rate']:g} "
             "(from scratch). Each run's curve is in `results.json` (`learning_curves`).",
             f"* Classic baselines (scikit-learn) on {len(result['aggregate_features'])} "
             "aggregate features (channel and hour-of-day totals per modality, log1p; numeric "
             "demographics with missing flags; categorical demographics one-hot), "
             "standardised with the adaptation side's statistics: logistic regression with "
             "its L2 strength chosen by stratified cross-validation, gradient-boosted trees, "
             "cosine to the seed centroid. The probe is the same logistic regression on the "
             "frozen Meta-Profile embedding beside the aggregates.",
             f"* Leakage checks passed: label periods after the window, source and target "
             f"tasks disjoint, and {result['leakage_checks']['user_disjointness_checks_passed']}"
             " checks that no scored user is an adaptation user.",
             "",
             "| Target task | labelled users | positives | without heatmaps | conflicting |",
             "|---|---:|---:|---:|---:|"]
    for task in result["tasks"]:
        a = result["labels"][task]
        lines.append(f"| {task} | {a.get('evaluated_users', 0):,} | {a.get('positives', 0):,} "
                     f"| {a.get('without_heatmaps', 0)} | {a['conflicting_users']} |")
    if result["table3"]["rows"]:
        lines += ["", "## Table 3: unseen target tasks", "",
                  "Meta-Profile (zero-training: prototypes of the adaptation users through the "
                  "meta-trained network, no weight update) against normal training from "
                  "scratch:", "", *paper_table(result["table3"])]
        if result["table3_fine_tuned"]["rows"]:
            lines += ["", "Meta-Profile fine-tuned on the adaptation set against normal "
                          "training with the same budget:", "",
                      *paper_table(result["table3_fine_tuned"])]
        lines += ["", "AUPR of every method (mean ± std over repeats):", "",
                  *all_methods_table(result["table3"])]
        if "table3.png" in images:
            lines += ["", "![Table 3](table3.png)"]
    if result.get("targets"):
        lines += ["", "## Targets", "",
                  "The evaluation's targets, checked on the means over repeats (95 % "
                  "intervals in brackets):", "",
                  "| target | met | evidence |", "|---|---|---|"]
        lines += [f"| {t['target']} | {_met(t['met'])} | {t['evidence']} |"
                  for t in result["targets"]]
    spans = [i for e in (TABLE3, SEEDS, SEEDS_PU)
             for i in result.get("intervals", {}).get(e, [])]
    if spans:
        lines += ["", "## Meta-Profile against the DMP, with 95 % intervals", "",
                  "The best Meta-Profile method against the best classic baseline, chosen on "
                  "the means. The interval comes from a paired bootstrap "
                  f"({spans[0]['replicates']} copies). Within each task, the test users are "
                  "resampled, and every method is scored on the same copies. The tasks "
                  "themselves are then resampled.", "", *interval_table(spans)]
    sections = ((MASKING, "Figure 3: label masking", "figure3_label_masking.png",
                 "Share of the adaptation labels kept (stratified by class, at least one "
                 "positive and one negative). Mean AUPR over tasks:"),
                (IMBALANCE, "Figure 4: class imbalance", "figure4_class_imbalance.png",
                 "Ratio of positives to negatives in the adaptation set, by subsampling to a "
                 "fixed total per task. Mean AUPR over tasks (the plot adds the 2-period "
                 "moving average):"),
                (SEEDS, "Seed-count sweep: Meta-Profile vs classic baselines",
                 "seed_sweep.png", "n positive seeds plus n labelled negatives from the "
                                   "adaptation set. Mean AUPR over tasks:"),
                (SEEDS_PU, "Seed-count sweep, campaign setting (positives only)",
                 "seed_sweep_pu.png", f"n positive seeds; the negatives are "
                                      f"{cfg['pu_background']:,} unlabelled users of the "
                                      "adaptation side (PU). Mean AUPR over tasks:"))
    for experiment, title, image, text in sections:
        entries = result["curves"].get(experiment)
        if not entries:
            continue
        lines += ["", f"## {title}", "", text, "", *curve_table(entries, experiment)]
        if image in images:
            lines += ["", f"![{title}]({image})"]
    curves = [c for c in result.get("learning_curves", []) if c["experiment"] == "table3"]
    if curves:
        lines += ["", "## Learning curves of the trained methods (Table 3)", "",
                  f"Validation AUPR on the held-out fold before training (epoch 0) and after "
                  f"each epoch; at most {cfg['fine_tune_epochs']} epochs, patience "
                  f"{cfg['patience']}, best epoch kept. Full curves in `results.json`.", "",
                  "| task | method | repeat | epochs run | best epoch | AUPR at 0 | best AUPR "
                  "| seconds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for c in curves:
            points = c["curve"]
            if not points:
                continue
            best = max(v for _, v in points)
            lines.append(f"| {c['task']} | {c['method']} | {c['repeat']} | {len(points) - 1} "
                         f"| {c['best_epoch']} | {_f(points[0][1], 3)} | {_f(best, 3)} | "
                         f"{c['seconds']:.0f} |")
    if "roc_curves.png" in images:
        lines += ["", "## ROC and precision-recall curves", "",
                  "Test users of the Table 3 setting, first repeat.", "",
                  "![ROC curves](roc_curves.png)", "", "![PR curves](pr_curves.png)"]
    if result.get("published"):
        pub = result["decision"].get("published") or {}
        lines += ["", "## Published model", "",
                  f"`{pub.get('version')}` evaluated with the same protocol and seeds "
                  f"(Table 3, zero-training): mean AUPR "
                  f"{_f(pub.get(f'mean_{ZERO}_aupr'))}, mean AUROC "
                  f"{_f(pub.get(f'mean_{ZERO}_auroc'))}."]
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in result["notes"]]
    skipped = [r for r in result["rows"] if not str(r["status"]).startswith("ok")]
    if skipped:
        lines += ["", f"{len(skipped)} result row(s) have no metric; see `status` in "
                      "results.csv."]
    lines += ["", "## Timing", "", "| phase | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["timing_seconds"].items()]
    cache = result.get("scratch_cache")
    if cache:
        lines += ["", f"From-scratch results reused from earlier runs: {cache['hits']} of "
                      f"{cache['hits'] + cache['misses']} (`{cache['root']}`; "
                      "`--no-scratch-cache` trains them all again)."]
    return "\n".join(lines) + "\n"
