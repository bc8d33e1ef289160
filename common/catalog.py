"""Where each dataset and partition lives, so that no stage spells a path itself.

Every dataset is a folder under its ``storage`` URI (``config.storage.uri(key)``). Daily
datasets are partitioned by the snapshot date (``ds=YYYY-MM-DD``), or for events and rejects
by the landing date (``dt=YYYY-MM-DD``); per-campaign datasets add ``campaign=<id>``.

A campaign id comes from data (a registry or seed row), so every path built from one is
checked twice before anything is created: the id must keep the identifier rule
(``schemas/identifiers.py``), and the path must still lie inside its parent folder.
"""
from __future__ import annotations

import datetime as dt

from common.errors import PipelineError
from schemas.config import PipelineConfig
from schemas.identifiers import IdentifierError, check_identifier, shown, within

DAILY_KEY = "ds"  # snapshot date: snapshots, heatmaps, embeddings, supports, scores, segments
LANDING_KEY = "dt"  # landing date: raw logs, events, rejects
CAMPAIGN_KEY = "campaign"
SPARK_CAMPAIGN_COLUMN = "campaign_id"  # the column Spark's partitionBy writes folders for


class UnsafePathError(PipelineError):
    """A path built from data that breaks the identifier rule or leaves its folder."""


def _date(day: dt.date | str) -> str:
    return day.isoformat() if isinstance(day, dt.date) else str(day)


def partition(config: PipelineConfig, key: str, ds: dt.date | str,
              campaign: str | None = None) -> str:
    """``<storage key>/ds=<ds>``, or ``…/campaign=<id>`` inside it."""
    uri = daily_path(config.storage.uri(key), ds)
    return uri if campaign is None else campaign_path(uri, campaign)


def daily_path(dataset_uri: str, ds: dt.date | str) -> str:
    """The daily partition ``<dataset>/ds=<ds>`` of a dataset given by its URI."""
    return f"{dataset_uri.rstrip('/')}/{DAILY_KEY}={_date(ds)}"


def campaign_path(daily_uri: str, campaign: str) -> str:
    """One campaign's folder inside a daily partition (or its staging copy)."""
    return child_folder(daily_uri, CAMPAIGN_KEY, campaign)


def spark_campaign_folder(written_uri: str, campaign: str) -> str:
    """The folder ``partitionBy("campaign_id")`` wrote for one campaign under ``written_uri``
    (Spark escapes no character that the identifier rule allows, so the name is exact)."""
    return child_folder(written_uri, SPARK_CAMPAIGN_COLUMN, campaign)


def child_folder(parent_uri: str, key: str, value: str) -> str:
    """``<parent>/<key>=<value>`` for an identifier ``value``, refused (before anything is
    created) unless ``value`` keeps the identifier rule and the result stays in ``parent``."""
    try:
        check_identifier(value, f"{key} id", "fix it where it was entered (the campaign "
                                             "registry, the seed list or the command line)")
    except IdentifierError as exc:
        raise UnsafePathError(str(exc)) from None
    path = f"{parent_uri.rstrip('/')}/{key}={value}"
    if not within(parent_uri, path):  # a second line of defence: never reached by the rule
        raise UnsafePathError(f"{shown(path, 200)} would lie outside {shown(parent_uri, 200)}")
    return path


def landing_path(dataset_uri: str, day: dt.date | str) -> str:
    """The landing partition ``<dataset>/dt=<day>`` of a raw log, events or rejects."""
    return f"{dataset_uri.rstrip('/')}/{LANDING_KEY}={_date(day)}"
