"""One-screen summaries of a data set's generation or landing, for the CLI and the demo."""
from __future__ import annotations


def format_generation_report(report: dict, root: str) -> str:
    lines = [f"synthetic data set: {report['users']:,} users, days {report['days']['first']} .. "
             f"{report['days']['last']}, written to {root} in {report['seconds']:.1f} s "
             f"({report['rows_per_second']:,} rows/s)"]
    for source, c in report["sources"].items():
        bad = ", ".join(f"{k} {v:,}" for k, v in c["bad_rows"].items())
        lines.append(f"  raw {source:<9} {c['rows_written']:>12,} rows "
                     f"({c['clean_rows']:,} clean; bad: {bad})")
    for key, n in report["outputs"].items():
        lines.append(f"  {key:<13} {n:>12,} rows")
    for kind in ("source", "target"):
        for task, c in report["labels"][kind].items():
            lines.append(f"  {kind} task {task:<24} +{c['positives']:,} / "
                         f"-{c['negatives']:,} / unlabelled {c['unlabelled']:,}")
    return "\n".join(lines)


def format_landing_report(report: dict, root: str) -> str:
    """The Complete Journey's landing: the import's accounting, then the tasks' counts."""
    lines = [f"The Complete Journey landed in {root} in {report['seconds']:.1f} s "
             f"(metaprofile import, then metaprofile tasks)"]
    for name, flow in report["import"].items():
        if not isinstance(flow, dict):
            continue
        dropped = ", ".join(f"{k} {v:,}" for k, v in flow["rows_dropped"].items()) or "none"
        merged = f"  merged {flow['rows_merged']:,}" if "rows_merged" in flow else ""
        lines.append(f"  {name:<18} in {flow['rows_in']:>10,}  out {flow['rows_out']:>10,}"
                     f"{merged}  dropped: {dropped}")
    for key, tasks in report["tasks"].items():
        if isinstance(tasks, dict):
            lines.extend(task_lines(key, tasks, f"{root}/_completejourney.json"))
    return "\n".join(lines)


def task_lines(key: str, tasks: dict[str, dict], where: str, most: int = 20) -> list[str]:
    """One line a task, or, for a family of more than `most` tasks, one line for them all."""
    if len(tasks) <= most:
        return [f"  {key} {task:<30} +{c['positives']:,} / -{c['negatives']:,}"
                for task, c in tasks.items()]
    positives = sorted(c["positives"] for c in tasks.values())
    one_class = sum(1 for c in tasks.values() if not c["positives"] or not c["negatives"])
    return [f"  {key} {len(tasks):,} tasks: positives {positives[0]:,} .. {positives[-1]:,} "
            f"(median {positives[len(positives) // 2]:,}), {one_class:,} with one class; "
            f"each task's counts: tasks.{key} in {where}"]
