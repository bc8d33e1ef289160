"""Typed pipeline configuration: YAML -> frozen dataclasses, validated once at load.

Every stage (encode, heatmaps, training, lookalike, evaluation) reads the same
:class:`PipelineConfig`. Validation collects *all* problems and reports each with the dotted
path of the offending field, e.g. ``modalities[0].channels[2].measure: 'amout' is not one of
...``, so a user can fix a config in one pass.

Only the standard library and PyYAML are used here: this module is imported by Spark jobs,
TensorFlow processes and Airflow DAG files alike.

This module is the entry point: :func:`load_config` and the command-line options. The
dataclasses live in ``schemas/config_model.py`` and the YAML reader in
``schemas/config_reader.py``; import both from here.
"""
from __future__ import annotations

import os
from typing import Iterable

import yaml

from schemas.config_model import (
    BehaviourTasksConfig,
    ConfigError,
    ModalityConfig,
    PipelineConfig,
    PseudonymisationConfig,
    TaskConfig,
    WindowConfig,
    join_uri,
    rule_dict,
    source_cut,
)
from schemas.config_reader import ConfigLoader, apply_overrides, parse_config

__all__ = [
    "BehaviourTasksConfig", "ConfigError", "ModalityConfig", "PipelineConfig",
    "PseudonymisationConfig", "TaskConfig", "WindowConfig", "add_config_arguments",
    "add_override_argument", "apply_overrides", "join_uri", "load_config", "parse_config",
    "rule_dict", "source_cut"]


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (),
                base_dir: str | os.PathLike | None = None) -> PipelineConfig:
    """Read a YAML config file, apply ``key.path=value`` overrides, validate, and return it.

    Relative local storage paths are resolved against ``base_dir`` (default: the current
    working directory), so every later stage sees absolute URIs.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=ConfigLoader)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from None
    raw = apply_overrides(raw if raw is not None else {}, overrides, source=path)
    return parse_config(raw, source=path, base_dir=base_dir)


OVERRIDE_HELP = ("override a config field, e.g. storage.root=s3a://bucket/mp or "
                 "tasks.target[0].label_period_start=2017-10-01 (repeatable; VALUE is read as "
                 "YAML; [i] picks a list element, from 0)")


def add_config_arguments(parser) -> None:
    """``--config FILE`` (required) and ``--set KEY=VALUE``: how every command and job takes
    its pipeline config (``argparse`` parser)."""
    parser.add_argument("--config", required=True,
                        help="pipeline config YAML, e.g. conf/synthetic.yaml")
    add_override_argument(parser)


def add_override_argument(parser) -> None:
    """The ``--set KEY=VALUE`` option every command and job takes (``argparse`` parser)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=OVERRIDE_HELP)
