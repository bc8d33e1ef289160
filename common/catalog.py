"""Where each dataset and partition lives, so that no stage spells a path itself.

Every dataset is a folder under its ``storage`` URI (``config.storage.uri(key)``). Daily
datasets are partitioned by the snapshot date (``ds=YYYY-MM-DD``), or for events and rejects
by the landing date (``dt=YYYY-MM-DD``); per-campaign datasets add ``campaign=<id>``.
"""
from __future__ import annotations

import datetime as dt

from schemas.config import PipelineConfig

DAILY_KEY = "ds"  # snapshot date: snapshots, heatmaps, embeddings, supports, scores, segments
LANDING_KEY = "dt"  # landing date: raw logs, events, rejects
CAMPAIGN_KEY = "campaign"


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
    return f"{daily_uri.rstrip('/')}/{CAMPAIGN_KEY}={campaign}"


def landing_path(dataset_uri: str, day: dt.date | str) -> str:
    """The landing partition ``<dataset>/dt=<day>`` of a raw log, events or rejects."""
    return f"{dataset_uri.rstrip('/')}/{LANDING_KEY}={_date(day)}"
