"""``metaprofile train`` and ``metaprofile model-summary``.

:func:`add_subparsers` registers both on the main parser's subparsers; each sets
``func`` to a function of the parsed arguments that returns an exit code. TensorFlow is
imported only when a command runs, so ``metaprofile --help`` stays fast.

    metaprofile train --config conf/synthetic.yaml --ds 2026-06-30 --steps 2000  # full size
    metaprofile train --config conf/synthetic.yaml --width 0.125 --steps 200 --resume
    metaprofile model-summary --config conf/synthetic.yaml    # full-size parameter count
"""
from __future__ import annotations

import argparse
import datetime as dt
import os

from common import catalog
from common.attempts import attempt
from common.locks import add_lock_argument
from model.settings import TRAIN_DERIVED_FIELDS, ModelConfig, TrainConfig
from schemas import identifiers
from schemas.config import add_config_arguments
from schemas.settings import given_flags, read_settings

TRAIN_SPLIT, VALIDATION_SPLIT = "train", "validation"


def add_subparsers(subparsers) -> None:
    """Register ``train`` and ``model-summary``."""
    p = subparsers.add_parser(
        "train", help="meta-train the profile network on TFRecord heatmaps -> model artifact",
        description="Meta-train g_θ and f_θ with N-way K-shot episodes over the source tasks "
                    "(Eq. 1 loss, Adam, cyclical then SGDR learning rate), checkpointing so "
                    "that --resume continues a killed run exactly, and write a versioned "
                    "artifact <out>/<version>/ (model.keras, configs, specs, metrics).")
    add_config_arguments(p)
    p.add_argument("--ds", type=dt.date.fromisoformat, default=None,
                   help="snapshot date YYYY-MM-DD (default: the config's window.end)")
    p.add_argument("--heatmaps", default=None,
                   help="heatmap TFRecords + manifest (default: storage heatmaps/ds=<ds>)")
    p.add_argument("--out", default=None, help="models root (default: storage models)")
    p.add_argument("--version", default=None, type=identifiers.argument("model version"),
                   help="artifact version name, a folder name under --out, so it keeps the "
                        f"identifier rule: {identifiers.RULE} (default: UTC time, e.g. "
                        "20260630T021500Z)")
    p.add_argument("--work-dir", default=None,
                   help="checkpoints and TensorBoard logs (default: "
                        "$METAPROFILE_WORK_DIR/train/<config name>-<ds>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --work-dir")
    add_lock_argument(p)
    _add_model_args(p)
    t, sc = TrainConfig(), TrainConfig().schedule
    p.add_argument("--steps", type=int, help=f"episodes (default: {t.steps})")
    p.add_argument("--batch-size", type=int,
                   help=f"query users B per episode (default: {t.batch_size})")
    p.add_argument("--k-shot", type=int,
                   help=f"supports per task and class, K (default: {t.k_shot})")
    p.add_argument("--way", type=int,
                   help="source tasks drawn per episode, N (default: every source task; "
                        "use it with hundreds of source tasks)")
    p.add_argument("--no-negatives", dest="negatives", action="store_const", const=False,
                   help="positive supports only (logit r(q, p+))")
    p.add_argument("--pool-per-class", type=int,
                   help=f"support pool users kept per task and class, ~0.55 MB each "
                        f"(default: {t.pool_per_class})")
    p.add_argument("--pool-batches", type=int,
                   help=f"first training batches scanned to fill the support pool "
                        f"(default: {t.pool_batches})")
    p.add_argument("--validate-every", type=int,
                   help=f"steps; 0 = never (default: {t.validate_every})")
    p.add_argument("--val-batches", type=int,
                   help=f"batches per validation (default: {t.val_batches})")
    p.add_argument("--patience", type=int,
                   help=f"validations without a better mean AUROC before stopping; 0 = never "
                        f"(default: {t.patience})")
    p.add_argument("--checkpoint-every", type=int,
                   help=f"steps between checkpoints (default: {t.checkpoint_every})")
    p.add_argument("--log-every", type=int,
                   help=f"steps between progress lines (default: {t.log_every})")
    p.add_argument("--seed", type=int, help=f"weights and support draws (default: {t.seed})")
    p.add_argument("--base-lr", type=float,
                   help=f"cyclical LR lower bound (default: {sc.base_lr:g})")
    p.add_argument("--max-lr", type=float,
                   help=f"cyclical LR upper bound (default: {sc.max_lr:g})")
    p.add_argument("--step-size", type=int,
                   help=f"half a cyclical LR cycle, steps (default: {sc.step_size})")
    p.add_argument("--cycles", type=int,
                   help=f"cyclical LR cycles before SGDR (default: {sc.cycles})")
    p.add_argument("--first-period", type=int,
                   help=f"first SGDR period, steps (default: {sc.first_period})")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "model-summary", help="print the full-size model's shapes and parameter counts",
        description="Build (not train) the meta-model for the config's real window and "
                    "channels, print each tower's Table 2 shapes, the parameter count per part "
                    "and why it differs from the paper's 'about 2 million'.")
    add_config_arguments(p)
    _add_model_args(p)
    p.set_defaults(func=cmd_model_summary)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    m = ModelConfig()
    parser.add_argument("--width", "--scale", dest="width", type=float,
                        help=f"multiplies Table 2's filter counts (default: {m.width:g})")
    parser.add_argument("--embedding-dim", type=int,
                        help=f"user embedding size (default: {m.embedding_dim})")
    parser.add_argument("--relation-units", type=lambda s: tuple(int(u) for u in s.split(",")),
                        help="hidden sizes of f_θ, e.g. 256 or 256,64 (default: "
                             f"{','.join(map(str, m.relation_units))})")
    parser.add_argument("--totals-units", type=int,
                        help="units of a branch beside each tower's max pools that sees the "
                             "log1p channel and hour-of-day totals (0 = the plain Table 2 "
                             f"tower; default: {m.totals_units})")


# Flags that are aliases of a settings field (the argparse destination is the field name).
# A flag given on the command line overrides the config's section and its --set overrides.
MODEL_FLAGS = ("width", "embedding_dim", "relation_units", "totals_units")
TRAIN_FLAGS = ("steps", "batch_size", "k_shot", "way", "negatives", "pool_per_class", "pool_batches",
               "validate_every", "val_batches", "patience", "checkpoint_every", "log_every",
               "seed")
SCHEDULE_FLAGS = ("base_lr", "max_lr", "step_size", "cycles", "first_period")


def model_config_from_args(args: argparse.Namespace, config) -> ModelConfig:
    """The config's ``model`` section, with the flags given on top."""
    values = {**config.section("model"), **given_flags(args, MODEL_FLAGS)}
    return read_settings(ModelConfig, values, "model", source=args.config)


def train_config_from_args(args: argparse.Namespace, config, work_dir: str) -> TrainConfig:
    """The config's ``train`` section, with the flags given on top; the checkpoint and log
    folders come from ``work_dir``, and ``resume`` from ``--resume``."""
    values = {**config.section("train"), **given_flags(args, TRAIN_FLAGS)}
    schedule = {**values.get("schedule", {}), **given_flags(args, SCHEDULE_FLAGS)}
    if schedule:
        values["schedule"] = schedule
    base = TrainConfig(checkpoint_dir=os.path.join(work_dir, "checkpoints"),
                       log_dir=os.path.join(work_dir, "logs"), resume=args.resume)
    return read_settings(TrainConfig, values, "train", base=base, source=args.config,
                         fixed=TRAIN_DERIVED_FIELDS)


def cmd_train(args: argparse.Namespace) -> int:
    from model.train import choose_strategy
    from schemas.config import load_config
    from schemas.input_spec import InputSpec

    strategy = choose_strategy()  # before other TensorFlow work (multi-worker needs that)
    config = load_config(args.config, overrides=args.overrides)
    ds = args.ds or config.window.end
    if ds is None:
        raise ValueError("no --ds given and the config has no window.end")
    heatmaps = args.heatmaps or catalog.partition(config, "heatmaps", ds)
    work_dir = args.work_dir or os.path.join(
        os.environ.get("METAPROFILE_WORK_DIR", ".work"), "train", f"{config.name}-{ds}")
    spec = InputSpec.from_config(config)
    model_cfg = model_config_from_args(args, config)
    train_cfg = train_config_from_args(args, config, work_dir)
    with attempt(config, "train", ds, wait_s=args.wait_for_lock) as run:
        path = _train(args, config, ds, heatmaps, work_dir, spec, model_cfg, train_cfg,
                      strategy)
        if run.publishing.swept:
            _print(f"removed {len(run.publishing.swept)} staging folder(s) left by killed "
                   f"attempts")
    _print("model artifact written; its path is the last line")
    _print(path)  # last line: the artifact path, for schedulers (Airflow XCom)
    return 0


def _train(args, config, ds, heatmaps: str, work_dir: str, spec, model_cfg, train_cfg,
           strategy) -> str:
    from model.artifact import save_artifact
    from model.inputs import check_manifest, make_dataset, read_manifest
    from model.train import train

    manifest = read_manifest(heatmaps)
    check_manifest(manifest, config)
    train_data = make_dataset(heatmaps, TRAIN_SPLIT, spec, train_cfg.batch_size, shuffle=True,
                              repeat=True, seed=train_cfg.seed,
                              value_transform=config.value_transform)
    val_data = make_dataset(heatmaps, VALIDATION_SPLIT, spec, train_cfg.batch_size,
                            shuffle=False, repeat=False, seed=train_cfg.seed,
                            value_transform=config.value_transform)
    train_spec, behaviour, datasets = add_behaviour_tasks(
        config, spec, train_cfg, heatmaps, (train_data, val_data))
    train_data, val_data = datasets
    result = train(train_spec, model_cfg, train_cfg, train_data, val_data, work_dir,
                   progress=_print, strategy=strategy)
    metrics = {**result.metrics, "ds": ds.isoformat(), "heatmaps": heatmaps,
               "config": config.name, "behaviour": behaviour}
    return save_artifact(result.model, result.model_config, spec, manifest["spec"], metrics,
                         manifest["sha256"], args.out or config.storage.uri("models"),
                         version=args.version,
                         normalisation=manifest.get("numeric_normalisation", {}))


def add_behaviour_tasks(config, spec, train_cfg, heatmaps: str, datasets: tuple):
    """``(training spec, report, datasets)``: the config's behaviour tasks appended to the
    survey tasks of every dataset (``model/behaviour.py``), every batch shifted to its
    backtest cut and the source tasks labelled at another cut masked out of it, less the
    behaviour tasks and source tasks at a cut that the first ``pool_batches`` training
    batches cannot fill with both classes."""
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from model.behaviour import behaviour_tasks, cut_of_batch, usable_tasks, with_behaviour_tasks
    from model.inputs import make_dataset
    from schemas.config import source_cut

    if not config.behaviour.enabled:
        return spec, {"horizon_days": 0, "tasks": [], "dropped": []}, datasets
    tasks = behaviour_tasks(config, spec)
    horizon, cuts = config.behaviour.horizon_days, config.behaviour.cut_days
    by_name = {t.name: t for t in config.source_tasks}
    own_cuts = [source_cut(by_name[name], config.window.end) for name in spec.tasks]
    source_cuts = tuple(-1 if c is None else c for c in own_cuts)

    def add(index, batch):  # each batch takes one backtest cut, drawn by its index
        return with_behaviour_tasks(batch, spec, tasks, horizon,
                                    cut_of_batch(index, cuts, train_cfg.seed), source_cuts)

    names = (*spec.tasks, *(t.name for t in tasks))
    scan = make_dataset(heatmaps, TRAIN_SPLIT, spec, train_cfg.batch_size, shuffle=False,
                        repeat=False, value_transform=config.value_transform)
    labels, masks = [], []
    for batch in scan.enumerate().map(add).take(train_cfg.pool_batches):
        labels.append(batch["labels"].numpy())
        masks.append(batch["mask"].numpy())
    always = [t for t, c in enumerate(source_cuts) if c < 0]
    keep, dropped = usable_tasks(np.concatenate(labels), np.concatenate(masks), names,
                                 always, 2 * train_cfg.k_shot)
    for reason in dropped:
        _print(f"source task dropped: {reason}")
    columns = tf.constant(keep, tf.int32)

    def add_and_select(index, batch):
        batch = add(index, batch)
        return {**batch, "labels": tf.gather(batch["labels"], columns, axis=1),
                "mask": tf.gather(batch["mask"], columns, axis=1)}

    kept = tuple(names[i] for i in keep)
    at_cuts = len(spec.tasks) - len(always)
    _print(f"behaviour tasks: {sum(i >= len(spec.tasks) for i in keep)} of {len(tasks)} kept"
           + (f", source tasks at a cut: {sum(i < len(spec.tasks) for i in keep) - len(always)}"
              f" of {at_cuts} kept" if at_cuts else "")
           + f"; horizon {horizon} days, cuts {list(cuts)} days before the window's end; "
             f"{len(kept)} source tasks in all")
    out = tuple(d.enumerate().map(add_and_select, num_parallel_calls=tf.data.AUTOTUNE)
                for d in datasets)
    report = {"horizon_days": horizon, "cut_days": list(cuts),
              "tasks": [names[i] for i in keep if i >= len(spec.tasks)],
              "source_tasks_at_cuts": [names[i] for i in keep
                                       if i < len(spec.tasks) and source_cuts[i] >= 0],
              "dropped": dropped}
    return dataclasses.replace(spec, tasks=kept), report, out


def cmd_model_summary(args: argparse.Namespace) -> int:
    from model.network import describe, parameter_explanation
    from schemas.config import load_config
    from schemas.input_spec import InputSpec

    config = load_config(args.config, overrides=args.overrides)
    print(describe(InputSpec.from_config(config), model_config_from_args(args, config)))
    print()
    print(parameter_explanation())
    return 0


def _print(line: str) -> None:
    print(line, flush=True)
