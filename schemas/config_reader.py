"""YAML to a validated PipelineConfig: the safe loader, --set overrides, and the field reader that
collects every problem with its dotted path (window.days: 0 is outside 1..3660)."""
from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from schemas import SCHEMA_VERSION
from schemas.config_model import (
    BEHAVIOUR_KINDS,
    CANCELLATION_MODES,
    ENCODE_ENGINES,
    EVENT_TIME_PRECISIONS,
    GENRE_RE,
    LOG_RULE_KINDS,
    LOOKALIKE_HEADS,
    MEASURES,
    MISSING_PARTITIONS,
    NAME_RE,
    RAW_FORMATS,
    SOURCES,
    STORAGE_KEYS,
    STORAGE_ROOT_PLACEHOLDER,
    TASK_RULE_KINDS,
    TASK_UNIVERSES,
    URI_SCHEMES,
    VALUE_TRANSFORMS,
    BehaviourTasksConfig,
    CategoricalField,
    ChannelRule,
    ConfigError,
    DemographicsConfig,
    HeatmapsConfig,
    LookalikeConfig,
    ModalityConfig,
    PipelineConfig,
    PseudonymisationConfig,
    RawConfig,
    StorageConfig,
    TaskConfig,
    TaskRule,
    WindowConfig,
    join_uri,
)
from schemas.identifiers import MAX_LENGTH, shown
from schemas.import_config import check_query, parse_import
from schemas.settings import SETTINGS_SECTIONS

_OVERRIDE_PART_RE = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")  # name, then [i][j]...


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML that leaves dates as strings. PyYAML turns ``2011-09-31`` into a date
    itself and fails with a bare ``ValueError``; kept as text, the field reader reports it
    with the field's path (``window.end: expected a date YYYY-MM-DD, got '2011-09-31'``)."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _override_steps(key: str, item: str, source: str) -> list[str | int]:
    """``tasks.target[0].label_period_start`` -> ``['tasks', 'target', 0, 'label_period_start']``."""
    steps: list[str | int] = []
    for part in key.split("."):
        match = _OVERRIDE_PART_RE.match(part.strip())
        if not match:
            raise ConfigError(source, [f"override {item!r}: {part!r} is not a field name, "
                                       "optionally followed by list indexes such as [0]"])
        steps.append(match.group(1))
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    return steps


def apply_overrides(raw: Any, overrides: Iterable[str], source: str = "<overrides>") -> Any:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a nested mapping, in order.

    A list element is addressed by its index: ``tasks.target[0].label_period_start=...``.
    A missing mapping on the way is created; a missing list element is an error that says
    how long the list is."""
    if not isinstance(raw, dict):
        return raw
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(source, [f"override {item!r}: expected key.path=value"])
        steps = _override_steps(key.strip(), item, source)
        node: Any = result
        for done, (step, following) in enumerate(zip(steps, steps[1:])):
            path = _steps_path(steps[:done + 1])
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    raise ConfigError(source, [_missing_element(item, steps[:done], node, step)])
                child = node[step]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(source, [f"override {item!r}: {_steps_path(steps[:done])} "
                                               "is not a mapping"])
                child = node.get(step)
            if isinstance(following, int) and not isinstance(child, list):
                raise ConfigError(source, [f"override {item!r}: {path} is not a list"])
            if isinstance(following, str) and isinstance(child, list):
                raise ConfigError(source, [f"override {item!r}: {path} is a list; address one "
                                           f"element, e.g. {path}[0].{following}"])
            if isinstance(following, str) and not isinstance(child, dict):
                child = {}
                node[step] = child
            node = child
        last = steps[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise ConfigError(source, [_missing_element(item, steps[:-1], node, last)])
        elif not isinstance(node, dict):
            raise ConfigError(source, [f"override {item!r}: {_steps_path(steps[:-1])} is not "
                                       "a mapping"])
        try:
            node[last] = yaml.load(value, Loader=ConfigLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(source, [f"override {item!r}: the value is not valid YAML "
                                       f"({str(exc).splitlines()[0]}); quote it"]) from None
    return result


def _steps_path(steps: Sequence[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s)
                   for i, s in enumerate(steps))


def _missing_element(item: str, steps: Sequence[str | int], node: Any, index: int) -> str:
    where = _steps_path(steps)
    if not isinstance(node, list):
        return f"override {item!r}: {where} is not a list"
    return (f"override {item!r}: {where} has {len(node)} element(s), so [{index}] does not "
            f"exist (indexes start at 0)")


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def parse_config(raw: Any, source: str = "<config>",
                 base_dir: str | os.PathLike | None = None) -> PipelineConfig:
    """Validate a plain mapping (as from YAML) and build the typed config."""
    r = _Reader(source)
    cfg = r.build(raw, base_dir=os.fspath(base_dir) if base_dir is not None else os.getcwd())
    if r.problems:
        raise ConfigError(source, r.problems)
    return cfg


class _Reader:
    """Walks the raw mapping, recording every problem with its dotted field path."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    # -- primitive helpers -------------------------------------------------------------
    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value: Any, where: str, allowed: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where, f"expected a mapping, got {type(value).__name__}")
            return {}
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                self.problem(f"{where}.{key}" if where else str(key),
                             f"unknown field; allowed: {', '.join(allowed)}")
        return value

    def get(self, m: dict, key: str, where: str, kind: type | tuple, default: Any = ...,
            required: bool = False) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in m or m[key] is None:
            if required:
                self.problem(path, "is required")
            return None if default is ... else default
        value = m[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if bool in kinds and not isinstance(value, bool):
            self.problem(path, f"expected true/false, got {value!r}")
            return None if default is ... else default
        if int in kinds and float not in kinds and isinstance(value, bool):
            self.problem(path, f"expected an integer, got {value!r}")
            return None if default is ... else default
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            names = "/".join(k.__name__ for k in kinds)
            self.problem(path, f"expected {names}, got {type(value).__name__} {value!r}")
            return None if default is ... else default
        return value

    def choice(self, m: dict, key: str, where: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(m, key, where, str, default)
        if value not in choices:
            self.problem(f"{where}.{key}" if where else key,
                         f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def date(self, m: dict, key: str, where: str, default: Any = None) -> dt.date | None:
        path = f"{where}.{key}" if where else key
        value = m.get(key, default)
        if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        self.problem(path, f"expected a date YYYY-MM-DD, got {value!r}")
        return default if isinstance(default, dt.date) else None

    def timezone(self, m: dict, key: str, where: str, default: str) -> str:
        value = self.get(m, key, where, str, default)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(f"{where}.{key}", f"unknown time zone {value!r} (use an IANA name "
                                           "such as 'Asia/Tokyo' or 'UTC')")
            return default
        return value

    def name(self, m: dict, key: str, where: str) -> str:
        value = self.get(m, key, where, str, required=True)
        if value is not None and not NAME_RE.match(value):
            self.problem(f"{where}.{key}", f"{shown(value)} must be lower_snake_case "
                                           f"(letters, digits, underscores; at most "
                                           f"{MAX_LENGTH} characters), as it also becomes "
                                           "a column and file name")
        return value or ""

    def sequence(self, value: Any, where: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, f"expected a list, got {type(value).__name__}")
            return []
        return value

    def unique(self, names: list[str], where: str) -> None:
        seen: set[str] = set()
        for n in names:
            if n in seen:
                self.problem(where, f"duplicate name {n!r}")
            seen.add(n)

    # -- sections ------------------------------------------------------------------------
    def build(self, raw: Any, base_dir: str) -> PipelineConfig:
        top = self.mapping(raw, "", ("version", "name", "window", "raw", "pseudonymisation",
                                     "modalities", "value_transform", "demographics", "tasks",
                                     "heatmaps", "lookalike", "storage", "import",
                                     *SETTINGS_SECTIONS))
        if not isinstance(raw, dict):
            top = {}
        version = self.get(top, "version", "", int, required=True)
        if version is not None and version != SCHEMA_VERSION:
            self.problem("version", f"config version {version} is not supported by this "
                                    f"release (expects {SCHEMA_VERSION})")
        name = self.name(top, "name", "")
        window = self.window(top.get("window"))
        raw_cfg = self.raw(top.get("raw"))
        pseudo = self.pseudonymisation(top.get("pseudonymisation"))
        modalities = self.modalities(top.get("modalities"))
        transform = self.choice(top, "value_transform", "", VALUE_TRANSFORMS, "log1p")
        demographics = self.demographics(top.get("demographics"))
        source_tasks, target_tasks, behaviour = self.tasks(top.get("tasks"), window,
                                                           modalities)
        heatmaps = self.heatmaps(top.get("heatmaps"))
        lookalike = self.lookalike(top.get("lookalike"))
        storage = self.storage(top.get("storage"), base_dir)
        imports = parse_import(self, top.get("import"), demographics.field_names,
                               lambda value, where: self.uri(
                                   value.replace(STORAGE_ROOT_PLACEHOLDER, storage.root),
                                   where, base_dir))
        settings = {}
        for section in SETTINGS_SECTIONS:
            if top.get(section) is None:
                continue
            if isinstance(top[section], dict):
                settings[section] = _deep_copy(top[section])
            else:
                self.problem(section, f"expected a mapping of {section} settings, got "
                                      f"{top[section]!r}")
        return PipelineConfig(
            settings=settings,
            name=name, window=window, raw=raw_cfg, pseudonymisation=pseudo,
            modalities=modalities, value_transform=transform, demographics=demographics,
            source_tasks=source_tasks, target_tasks=target_tasks, storage=storage,
            version=version or SCHEMA_VERSION, heatmaps=heatmaps, lookalike=lookalike,
            behaviour=behaviour, imports=imports,
        )

    def lookalike(self, value: Any) -> LookalikeConfig:
        m = self.mapping(value, "lookalike", ("min_seeds", "holdout", "formats", "head",
                                              "background_users", "control_share"))
        d = LookalikeConfig()
        formats = self.get(m, "formats", "lookalike", list, list(d.formats))
        cfg = LookalikeConfig(
            min_seeds=self.get(m, "min_seeds", "lookalike", int, d.min_seeds),
            holdout=self.get(m, "holdout", "lookalike", float, d.holdout),
            formats=tuple(formats),
            head=self.get(m, "head", "lookalike", str, d.head),
            background_users=self.get(m, "background_users", "lookalike", int,
                                      d.background_users),
            control_share=self.get(m, "control_share", "lookalike", float, d.control_share),
        )
        if cfg.head not in LOOKALIKE_HEADS:
            self.problem("lookalike.head", f"{cfg.head!r}: choose one of "
                                           f"{', '.join(LOOKALIKE_HEADS)}")
        if cfg.background_users < 10:
            self.problem("lookalike.background_users",
                         f"{cfg.background_users} must be at least 10")
        if cfg.min_seeds < 1:
            self.problem("lookalike.min_seeds", f"{cfg.min_seeds} must be at least 1")
        if not 0.0 <= cfg.holdout < 1.0:
            self.problem("lookalike.holdout", f"{cfg.holdout} is outside 0..1 (1 excluded)")
        if not 0.0 <= cfg.control_share <= 0.5:
            self.problem("lookalike.control_share", f"{cfg.control_share} is outside 0..0.5 "
                                                    "(the share of a segment kept as control)")
        unknown = [f for f in cfg.formats if f not in ("csv", "parquet")]
        if unknown or not cfg.formats:
            self.problem("lookalike.formats", f"{formats!r}: choose one or more of csv, parquet")
        return cfg

    def heatmaps(self, value: Any) -> HeatmapsConfig:
        m = self.mapping(value, "heatmaps", ("train", "validation", "test", "split_salt",
                                             "max_shard_mb"))
        d = HeatmapsConfig()
        cfg = HeatmapsConfig(
            train=self.get(m, "train", "heatmaps", float, d.train),
            validation=self.get(m, "validation", "heatmaps", float, d.validation),
            test=self.get(m, "test", "heatmaps", float, d.test),
            split_salt=self.get(m, "split_salt", "heatmaps", str, d.split_salt),
            max_shard_mb=self.get(m, "max_shard_mb", "heatmaps", float, d.max_shard_mb),
        )
        for name, share in cfg.fractions.items():
            if not 0.0 <= share <= 1.0:
                self.problem(f"heatmaps.{name}", f"{share} is outside 0..1")
        if abs(sum(cfg.fractions.values()) - 1.0) > 1e-6:
            self.problem("heatmaps", f"train + validation + test = "
                                     f"{sum(cfg.fractions.values()):g}; they must add up to 1")
        if cfg.train <= 0.0:
            self.problem("heatmaps.train", "the training split must not be empty")
        if cfg.max_shard_mb <= 0:
            self.problem("heatmaps.max_shard_mb", f"{cfg.max_shard_mb} must be positive")
        return cfg

    def window(self, value: Any) -> WindowConfig:
        m = self.mapping(value, "window", ("days", "timezone", "end"))
        days = self.get(m, "days", "window", int, 365)
        if not 1 <= days <= 3660:
            self.problem("window.days", f"{days} is outside 1..3660")
            days = 365
        return WindowConfig(days=days, timezone=self.timezone(m, "timezone", "window", "UTC"),
                            end=self.date(m, "end", "window"))

    def raw(self, value: Any) -> RawConfig:
        m = self.mapping(value, "raw", ("format", "timestamp_timezone", "valid_from",
                                        "valid_until", "max_reject_ratio",
                                        "missing_partitions", "event_time_precision",
                                        "day_hour", "engine"))
        d = RawConfig()
        cfg = RawConfig(
            format=self.choice(m, "format", "raw", RAW_FORMATS, d.format),
            timestamp_timezone=self.timezone(m, "timestamp_timezone", "raw",
                                             d.timestamp_timezone),
            valid_from=self.date(m, "valid_from", "raw", d.valid_from),
            valid_until=self.date(m, "valid_until", "raw", d.valid_until),
            max_reject_ratio=self.get(m, "max_reject_ratio", "raw", float, d.max_reject_ratio),
            missing_partitions=self.choice(m, "missing_partitions", "raw", MISSING_PARTITIONS,
                                           d.missing_partitions),
            event_time_precision=self.choice(m, "event_time_precision", "raw",
                                             EVENT_TIME_PRECISIONS, d.event_time_precision),
            day_hour=self.get(m, "day_hour", "raw", int, d.day_hour),
            engine=self.choice(m, "engine", "raw", ENCODE_ENGINES, d.engine),
        )
        if not 0 <= cfg.day_hour <= 23:
            self.problem("raw.day_hour", f"{cfg.day_hour} is outside 0..23")
        if cfg.valid_from >= cfg.valid_until:
            self.problem("raw.valid_from", f"{cfg.valid_from} is not before raw.valid_until "
                                           f"{cfg.valid_until}")
        if not 0.0 <= cfg.max_reject_ratio <= 1.0:
            self.problem("raw.max_reject_ratio", f"{cfg.max_reject_ratio} is outside 0..1")
        return cfg

    def pseudonymisation(self, value: Any) -> PseudonymisationConfig:
        m = self.mapping(value, "pseudonymisation", ("enabled", "key_env", "key_file"))
        d = PseudonymisationConfig()
        return PseudonymisationConfig(
            enabled=self.get(m, "enabled", "pseudonymisation", bool, d.enabled),
            key_env=self.get(m, "key_env", "pseudonymisation", str, d.key_env),
            key_file=self.get(m, "key_file", "pseudonymisation", str, None),
        )

    def modalities(self, value: Any) -> tuple[ModalityConfig, ...]:
        items = self.sequence(value, "modalities")
        if not items:
            self.problem("modalities", "at least one modality is required")
        result = [self.modality(item, f"modalities[{i}]") for i, item in enumerate(items)]
        self.unique([m.name for m in result], "modalities")
        return tuple(result)

    def modality(self, value: Any, where: str) -> ModalityConfig:
        m = self.mapping(value, where, ("name", "source", "channels", "cancellations"))
        name = self.name(m, "name", where)
        source = self.choice(m, "source", where, SOURCES, "purchases")
        cancellations = self.choice(m, "cancellations", where, CANCELLATION_MODES, "separate")
        if source != "purchases" and "cancellations" in m:
            self.problem(f"{where}.cancellations", "only applies to a purchases modality")
        items = self.sequence(m.get("channels"), f"{where}.channels")
        if not items:
            self.problem(f"{where}.channels", "at least one channel is required")
        channels = [self.channel(c, f"{where}.channels[{i}]", source) for i, c in enumerate(items)]
        self.unique([c.name for c in channels], f"{where}.channels")
        keys = [(c.genre, c.point_type, c.measure) for c in channels]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                self.problem(f"{where}.channels[{i}]", f"repeats the rule of channel "
                                                       f"{keys.index(key)} ({key[0] or key[1]} × "
                                                       f"{key[2]})")
        return ModalityConfig(name=name, source=source, channels=tuple(channels),
                              cancellations=cancellations)

    def channel(self, value: Any, where: str, source: str) -> ChannelRule:
        m = self.mapping(value, where, ("name", "measure", "genre", "point_type"))
        measure = self.choice(m, "measure", where, MEASURES[source], MEASURES[source][0])
        genre = self.get(m, "genre", where, str, None)
        point_type = self.get(m, "point_type", where, str, None)
        if source == "purchases":
            if genre is None:
                self.problem(f"{where}.genre", "is required for a purchases channel "
                                               "(a genre-path prefix, or '*')")
            elif not GENRE_RE.match(genre):
                self.problem(f"{where}.genre", f"{genre!r} is not a genre-path prefix like "
                                               "'fashion/tops'")
            if point_type is not None:
                self.problem(f"{where}.point_type", "only applies to a points channel")
        else:
            if point_type is None:
                self.problem(f"{where}.point_type", "is required for a points channel")
            if genre is not None:
                self.problem(f"{where}.genre", "only applies to a purchases channel")
        default_name = f"{(genre or point_type or 'x').replace('/', '_').replace('*', 'all')}_{measure}"
        name = self.get(m, "name", where, str, default_name.lower())
        return ChannelRule(name=name, measure=measure, genre=genre, point_type=point_type)

    def demographics(self, value: Any) -> DemographicsConfig:
        m = self.mapping(value, "demographics", ("numeric", "categorical"))
        numeric = []
        for i, n in enumerate(self.sequence(m.get("numeric"), "demographics.numeric")):
            if not isinstance(n, str) or not NAME_RE.match(n):
                self.problem(f"demographics.numeric[{i}]", f"{n!r} is not a lower_snake_case "
                                                           "field name")
            else:
                numeric.append(n)
        categorical = []
        for i, c in enumerate(self.sequence(m.get("categorical"), "demographics.categorical")):
            where = f"demographics.categorical[{i}]"
            cm = self.mapping(c, where, ("name", "vocabulary"))
            name = self.name(cm, "name", where)
            vocab = self.sequence(cm.get("vocabulary"), f"{where}.vocabulary")
            if not vocab:
                self.problem(f"{where}.vocabulary", "needs at least one value")
            vocab = [str(v) for v in vocab]
            self.unique(vocab, f"{where}.vocabulary")
            categorical.append(CategoricalField(name=name, vocabulary=tuple(vocab)))
        cfg = DemographicsConfig(numeric=tuple(numeric), categorical=tuple(categorical))
        self.unique(list(cfg.field_names), "demographics")
        return cfg

    def tasks(self, value: Any, window: WindowConfig, modalities) -> tuple:
        m = self.mapping(value, "tasks", ("source", "target", "behaviour"))
        source = [self.task(t, f"tasks.source[{i}]", target=False)
                  for i, t in enumerate(self.sequence(m.get("source"), "tasks.source"))]
        target = [self.task(t, f"tasks.target[{i}]", target=True)
                  for i, t in enumerate(self.sequence(m.get("target"), "tasks.target"))]
        behaviour = self.behaviour(m.get("behaviour"), window, modalities)
        if not source and not (behaviour.enabled and behaviour.kinds):
            self.problem("tasks.source", "at least one source task is required, or behaviour "
                                         "tasks (tasks.behaviour.horizon_days > 0 and a kind)")
        self.unique([t.name for t in source], "tasks.source")
        self.unique([t.name for t in target], "tasks.target")
        for name in sorted({t.name for t in source} & {t.name for t in target}):
            self.problem("tasks.target", f"{name!r} is also a source task; source and target "
                                         "tasks must be disjoint")
        if window.end is not None:
            dated = [(f"tasks.target[{i}]", "target", t) for i, t in enumerate(target)]
            dated += [(f"tasks.source[{i}]", "rule", t) for i, t in enumerate(source)
                      if t.rule and not self.at_cut(f"tasks.source[{i}]", t, window, behaviour)]
            for where, kind, t in dated:
                if t.label_period_start is not None and t.label_period_start <= window.end:
                    self.problem(f"{where}.label_period_start",
                                 f"{t.label_period_start} is not after window.end "
                                 f"{window.end}; {kind} labels must come from after the "
                                 "feature window")
        return tuple(source), tuple(target), behaviour

    def at_cut(self, where: str, task: TaskConfig, window: WindowConfig,
               behaviour: BehaviourTasksConfig) -> bool:
        """True for a log-rule source task labelled inside the window, at a backtest cut;
        a problem when its label period does not sit where the shifted input ends."""
        rule, start, end = task.rule, task.label_period_start, task.label_period_end
        if rule is None or not rule.from_log or start is None or end is None or (
                start > window.end):
            return False
        if end > window.end:
            self.problem(f"{where}.label_period_end", f"{end} is after window.end "
                         f"{window.end} while the period starts inside the window; a source "
                         "task's label period lies wholly after the window or wholly in it")
        elif not behaviour.enabled:
            self.problem(f"{where}.label_period_start", f"{start} is not after window.end "
                         f"{window.end}; rule labels must come from after the feature window, "
                         "or from inside it at a backtest cut, where the input ends before "
                         "them: set tasks.behaviour.horizon_days (and cut_days)")
        elif (window.end - end).days not in behaviour.cut_days:
            self.problem(f"{where}.label_period_end", f"{end} is {(window.end - end).days} "
                         f"days before window.end; a label period inside the window ends at a "
                         f"backtest cut, one of tasks.behaviour.cut_days "
                         f"{list(behaviour.cut_days)} days before it")
        elif (end - start).days + 1 > behaviour.horizon_days:
            self.problem(f"{where}.label_period_start", f"the period {start} .. {end} is "
                         f"{(end - start).days + 1} days, longer than "
                         f"tasks.behaviour.horizon_days = {behaviour.horizon_days}: the input "
                         "would show the first days of the label")
        return True

    def behaviour(self, value: Any, window: WindowConfig, modalities) -> BehaviourTasksConfig:
        where = "tasks.behaviour"
        if value is None:
            return BehaviourTasksConfig()
        m = self.mapping(value, where, ("horizon_days", "kinds", "channels", "cut_days"))
        d = BehaviourTasksConfig()
        horizon = self.get(m, "horizon_days", where, int, d.horizon_days)
        if horizon is not None and not 0 <= horizon < window.days:
            self.problem(f"{where}.horizon_days", f"{horizon} must lie in [0, window.days = "
                                                  f"{window.days}); 0 turns them off")
        kinds = [str(k) for k in self.get(m, "kinds", where, list, list(d.kinds)) or []]
        for k in kinds:
            if k not in BEHAVIOUR_KINDS:
                self.problem(f"{where}.kinds", f"{k!r} is not one of "
                                               f"{', '.join(BEHAVIOUR_KINDS)}")
        known = [f"{mod.name}/{c.name}" for mod in modalities for c in mod.channels]
        channels = [str(c) for c in self.get(m, "channels", where, list, []) or []]
        for c in channels:
            if c not in known:
                self.problem(f"{where}.channels", f"{c!r} is not a configured channel; use "
                                                  f"modality/channel, one of {known}")
        self.unique(channels, f"{where}.channels")
        cuts = self.get(m, "cut_days", where, list, list(d.cut_days)) or []
        for c in cuts:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0 or (
                    horizon is not None and c + horizon >= window.days):
                self.problem(f"{where}.cut_days", f"{c!r}: a cut is a whole number of days "
                                                  "before the window's end, at least 0, and "
                                                  "cut + horizon_days must stay below "
                                                  f"window.days = {window.days}")
        if not cuts:
            self.problem(f"{where}.cut_days", "list at least one cut (0 = the window's end)")
        if len(set(cuts)) != len(cuts):
            self.problem(f"{where}.cut_days", f"{cuts} repeats a cut")
        return BehaviourTasksConfig(horizon_days=horizon or 0, kinds=tuple(kinds),
                                    channels=tuple(channels),
                                    cut_days=tuple(c for c in cuts if isinstance(c, int)))

    def task(self, value: Any, where: str, target: bool) -> TaskConfig:
        allowed = ("name", "description", "label_period_start", "label_period_end", "rule")
        m = self.mapping(value if not isinstance(value, str) else {"name": value}, where,
                         allowed if target else allowed[:2] + (
                             allowed[2:] if isinstance(value, dict) and "rule" in value else ()))
        rule = self.task_rule(m.get("rule"), f"{where}.rule") if m.get("rule") else None
        task = TaskConfig(name=self.name(m, "name", where),
                          description=self.get(m, "description", where, str, ""),
                          label_period_start=self.date(m, "label_period_start", where),
                          label_period_end=self.date(m, "label_period_end", where), rule=rule)
        if target or (rule is not None and rule.from_log):
            for key in ("label_period_start", "label_period_end"):
                if m.get(key) is None:  # a value that is not a date is reported by date()
                    self.problem(f"{where}.{key}", "is required for a target task"
                                 if target else "is required for a task with a rule")
            if (task.label_period_start and task.label_period_end
                    and task.label_period_end < task.label_period_start):
                self.problem(f"{where}.label_period_end", "is before label_period_start")
        return task

    def task_rule(self, value: Any, where: str) -> TaskRule:
        m = self.mapping(value, where, ("kind", "genre", "times", "universe", "condition",
                                        "query"))
        kind = self.choice(m, "kind", where, TASK_RULE_KINDS, "new_buyer")
        fields = ({"genre", "times", "universe"} if kind in LOG_RULE_KINDS
                  else {"condition"} if kind == "attribute" else {"query"})
        for key in sorted(set(m) - fields - {"kind"}):
            self.problem(f"{where}.{key}", f"does not apply to kind {kind} (it takes "
                                           f"{', '.join(sorted(fields))})")
        if kind == "query":
            query = check_query(self, m.get("query"), f"{where}.query")
            return TaskRule(kind=kind, query=query)
        if kind == "attribute":
            return TaskRule(kind=kind, condition=self.get(m, "condition", where, str, "",
                                                          required=True))
        rule = TaskRule(kind=kind,
                        genre=self.get(m, "genre", where, str, "", required=True),
                        times=self.get(m, "times", where, int, 1),
                        universe=self.choice(m, "universe", where, TASK_UNIVERSES, "active"))
        if rule.times < 1:
            self.problem(f"{where}.times", f"{rule.times} must be at least 1")
        if rule.genre and not GENRE_RE.match(rule.genre):
            self.problem(f"{where}.genre", f"{rule.genre!r} is not a genre path such as "
                                           "'home/kitchen'")
        return rule

    def storage(self, value: Any, base_dir: str) -> StorageConfig:
        m = self.mapping(value, "storage", ("root",) + STORAGE_KEYS)
        root = self.get(m, "root", "storage", str, required=True) or "."
        root = self.uri(root, "storage.root", base_dir)
        paths = {}
        for key in STORAGE_KEYS:
            rel = self.get(m, key, "storage", str, key)
            paths[key] = self.uri(rel, f"storage.{key}", root)
        return StorageConfig(root=root, paths=paths)

    def uri(self, value: str, where: str, base: str) -> str:
        scheme, sep, _ = value.partition("://")
        if sep:
            if scheme not in URI_SCHEMES:
                hint = " (use s3a:// for S3)" if scheme in ("s3", "s3n") else ""
                self.problem(where, f"unsupported URI scheme {scheme!r}{hint}; supported: "
                                    f"{', '.join(URI_SCHEMES)}")
            return value.rstrip("/")
        return join_uri(base, value)
