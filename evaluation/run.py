"""The driver: read the users once, run the protocol for the candidate (and the published model),
and write the report."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Callable, Sequence

import numpy as np

from common import catalog, storage
from evaluation.decision import check_targets, decide, deployed_method, model_summary
from evaluation.intervals import ratio_intervals
from evaluation.outputs import write_outputs
from evaluation.protocol import ModelUnderTest, Outcome, ScratchCache, _clock, run_protocol
from evaluation.sampling import check_label_periods, check_tasks_disjoint
from evaluation.settings import FINE_TUNED, META_METHODS, TABLE3, ZERO, EvalConfig
from evaluation.store import (
    TaskData,
    UserStore,
    embed_rows,
    load_target_labels,
    read_users,
    resolve_tasks,
    task_data,
)
from evaluation.summary import over_tasks, summarise, table3
from model.baselines import CLASSIC_METHODS, aggregate_feature_names
from schemas.config import PipelineConfig
from schemas.input_spec import InputSpec

log = logging.getLogger(__name__)

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
        from common.registry import RegistryError, published_model
        published_pointer = published_model(config)
    except RegistryError as exc:
        published_error = str(exc)
    if model_path is None:
        if published_pointer is None:
            raise ValueError(f"no --model given and {published_error}")
        model_path = published_pointer["path"]

    heatmaps = heatmaps or catalog.partition(config, "heatmaps", ds)
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
    task_scores, task_report = source_task_scores(artifact.model, store, embeddings)
    progress(f"[{_clock(start)}] source-task scores: {len(task_report['tasks'])} task(s) "
             f"from the {task_report['users']} {task_report['split']} users"
             + (f"; skipped (one class): {', '.join(task_report['skipped'])}"
                if task_report["skipped"] else ""))
    candidate = ModelUnderTest("candidate", artifact.path, artifact.version, artifact.model,
                               artifact.model_config, embeddings, task_scores)
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
                  "source_tasks": list(artifact.input_spec.tasks),
                  "source_task_scores": task_report},
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
    result["intervals"] = {  # 95 % intervals of best Meta-Profile / best classic per level
        e: ratio_intervals(outcome.replicates, outcome.points, e, META_METHODS,
                           CLASSIC_METHODS) for e in cfg.experiments}
    whole = {TABLE3: over_tasks(outcome.rows, TABLE3)}  # the ratio needs no scratch
    result["targets"] = check_targets(result["table3"], result["curves"] | whole,
                                      result["intervals"])  # the bar
    out = out or storage.join(config.storage.uri("reports"), "evaluation", artifact.version)
    files = write_outputs(out, result, outcome.curves)
    progress(f"[{_clock(start)}] wrote {out}: {', '.join(files)}")
    progress(f"decision: better={decision['better']}: {decision['reason']}")
    return {"out": out, "files": files, "decision": decision, "table3": result["table3"],
            "seconds": timing["total"]}


def source_task_scores(model, store: UserStore, embeddings: np.ndarray
                       ) -> tuple[np.ndarray, dict]:
    """``[U, T]`` source-task scores of every store row (model/task_scores.py), with the
    prototypes drawn from the training split's labelled users (every split's when the
    heatmaps hold no training split), and what was used."""
    from model.task_scores import source_prototypes, task_score_features

    rows = store.splits == "train"
    split = "train"
    if not rows.any():
        rows, split = np.ones(len(store), dtype=bool), "every"
    prototypes = source_prototypes(embeddings[rows], store.source_labels[rows],
                                   store.source_mask[rows], tuple(store.spec.tasks))
    report = {"split": split, "users": int(rows.sum()), "tasks": list(prototypes.tasks),
              "counts": [list(c) for c in prototypes.counts],
              "skipped": list(prototypes.skipped)}
    return task_score_features(model, embeddings, prototypes), report


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
    task_scores, _ = source_task_scores(artifact.model, store, embeddings)
    published = ModelUnderTest("published", artifact.path, artifact.version, artifact.model,
                               artifact.model_config, embeddings, task_scores)
    same_protocol = dataclasses.replace(cfg, experiments=(TABLE3,), methods=(method,))
    return run_protocol(published, store, features, data, same_protocol, progress, start)
