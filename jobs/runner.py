"""The one job runner: parse → logging → config → ds → session → run → error → JSON report.

Each ``jobs/<name>.py`` declares a :class:`Job` (its own options and a ``run`` function over
a :class:`JobContext`) and ends with a two-line ``main`` that hands it to :func:`main`, so
``spark-submit jobs/<name>.py …`` and ``metaprofile <name> …`` behave the same everywhere:

* ``--config`` is required and ``--set key=value`` overrides it;
* ``--ds`` defaults to the config's ``window.end``; a job that needs a date and gets none
  stops with exit status 2;
* ``--master`` picks the Spark master; the session starts only when ``run`` first asks for
  it, so modes without Spark (``campaigns --active``, ``embed --engine tf``) start none;
* a bad config or a :class:`UsageError` is one line and exit status 2; a
  :class:`~common.errors.PipelineError` or a bad manifest is one line and exit status 1;
  anything else is a bug and keeps its traceback;
* a job that writes runs as an attempt (:mod:`common.attempts`): the only one of its job and
  date (``--wait-for-lock`` waits for another), which first removes what killed attempts
  left; its report gains an ``attempt`` entry saying what was removed;
* the report goes to stdout as JSON (one line where a DAG takes it as its XCom).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from common.attempts import attempt
from common.errors import PipelineError
from common.locks import add_lock_argument
from schemas.config import ConfigError, PipelineConfig, add_config_arguments, load_config
from schemas.manifests import ManifestError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_ERROR = 1  # a PipelineError or a bad manifest: the run stopped and published nothing
EXIT_USAGE = 2  # bad options or config, as argparse exits


class UsageError(Exception):
    """Options that argparse cannot reject alone (e.g. two that exclude each other)."""


@dataclass
class Outcome:
    """What ``run`` returns when a plain report is not enough."""

    report: Any
    exit_code: int = 0
    message: str | None = None  # printed to stderr as "<prog>: <message>"
    compact: bool = False  # one line of JSON, for a DAG task's XCom


@dataclass
class JobContext:
    """What a job's ``run`` receives: its options, the config, the date and the session."""

    name: str
    args: argparse.Namespace
    config: PipelineConfig
    ds: dt.date | None
    _spark: Any = field(default=None, repr=False)

    @property
    def spark(self):
        """The Spark session, started on first use (``--master``, else spark-submit's)."""
        if self._spark is None:
            from jobs.spark import build_session

            suffix = f"-{self.ds}" if self.ds else ""
            self._spark = build_session(f"metaprofile-{self.name}{suffix}",
                                        master=getattr(self.args, "master", None))
        return self._spark


@dataclass(frozen=True)
class Job:
    """One job's declaration."""

    name: str  # the job file and the CLI subcommand ("import" runs jobs/ingest.py)
    description: str
    run: Callable[[JobContext], Any]  # returns the report (JSON-able) or an Outcome
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    uses_ds: bool = True  # takes --ds (default: window.end)
    needs_ds: bool = True  # and cannot run without one
    uses_spark: bool = True  # takes --master
    file: str | None = None  # jobs/<file>.py when it differs from the name
    # Whether these options write (a read-only mode takes no lock), and what narrows the
    # lock beyond (job, ds), e.g. the campaigns of a per-campaign run.
    writes: Callable[[argparse.Namespace], bool] = lambda args: True
    lock_key: Callable[[argparse.Namespace], str | None] = lambda args: None

    def default_prog(self) -> str:
        return f"spark-submit jobs/{self.file or self.name}.py"


def build_parser(job: Job, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or job.default_prog(),
                                     description=job.description)
    add_config_arguments(parser)
    if job.uses_ds:
        parser.add_argument("--ds", type=dt.date.fromisoformat, default=None,
                            help="snapshot date YYYY-MM-DD (default: the config's window.end)")
    job.arguments(parser)
    add_lock_argument(parser)
    if job.uses_spark:
        parser.add_argument("--master", default=None,
                            help="Spark master, e.g. local[2], yarn, spark://host:7077 "
                                 "(default: spark-submit's, else local[*])")
    return parser


def main(job: Job, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``job`` with command-line ``argv``; the process exit status."""
    prog = prog or job.default_prog()
    args = build_parser(job, prog).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    try:
        config = load_config(args.config, overrides=args.overrides)
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ds = (args.ds or config.window.end) if job.uses_ds else None
    if job.uses_ds and job.needs_ds and ds is None:
        print(f"{prog}: error: --ds is required (the config has no window.end)", file=sys.stderr)
        return EXIT_USAGE
    context = JobContext(job.name, args, config, ds)
    try:
        if job.writes(args):
            with attempt(config, job.name, ds, job.lock_key(args), args.wait_for_lock) as run:
                result = job.run(context)
                if isinstance(result, (dict, Outcome)):
                    _add_attempt(result, run.report())
        else:
            result = job.run(context)
    except (ConfigError, UsageError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (PipelineError, ManifestError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    outcome = result if isinstance(result, Outcome) else Outcome(result)
    print(json.dumps(outcome.report) if outcome.compact else json.dumps(outcome.report, indent=2))
    if outcome.message:
        print(f"{prog}: {outcome.message}", file=sys.stderr)
    return outcome.exit_code


def _add_attempt(result: dict | Outcome, report: dict) -> None:
    target = result.report if isinstance(result, Outcome) else result
    if isinstance(target, dict):
        target["attempt"] = report
