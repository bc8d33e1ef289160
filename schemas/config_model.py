"""The typed pipeline configuration: frozen dataclasses, the values their fields may take, and
their plain-dict form. schemas/config_reader.py builds them from YAML; schemas/config.py is the
entry point that every stage imports."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from schemas import SCHEMA_VERSION
from schemas.identifiers import MAX_LENGTH
from schemas.import_config import ImportConfig, import_to_dict

# Measures a channel can aggregate, per raw source. Amount/points measures sum values,
# count measures count rows, quantity sums item counts.
MEASURES: dict[str, tuple[str, ...]] = {
    "purchases": ("purchase_amount", "cancel_amount", "purchase_count", "cancel_count", "quantity"),
    "points": ("points", "count"),
}
SOURCES = tuple(MEASURES)
CANCELLATION_MODES = ("separate", "net")
VALUE_TRANSFORMS = ("none", "log1p")
RAW_FORMATS = ("parquet", "csv", "jsonl")
MISSING_PARTITIONS = ("warn", "fail")
EVENT_TIME_PRECISIONS = ("second", "day")
# auto: the Arrow engine where it applies (local Parquet of text columns), else Spark.
ENCODE_ENGINES = ("auto", "spark")
URI_SCHEMES = ("file", "s3a", "hdfs", "gs", "abfs", "abfss", "wasbs")
STORAGE_KEYS = (
    "raw_purchases", "raw_points", "demographics", "source_labels", "target_labels",
    "campaign_seeds", "campaign_registry", "opt_outs", "events", "snapshots", "heatmaps",
    "rejects", "manifests", "models", "embeddings", "supports", "scores", "segments", "reports",
    "ground_truth", "erasures",
)
# A config's names become feature keys, column names and file names: lower_snake_case, within
# the identifier rule's length (schemas/identifiers.py); \Z, since $ would let "name\n" pass.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,%d}\Z" % (MAX_LENGTH - 1))
GENRE_RE = re.compile(r"^(\*|[^/\s][^/]*(/[^/]+)*)$")


class ConfigError(ValueError):
    """A configuration that cannot be used. ``problems`` lists one ``field: message`` each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        bullet = "\n  - "
        super().__init__(f"invalid config {source}:{bullet}{bullet.join(problems)}")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class WindowConfig:
    """The feature window: ``days`` local calendar days ending at (and including) ``ds``."""

    days: int = 365
    timezone: str = "UTC"  # local zone in which (day, hour) cells are binned
    end: dt.date | None = None  # default ds when a command is run without --ds

    def start(self, ds: dt.date) -> dt.date:
        """First local date of the window that ends at ``ds``."""
        return ds - dt.timedelta(days=self.days - 1)


@dataclass(frozen=True)
class RawConfig:
    """How raw logs look as they land, and how much of them may be rejected."""

    format: str = "parquet"
    timestamp_timezone: str = "UTC"  # zone of timestamps that carry no offset
    valid_from: dt.date = dt.date(2000, 1, 1)  # earlier timestamps are rejected as out of range
    valid_until: dt.date = dt.date(2100, 1, 1)  # later timestamps are rejected as out of range
    max_reject_ratio: float = 0.05
    # Landing dates of the window without a partition: warn (log, report, manifest) or fail.
    missing_partitions: str = "warn"
    # 'second': event_time must be a date-time. 'day': a date alone (a daily export) is also
    # taken, as that date at day_hour o'clock in timestamp_timezone.
    event_time_precision: str = "second"
    day_hour: int = 12
    # 'auto': jobs/encode.py encodes local Parquet whose raw columns are text with the Arrow
    # engine (one Spark task per landing date, no shuffle), anything else with the Spark
    # engine, and updates a snapshot on local storage in Arrow (jobs/encoding/snapshot_arrow.py);
    # 'spark': always the Spark engine and a Spark snapshot. Both give the same output.
    engine: str = "auto"


@dataclass(frozen=True)
class PseudonymisationConfig:
    """Keyed HMAC-SHA256 of user ids. The key never lives in the config itself."""

    enabled: bool = True
    key_env: str = "METAPROFILE_PSEUDONYM_KEY"
    key_file: str | None = None


@dataclass(frozen=True)
class ChannelRule:
    """One heatmap channel: which rows feed it (``genre`` prefix or ``point_type``) and how."""

    name: str
    measure: str
    genre: str | None = None  # purchases: genre-path prefix; '*' matches every known genre
    point_type: str | None = None  # points: exact point type

    def matches_genre(self, genre: str) -> bool:
        return self.genre == "*" or genre == self.genre or genre.startswith(f"{self.genre}/")


@dataclass(frozen=True)
class ModalityConfig:
    """One time-heatmap modality: a raw source and its ordered channels (index = position)."""

    name: str
    source: str
    channels: tuple[ChannelRule, ...]
    cancellations: str = "separate"  # purchases: 'separate' or 'net' (cancels subtract)

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    def channel_index(self, name: str) -> int:
        return [c.name for c in self.channels].index(name)

    def is_known_genre(self, genre: str | None) -> bool:
        """A genre is known when a specific (non-'*') prefix rule matches it."""
        return genre is not None and any(
            c.genre not in (None, "*") and c.matches_genre(genre) for c in self.channels)

    def channels_for_genre(self, genre: str | None) -> tuple[int, ...]:
        """Channel indices a purchase row of ``genre`` feeds; empty for an unknown genre.

        Rules are independent: a row feeds *every* channel whose prefix matches, so
        ``fashion`` and ``fashion/shoes`` can both be channels (a total and a detail), and
        ``*`` adds a whole-modality channel. A genre that no specific prefix matches is
        unknown and is quarantined, never silently routed to ``*``. This is the reference
        definition; the Spark encoder implements it with column expressions.
        """
        if not self.is_known_genre(genre):
            return ()
        return tuple(i for i, c in enumerate(self.channels)
                     if c.genre is not None and c.matches_genre(genre))


@dataclass(frozen=True)
class CategoricalField:
    name: str
    vocabulary: tuple[str, ...]  # id 0 is reserved for missing/unknown values


@dataclass(frozen=True)
class DemographicsConfig:
    numeric: tuple[str, ...] = ()
    categorical: tuple[CategoricalField, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return self.numeric + tuple(c.name for c in self.categorical)


@dataclass(frozen=True)
class TaskRule:
    """How ``metaprofile tasks`` labels a task (1 positive, 0 negative, no row unlabelled).

    From the raw purchase log, over the task's label period P, among a universe of users:

    * ``new_buyer``: 1 = buys ``genre`` in P and never in the window; 0 = buys it in
      neither; users who bought it in the window are unlabelled;
    * ``buys_at_least``: 1 = at least ``times`` purchases of ``genre`` in P; 0 = fewer.

    ``universe``: ``active`` (a purchase in the window and one in P; the default) or ``all``
    (a purchase in the window or in P). ``genre`` is a path prefix, matched on whole segments.

    From other tables, with no label period:

    * ``attribute``: ``condition``, a Spark SQL condition over the demographics table's
      fields (``age IN ('55-64', '65+')``, ``kids_count >= 1``): 1 where true, 0 where
      false, unlabelled where null (the field unknown) or without a demographics row;
    * ``query``: ``query``, a Spark SQL SELECT over the ``import.tables`` views that returns
      ``user_id`` and ``label`` (1, 0, or null for unlabelled), one row per user;
      ``${window.start}`` and ``${window.end}`` are the window's dates.
    """

    kind: str
    genre: str = ""
    times: int = 1
    universe: str = "active"
    condition: str = ""
    query: str = ""

    @property
    def from_log(self) -> bool:
        return self.kind in LOG_RULE_KINDS


LOG_RULE_KINDS = ("new_buyer", "buys_at_least")
TASK_RULE_KINDS = (*LOG_RULE_KINDS, "attribute", "query")
TASK_UNIVERSES = ("active", "all")
STORAGE_ROOT_PLACEHOLDER = "${storage.root}"  # allowed in the import section's URIs


@dataclass(frozen=True)
class TaskConfig:
    """A labelled task. Target tasks carry the label period, which must follow the window;
    a task with a ``rule`` carries one too, and its labels come from the logs."""

    name: str
    description: str = ""
    label_period_start: dt.date | None = None
    label_period_end: dt.date | None = None
    rule: TaskRule | None = None


BEHAVIOUR_KINDS = ("new_buyer", "active")


def source_cut(task: TaskConfig, window_end: dt.date | None) -> int | None:
    """The backtest cut of a log-rule source task labelled inside the window: the days
    between its label period's end and the window's end (the config checks that it is one
    of ``tasks.behaviour.cut_days``). None for every other task: its labels hold at every cut.
    """
    rule, end = task.rule, task.label_period_end
    if rule is None or not rule.from_log or end is None or window_end is None or (
            end > window_end):
        return None
    return (window_end - end).days


@dataclass(frozen=True)
class BehaviourTasksConfig:
    """Source tasks derived from the logs themselves (the paper's section 3.3.3 "service
    usage related tasks"), so that every user is labelled for many tasks and a retailer
    without survey labels can still meta-train.

    For each listed channel (``modality/channel``; empty = every channel) and kind, the last
    ``horizon_days`` of the window label the task and meta-training sees only the days before
    them (the heatmap shifted right by the horizon, zero-padded):

    * ``new_buyer`` — positive: active in the channel within the horizon and never before;
      negative: never active in it at all; users active before the horizon are unlabelled.
      It has the shape of a lookalike target task (a new adopter of a genre or brand).
    * ``active`` — positive: active in the channel within the horizon; every user labelled.

    **Backtest cuts** (``cut_days``): each training batch takes one cut ``c`` days before
    the window's end, drawn per batch. The horizon then ends at the cut: its label period
    is days ``[D − c − h, D − c)``, and the input is the days before it, shifted to end at
    ``D``. So the network sees the same task family at several points of the year, as the
    target tasks will see it after the window. Every label lies inside the window, and no
    target label is used. ``(0,)`` is the one cut at the window's end.

    A task that the first training batches cannot fill with positives and negatives is
    dropped at training time and reported. ``kinds: []`` turns the channel tasks off and
    keeps the shift and the cuts, for source tasks with a log rule whose label period lies
    inside the window: such a task must end at a cut (``window.end − c``) and last at most
    ``horizon_days``, and its labels count only in the batches drawn at its cut
    (:func:`source_cut`; ``metaprofile tasks --suggest-family`` writes a family of them).
    """

    horizon_days: int = 0  # 0 = no behaviour tasks
    kinds: tuple[str, ...] = ("new_buyer",)
    channels: tuple[str, ...] = ()  # "modality/channel" names; empty = every channel
    cut_days: tuple[int, ...] = (0,)  # backtest cuts, days before the window's end

    @property
    def enabled(self) -> bool:
        return self.horizon_days > 0


@dataclass(frozen=True)
class StorageConfig:
    """Where each dataset lives. Every value is a URI; local paths are made absolute at load."""

    root: str
    paths: Mapping[str, str] = field(default_factory=dict)

    def uri(self, key: str) -> str:
        if key not in self.paths:
            raise KeyError(f"storage.{key} is not a known dataset; known: {', '.join(self.paths)}")
        return self.paths[key]


@dataclass(frozen=True)
class HeatmapsConfig:
    """How ``jobs/heatmaps.py`` splits users and sizes its TFRecord shards.

    The split is a pure function of the (pseudonymised) user id and ``split_salt``, so a user
    stays in the same split across nights as long as the salt is unchanged.
    """

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    split_salt: str = "metaprofile-split-v1"
    max_shard_mb: float = 64.0  # a shard is closed once its compressed size passes this

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True)
class LookalikeConfig:
    """Campaign checks and segment export of the nightly lookalike jobs."""

    min_seeds: int = 10         # positive seeds a campaign needs after every exclusion
    holdout: float = 0.2        # share of positive seeds kept out of the support set to
                                # estimate the segment's precision
    formats: tuple[str, ...] = ("csv", "parquet")
    head: str = "probe"         # how a campaign scores users: probe (a logistic regression on
                                # the embedding and the aggregate features, fitted on its
                                # seeds), prototype (the relation module f_θ, zero-training),
                                # or auto: per campaign, one of probe, prototype, the
                                # aggregates alone and the seed centroid, by
                                # cross-validation on its seeds (model/auto_head.py)
    background_users: int = 2000  # unlabelled users drawn as the probe's negatives (beside
                                  # any explicit negative seeds) and for its standardisation
    control_share: float = 0.1  # share of each segment held out as its control group: a
                                # fixed hash of campaign and user, written to control.csv
                                # and never in the segment files (0: no control group)


LOOKALIKE_HEADS = ("probe", "prototype", "auto")


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    window: WindowConfig
    raw: RawConfig
    pseudonymisation: PseudonymisationConfig
    modalities: tuple[ModalityConfig, ...]
    value_transform: str
    demographics: DemographicsConfig
    source_tasks: tuple[TaskConfig, ...]
    target_tasks: tuple[TaskConfig, ...]
    storage: StorageConfig
    version: int = SCHEMA_VERSION
    heatmaps: HeatmapsConfig = field(default_factory=HeatmapsConfig)
    lookalike: LookalikeConfig = field(default_factory=LookalikeConfig)
    behaviour: BehaviourTasksConfig = field(default_factory=BehaviourTasksConfig)
    imports: ImportConfig = field(default_factory=ImportConfig)  # the `import` section
    # The `model`, `train` and `evaluate` sections as written (plain data): the layer that
    # runs them types them with schemas.settings.read_settings.
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """The config's ``model``, ``train`` or ``evaluate`` settings (empty when unset)."""
        return self.settings.get(name, {})

    def modality(self, name: str) -> ModalityConfig:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"no modality {name!r}; configured: {[m.name for m in self.modalities]}")

    def modalities_for(self, source: str) -> tuple[ModalityConfig, ...]:
        return tuple(m for m in self.modalities if m.source == source)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form that :func:`parse_config` accepts back (dates as ISO strings)."""
        return _to_plain(
            {
                "version": self.version,
                "name": self.name,
                "window": dataclasses.asdict(self.window),
                "raw": dataclasses.asdict(self.raw),
                "pseudonymisation": dataclasses.asdict(self.pseudonymisation),
                "value_transform": self.value_transform,
                "modalities": [
                    {
                        "name": m.name,
                        "source": m.source,
                        **({"cancellations": m.cancellations}
                           if m.source == "purchases" else {}),
                        "channels": [
                            {k: v for k, v in dataclasses.asdict(c).items() if v is not None}
                            for c in m.channels
                        ],
                    }
                    for m in self.modalities
                ],
                "demographics": {
                    "numeric": list(self.demographics.numeric),
                    "categorical": [
                        {"name": c.name, "vocabulary": list(c.vocabulary)}
                        for c in self.demographics.categorical
                    ],
                },
                "tasks": {
                    "source": [_task_dict(t) for t in self.source_tasks],
                    "target": [_task_dict(t) for t in self.target_tasks],
                    **({"behaviour": {"horizon_days": self.behaviour.horizon_days,
                                      "kinds": list(self.behaviour.kinds),
                                      "channels": list(self.behaviour.channels),
                                      "cut_days": list(self.behaviour.cut_days)}}
                       if self.behaviour.enabled else {}),
                },
                "heatmaps": dataclasses.asdict(self.heatmaps),
                "lookalike": {**dataclasses.asdict(self.lookalike),
                              "formats": list(self.lookalike.formats)},
                "storage": {"root": self.storage.root, **dict(self.storage.paths)},
                **({"import": import_to_dict(self.imports)} if self.imports.enabled else {}),
                **{name: dict(values) for name, values in self.settings.items()},
            }
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _task_dict(t: TaskConfig) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(t).items() if v not in (None, "")}
    if t.rule is not None:
        d["rule"] = rule_dict(t.rule)
    return d


def rule_dict(rule: TaskRule) -> dict[str, Any]:
    """A rule's fields that apply to its kind, as the config writes them."""
    keys = (("genre", "times", "universe") if rule.from_log
            else ("condition",) if rule.kind == "attribute" else ("query",))
    return {"kind": rule.kind, **{k: getattr(rule, k) for k in keys}}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def join_uri(base: str, relative: str) -> str:
    """Resolve ``relative`` against ``base`` (a URI or local path); absolute inputs win."""
    if "://" in relative or os.path.isabs(relative):
        return relative.rstrip("/") or "/"
    if "://" in base:
        return f"{base.rstrip('/')}/{relative.strip('/')}" if relative not in ("", ".") else base
    return os.path.normpath(os.path.join(os.path.abspath(base), relative))
