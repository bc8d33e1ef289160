"""``metaprofile evaluate``: meta-testing on the unseen target tasks (the evaluation package).

:func:`add_subparsers` registers the command on the main parser's subparsers; it sets
``func`` to a function of the parsed arguments that returns an exit code. TensorFlow is
imported only when the command runs, so ``metaprofile --help`` stays fast.

    metaprofile evaluate --config conf/synthetic.yaml --model .work/data/synthetic/models/v1
    metaprofile evaluate --config conf/synthetic.yaml --quick --compare-published
                                          # CI / DAG: the candidate vs the published model
The output directory (``--out``, default ``<storage reports>/evaluation/<model version>``) is
printed as the last line of stdout.
"""
from __future__ import annotations

import argparse
import datetime as dt

from schemas.config import add_config_arguments


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_subparsers(subparsers) -> None:
    """Register ``evaluate``."""
    p = subparsers.add_parser(
        "evaluate", help="meta-test a model on the unseen target tasks -> report, decision",
        description="Evaluate a model artifact on the config's target tasks with the paper's "
                    "section 4 protocol: Table 3 (Meta-Profile zero-training and fine-tuned vs "
                    "normal training from scratch and classic DMP baselines), Figure 3 (label "
                    "masking), Figure 4 (class imbalance) and two seed-count sweeps (labelled "
                    "negatives, and positives only with unlabelled negatives). Writes "
                    "results.json, results.csv, report.md, PNG plots and decision.json to "
                    "--out and prints that directory as the last line.")
    add_config_arguments(p)
    p.add_argument("--ds", type=dt.date.fromisoformat, default=None,
                   help="snapshot date YYYY-MM-DD (default: the config's window.end)")
    p.add_argument("--model", default=None,
                   help="model artifact directory (default: the published model)")
    p.add_argument("--heatmaps", default=None,
                   help="heatmap TFRecords + manifest (default: storage heatmaps/ds=<ds>)")
    p.add_argument("--out", default=None,
                   help="output directory (default: storage reports/evaluation/<version>)")
    p.add_argument("--print-decision", action="store_true",
                   help="end with decision.json as one JSON line instead of the output "
                        "directory (what a scheduler takes as the task's result)")
    p.add_argument("--compare-published", action="store_true",
                   help="also evaluate the published model (same protocol and seeds); the "
                        "candidate is better when the mean Table 3 AUPR of the head the "
                        "nightly job scores with is higher (meta_profile_probe for "
                        "lookalike.head=probe, meta_profile for prototype, auto_head for "
                        "auto; without a "
                        "published model: when it beats training from scratch)")
    from evaluation.settings import EXPERIMENTS, METHODS, EvalConfig
    d, q = EvalConfig(), EvalConfig.quick_preset()

    def listed(values) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p.add_argument("--quick", action="store_true",
                   help=f"CI/DAG preset: {q.repeats} repeat, {q.max_tasks} tasks, Table 3 "
                        f"methods {listed(q.methods)}, at most {q.fine_tune_epochs} epochs "
                        f"of training from scratch (patience {q.patience}), masking {listed(q.masking_levels)}, "
                        f"ratios {listed(q.imbalance_ratios)}, seeds {listed(q.seed_counts)}, "
                        f"PU seeds {listed(q.pu_seed_counts)} (other flags still apply)")
    p.add_argument("--tasks", type=_names, default=None,
                   help="comma-separated target tasks (default: all; --quick: the first 2)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"repeats (default: {d.repeats}; --quick: {q.repeats})")
    p.add_argument("--seeds", type=_ints, default=None,
                   help="comma-separated seeds, one per repeat (default: 0..repeats-1)")
    p.add_argument("--experiments", type=_names, default=None,
                   help=f"comma-separated subset of {listed(EXPERIMENTS)} (default: all)")
    p.add_argument("--methods", type=_names, default=None,
                   help=f"Table 3 methods, a comma-separated subset of {listed(METHODS)} "
                        "(default: all)")
    p.add_argument("--figure-methods", type=_names, default=None,
                   help="methods run in the masking and imbalance experiments (default: "
                        f"{listed(d.figure_methods)})")
    p.add_argument("--seed-sweep-methods", type=_names, default=None,
                   help="methods run in the seeds and seeds_pu sweeps (default: "
                        f"{listed(d.seed_sweep_methods)})")
    p.add_argument("--adaptation-fraction", type=float, default=None,
                   help="share of a task's labelled users used for adaptation "
                        f"(default {d.adaptation_fraction:g})")
    p.add_argument("--masking-levels", type=_floats, default=None,
                   help=f"fractions of adaptation labels kept (default "
                        f"{listed(d.masking_levels)})")
    p.add_argument("--imbalance-ratios", type=_floats, default=None,
                   help=f"positive/negative ratios (default {listed(d.imbalance_ratios)})")
    p.add_argument("--imbalance-total", type=int, default=None,
                   help="adaptation users per imbalance level (default: the largest every "
                        "ratio reaches)")
    p.add_argument("--seed-counts", type=_ints, default=None,
                   help="seeds: positive seed counts, each with as many labelled negatives "
                        f"(default {listed(d.seed_counts)})")
    p.add_argument("--pu-seed-counts", type=_ints, default=None,
                   help="seeds_pu: positive seed counts, negatives drawn from the unlabelled "
                        f"users (default {listed(d.pu_seed_counts)})")
    p.add_argument("--pu-background", type=int, default=None,
                   help="seeds_pu: unlabelled users drawn as negatives "
                        f"(default {d.pu_background})")
    p.add_argument("--fine-tune-epochs", type=int, default=None,
                   help="most epochs of fine-tuning and training from scratch, early-stopped "
                        f"on a validation fold (default {d.fine_tune_epochs}; --quick: "
                        f"{q.fine_tune_epochs})")
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without a better validation AUPR before stopping "
                        f"(default {d.patience}; --quick: {q.patience})")
    p.add_argument("--trained-max-users", type=int, default=None,
                   help="the fine-tuned model and training from scratch adapt on at most "
                        "this many support users, a subsample that keeps the prevalence "
                        "(default: the whole support; the other methods always see all of it)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"query users per fine-tuning episode (default {d.batch_size})")
    p.add_argument("--k-shot", type=int, default=None,
                   help=f"supports per class per fine-tuning episode (default {d.k_shot})")
    p.add_argument("--learning-rate", type=float, default=None,
                   help=f"fine-tuning Adam learning rate (default {d.learning_rate:g})")
    p.add_argument("--scratch-learning-rate", type=float, default=None,
                   help=f"from-scratch Adam learning rate (default {d.scratch_learning_rate:g})")
    p.add_argument("--embed-batch-size", type=int, default=None,
                   help=f"users densified and embedded at a time (default {d.embed_batch_size})")
    p.add_argument("--bootstrap-replicates", type=int, default=None,
                   help="bootstrap copies of each test set behind the 95 %% intervals of every "
                        "AUPR and of the Meta-Profile / classic ratios; 0: no intervals "
                        f"(default {d.bootstrap_replicates})")
    p.add_argument("--no-scratch-cache", dest="scratch_cache", action="store_const",
                   const=False, default=None,
                   help="train every from-scratch baseline again instead of reusing the "
                        "results of an earlier run on the same data, architecture, budget "
                        "and users (default: reuse)")
    p.add_argument("--scratch-cache-dir", default=None,
                   help="where from-scratch results are kept (default: <storage "
                        "reports>/evaluation/_scratch_cache)")
    p.set_defaults(func=cmd_evaluate)


# Flags that are aliases of an EvalConfig field (the argparse destination is the field name).
EVAL_FLAGS = ("tasks", "repeats", "seeds", "experiments", "methods", "figure_methods",
              "seed_sweep_methods", "adaptation_fraction", "masking_levels", "imbalance_ratios",
              "imbalance_total", "seed_counts", "pu_seed_counts", "pu_background",
              "fine_tune_epochs", "patience", "trained_max_users", "batch_size", "k_shot",
              "learning_rate",
              "scratch_learning_rate", "embed_batch_size", "bootstrap_replicates",
              "scratch_cache", "scratch_cache_dir")


def eval_config_from_args(args: argparse.Namespace, config=None):
    """The evaluation settings: the defaults (or the ``--quick`` preset), then the config's
    ``evaluate`` section, then the flags given on the command line."""
    from evaluation.settings import EVAL_DERIVED_FIELDS, EvalConfig
    from schemas.settings import given_flags, read_settings

    changes = dict(config.section("evaluate")) if config is not None else {}
    changes.update(given_flags(args, EVAL_FLAGS))
    if changes.get("tasks"):
        changes.setdefault("max_tasks", None)  # explicit tasks: evaluate all of them
    base = EvalConfig.quick_preset() if args.quick else EvalConfig()
    return read_settings(EvalConfig, changes, "evaluate", base=base, fixed=EVAL_DERIVED_FIELDS,
                         source=getattr(args, "config", "<config>"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from evaluation.run import evaluate
    from schemas.config import load_config

    config = load_config(args.config, overrides=args.overrides)
    eval_cfg = eval_config_from_args(args, config)
    result = evaluate(config, args.model, ds=args.ds, eval_cfg=eval_cfg,
                      out=args.out, heatmaps=args.heatmaps,
                      compare_published=args.compare_published, progress=_print)
    if args.print_decision:  # last line: the publish decision, for schedulers (XCom)
        import json

        from common import storage
        _print(json.dumps(storage.read_json(f"{result['out'].rstrip('/')}/decision.json"),
                          sort_keys=True))
    else:  # last line: the report directory
        _print(result["out"])
    return 0


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    """``python -m evaluation.cli evaluate …``: the command without the main CLI."""
    import logging
    import sys

    from common.workdir import configure_environment

    configure_environment()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="metaprofile")
    add_subparsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
