"""Synthetic purchase and points logs with planted, recorded structure.

Every user has a latent type and a latent vector ``z`` (type centre plus personal noise).
``z`` drives what the pipeline can observe — genre preferences, spend level, activity,
points behaviour, demographics — and, through noisy logistic functions, every label:
nine partially labelled source tasks and brand-adoption target tasks whose positives
newly adopt a brand *after* the feature window. Because the same ``z`` drives both the
behaviour and the labels, a model that learns good profiles can be checked against the
ground truth, which is written beside the data.

Events are generated one local day at a time for all users, so memory holds one day of
events (about 0.3 M events per day at 1 M users) and the output is naturally partitioned by
landing date: ``<raw uri>/dt=YYYY-MM-DD/part-00000.<ext>``. Each day draws from its own
random stream keyed by ``(seed, day)``, so a data set is a pure function of the seed and
options. Bad rows of every class are planted at a configured fraction and counted exactly.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common import storage
from common.publish import Publisher
from metaprofile.datasets.bad_rows import bad_row_counts, inject_bad_rows, write_partition
from schemas.config import PipelineConfig
from schemas.contracts import (
    CAMPAIGN_REGISTRY,
    CAMPAIGN_SEEDS,
    LABELS,
    OPT_OUTS,
    RAW_SOURCES,
    demographics_schema,
)

log = logging.getLogger(__name__)

SUBGENRES = ("basics", "premium", "seasonal", "accessories", "outlet")
POINT_TYPES = ("standard_earned", "limited_earned", "used")
POINT_SERVICES = ("market", "travel", "card", "mobile")
KNOWN_DEMOGRAPHICS = {"age", "household_size", "gender", "region"}


@dataclass(frozen=True)
class GeneratorOptions:
    users: int = 10_000
    seed: int = 7
    format: str = "parquet"  # parquet | csv | jsonl
    bad_row_fraction: float = 0.001  # per bad-row class, of each source's rows
    purchases_per_user: float = 80.0  # mean purchase rows per user per year
    num_types: int = 8
    latent_dim: int = 6
    extra_days: int = 0  # days generated after the window end (for nightly runs)
    seeds_per_campaign: int = 500  # most seeds listed per brand campaign


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """All parameters the data is drawn from: the ground truth, recorded in world.json."""

    type_weights: np.ndarray  # [T]
    type_centers: np.ndarray  # [T, D]
    genre_weights: np.ndarray  # [G, D]
    type_genre_bias: np.ndarray  # [T, G]
    genre_price: np.ndarray  # [G] log-price offset
    hour_profiles: np.ndarray  # [T, 24]
    weekday_profiles: np.ndarray  # [T, 7]
    season_profiles: np.ndarray  # [T, 12]
    spend_level: np.ndarray  # [T] log amount
    activity: np.ndarray  # [T] log activity multiplier
    card_rate: np.ndarray  # [T] share of purchases earning standard points
    points_use_rate: np.ndarray  # [T] point redemptions per year
    source_weights: np.ndarray  # [S, D]
    source_bias: np.ndarray  # [S]
    source_label_rate: np.ndarray  # [S] share of users labelled per source task
    target_weights: np.ndarray  # [B, D]
    target_bias: np.ndarray  # [B]
    age_base: np.ndarray  # [T]
    gender_probs: np.ndarray  # [T, 3]
    genres: tuple[str, ...]
    source_tasks: tuple[str, ...]
    target_tasks: tuple[str, ...]

    def to_json(self) -> dict:
        return {k: (v.round(6).tolist() if isinstance(v, np.ndarray) else list(v))
                for k, v in dataclasses.asdict(self).items()}


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def configured_genres(config: PipelineConfig) -> tuple[str, ...]:
    """Specific genre prefixes of the purchases modalities: the genres the world sells."""
    genres = []
    for m in config.modalities_for("purchases"):
        for c in m.channels:
            if c.genre not in (None, "*") and c.genre not in genres:
                genres.append(c.genre)
    if not genres:
        raise ValueError("the config has no purchases channel with a specific genre prefix; "
                         "the generator needs at least one genre to sell")
    return tuple(genres)


def make_world(config: PipelineConfig, options: GeneratorOptions) -> World:
    rng = np.random.default_rng([options.seed, 0])
    T, D = options.num_types, options.latent_dim
    genres = configured_genres(config)
    G = len(genres)
    S, B = len(config.source_tasks), len(config.target_tasks)
    hours = np.arange(24)
    # Each type has one or two daily peaks (morning shoppers, lunch, evening, night owls).
    peaks = rng.uniform(7, 23, size=(T, 2))
    hour_profiles = (np.exp(-0.5 * ((hours[None, :] - peaks[:, :1]) / 1.5) ** 2)
                     + 0.6 * np.exp(-0.5 * ((hours[None, :] - peaks[:, 1:]) / 2.0) ** 2)
                     + 0.02)
    weekday_profiles = 1.0 + rng.uniform(-0.6, 0.6, size=(T, 7))
    season_profiles = 1.0 + 0.5 * np.sin(
        2 * np.pi * (np.arange(12)[None, :] / 12.0 + rng.uniform(0, 1, size=(T, 1))))
    return World(
        type_weights=_softmax(rng.normal(0, 0.3, T)),
        type_centers=rng.normal(0, 1.2, size=(T, D)),
        genre_weights=rng.normal(0, 0.8, size=(G, D)),
        type_genre_bias=rng.normal(0, 0.7, size=(T, G)),
        genre_price=rng.normal(0, 0.6, size=G),
        hour_profiles=hour_profiles / hour_profiles.sum(1, keepdims=True),
        weekday_profiles=weekday_profiles / weekday_profiles.mean(1, keepdims=True),
        season_profiles=season_profiles / season_profiles.mean(1, keepdims=True),
        spend_level=rng.normal(3.5, 0.5, size=T),
        activity=rng.normal(0, 0.4, size=T),
        card_rate=rng.uniform(0.3, 0.95, size=T),
        points_use_rate=rng.uniform(1, 12, size=T),
        source_weights=rng.normal(0, 1, size=(S, D)) / np.sqrt(D) * 2.5,
        source_bias=rng.uniform(-1.5, 0.5, size=S),
        source_label_rate=rng.uniform(0.2, 0.7, size=S),
        target_weights=rng.normal(0, 1, size=(B, D)) / np.sqrt(D) * 2.5,
        target_bias=rng.uniform(-4.0, -2.5, size=B),
        age_base=rng.uniform(28, 55, size=T),
        gender_probs=_softmax(rng.normal(0, 0.8, size=(T, 3)) + np.array([0, 0, -2.5])),
        genres=genres,
        source_tasks=tuple(t.name for t in config.source_tasks),
        target_tasks=tuple(t.name for t in config.target_tasks),
    )


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class Users:
    ids: pa.Array  # string ids 'u0000001'
    types: np.ndarray  # [U]
    z: np.ndarray  # [U, D]
    genre_cdf: np.ndarray  # [U, G] cumulative genre preference
    purchase_rate: np.ndarray  # [U] purchases per year
    log_spend: np.ndarray  # [U]
    card_rate: np.ndarray  # [U]
    points_use_rate: np.ndarray  # [U]


def make_users(world: World, options: GeneratorOptions) -> Users:
    rng = np.random.default_rng([options.seed, 1])
    n = options.users
    types = rng.choice(len(world.type_weights), size=n, p=world.type_weights)
    z = world.type_centers[types] + rng.normal(0, 0.6, size=(n, world.type_centers.shape[1]))
    genre_logits = z @ world.genre_weights.T + world.type_genre_bias[types]
    activity = world.activity[types] + rng.normal(0, 0.5, size=n) + 0.15 * z[:, 1]
    rate = np.exp(activity)
    rate *= options.purchases_per_user / rate.mean()
    ids = pa.array(np.char.add("u", np.char.zfill(np.arange(1, n + 1).astype(str), 7)))
    return Users(
        ids=ids,
        types=types,
        z=z,
        genre_cdf=np.cumsum(_softmax(genre_logits), axis=1),
        purchase_rate=rate,
        log_spend=world.spend_level[types] + 0.3 * z[:, 0] + rng.normal(0, 0.2, size=n),
        card_rate=np.clip(world.card_rate[types] + rng.normal(0, 0.1, size=n), 0, 1),
        points_use_rate=world.points_use_rate[types] * np.exp(rng.normal(0, 0.3, size=n)),
    )


def _draw_categorical(cdf_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from per-row cumulative distributions [n, k]."""
    u = rng.random(len(cdf_rows)) * cdf_rows[:, -1]
    return (cdf_rows < u[:, None]).sum(axis=1)


# --------------------------------------------------------------------------- events


def utc_offsets(day: dt.date, timezone: str) -> np.ndarray:
    """Seconds east of UTC for each local hour of ``day`` (fold=0 on DST changes).

    A non-existent local hour (spring forward) takes the offset before the change, which
    moves it forward by the gap; an ambiguous hour (fall back) takes its first occurrence.
    """
    zone = ZoneInfo(timezone)
    return np.array([dt.datetime(day.year, day.month, day.day, h, tzinfo=zone)
                     .utcoffset().total_seconds() for h in range(24)], dtype=np.int64)


def _utc_seconds(day: dt.date, hours: np.ndarray, rng: np.random.Generator,
                 offsets: np.ndarray) -> np.ndarray:
    """Epoch seconds of random moments within the given local hours of ``day``."""
    local_midnight = (day - dt.date(1970, 1, 1)).days * 86400
    seconds = local_midnight + hours * 3600 + rng.integers(0, 3600, size=len(hours))
    return seconds - offsets[hours]


def _iso(seconds: np.ndarray) -> pa.Array:
    # Casting a naive timestamp to string is ~8x faster than strftime; then make it ISO-8601.
    text = pc.utf8_replace_slice(pa.array(seconds).cast(pa.timestamp("s")).cast(pa.string()),
                                 10, 11, "T")
    return pc.binary_join_element_wise(text, "Z", "")


def _repeat_strings(values: tuple[str, ...], repeats: tuple[int, ...]) -> pa.Array:
    return pa.array(values).take(np.repeat(np.arange(len(values)), repeats))


def _decimal_strings(values: np.ndarray) -> pa.Array:
    return pa.array(np.round(values, 2)).cast(pa.string())


def day_events(world: World, users: Users, day: dt.date, day_index: int, timezone: str,
               options: GeneratorOptions) -> dict[str, pa.Table]:
    """Clean purchase and points rows of one local day, in the raw contracts."""
    rng = np.random.default_rng([options.seed, 2, day_index])
    offsets = utc_offsets(day, timezone)
    weight = (world.season_profiles[:, day.month - 1] * world.weekday_profiles[:, day.weekday()])
    lam = users.purchase_rate / 365.0 * weight[users.types]
    who = np.repeat(np.arange(len(lam)), rng.poisson(lam))
    types = users.types[who]
    hours = _draw_categorical(np.cumsum(world.hour_profiles, axis=1)[types], rng)
    genre = _draw_categorical(users.genre_cdf[who], rng)
    sub = rng.integers(0, len(SUBGENRES), size=len(who))
    leaves = pa.array([f"{g}/{s}" for g in world.genres for s in SUBGENRES])
    genre_paths = leaves.take(genre * len(SUBGENRES) + sub)
    amount = np.exp(rng.normal(users.log_spend[who] + world.genre_price[genre], 0.5))
    quantity = 1 + rng.poisson(0.25, size=len(who))
    seconds = _utc_seconds(day, hours, rng, offsets)
    times = _iso(seconds)

    # Cancellations: a copy of a purchase, 1-180 minutes later, with status 'cancel'.
    cancelled = np.flatnonzero(rng.random(len(who)) < 0.03)
    cancel_seconds = seconds[cancelled] + 60 * rng.integers(1, 181, size=len(cancelled))
    cancel_times = _iso(cancel_seconds)
    purchase_keys = (np.concatenate([who, who[cancelled]]),
                     np.concatenate([seconds, cancel_seconds]),
                     np.concatenate([genre * len(SUBGENRES) + sub, (genre * len(SUBGENRES)
                                                                   + sub)[cancelled]]),
                     np.round(np.concatenate([amount, amount[cancelled]]) * 100),
                     np.concatenate([quantity, quantity[cancelled]]),
                     np.repeat([0, 1], (len(who), len(cancelled))))
    purchases = pa.table({
        "user_id": pa.concat_arrays([users.ids.take(who), users.ids.take(who[cancelled])]),
        "event_time": pa.concat_arrays([times, cancel_times]),
        "genre": pa.concat_arrays([genre_paths, genre_paths.take(cancelled)]),
        "amount": _decimal_strings(np.concatenate([amount, amount[cancelled]])),
        "quantity": pa.array(np.concatenate([quantity, quantity[cancelled]])).cast(pa.string()),
        "status": _repeat_strings(("purchase", "cancel"), (len(who), len(cancelled))),
    }, schema=RAW_SOURCES["purchases"])

    # Points: standard points on card purchases, limited-term bonuses, and redemptions.
    earns = np.flatnonzero(rng.random(len(who)) < users.card_rate[who])
    bonus = np.flatnonzero(rng.random(len(who)) < (0.15 if day.day in (5, 15, 25) else 0.02))
    use_who = np.repeat(np.arange(len(lam)), rng.poisson(users.points_use_rate / 365.0))
    use_hours = _draw_categorical(np.cumsum(world.hour_profiles, axis=1)[users.types[use_who]],
                                  rng)
    n_earn, n_bonus, n_use = len(earns), len(bonus), len(use_who)
    use_seconds = _utc_seconds(day, use_hours, rng, offsets)
    point_values = np.concatenate([
        np.maximum(1, np.floor(amount[earns] * 0.01)),
        rng.integers(1, 11, size=n_bonus) * 50.0,
        np.round(np.exp(rng.normal(5.5, 0.8, size=n_use))),
    ]).astype(np.int64)
    services = np.concatenate([np.zeros(n_earn + n_bonus, int),
                               rng.integers(0, len(POINT_SERVICES), size=n_use)])
    point_keys = (np.concatenate([who[earns], who[bonus], use_who]),
                  np.concatenate([seconds[earns], seconds[bonus], use_seconds]),
                  np.repeat([0, 1, 2], (n_earn, n_bonus, n_use)), point_values, services)
    points = pa.table({
        "user_id": pa.concat_arrays([users.ids.take(who[earns]), users.ids.take(who[bonus]),
                                     users.ids.take(use_who)]),
        "event_time": pa.concat_arrays([times.take(earns), times.take(bonus),
                                        _iso(use_seconds)]),
        "point_type": _repeat_strings(POINT_TYPES, (n_earn, n_bonus, n_use)),
        "points": pa.array(point_values).cast(pa.string()),
        "service": pa.array(POINT_SERVICES).take(services),
    }, schema=RAW_SOURCES["points"])
    return {"purchases": _drop_repeated_rows(purchases, purchase_keys),
            "points": _drop_repeated_rows(points, point_keys)}


def _drop_repeated_rows(table: pa.Table, keys: tuple[np.ndarray, ...]) -> pa.Table:
    """Keep the first of rows whose numeric ``keys`` (one array per column) all coincide.

    At scale, one user's two purchases in the same second (and the points they earn) can
    coincide by chance. Only planted duplicates may repeat a row, so that the encoder's
    ``duplicate_row`` count equals what the generator reports. ``keys[0]`` is the user and
    ``keys[1]`` the second: rows sharing both are rare, so only those are compared in full.
    """
    if table.num_rows < 2:
        return table
    user, second = (np.asarray(k, dtype=np.int64) for k in keys[:2])
    order = np.argsort((user << 20) | (second - second.min()), kind="stable")
    coarse = ((user << 20) | (second - second.min()))[order]
    same = coarse[1:] == coarse[:-1]
    if not same.any():
        return table
    candidates = np.zeros(table.num_rows, dtype=bool)
    candidates[order[1:][same]] = True
    candidates[order[:-1][same]] = True
    rows = np.flatnonzero(candidates)
    sub = [np.asarray(k)[rows] for k in keys]
    inner = np.lexsort(sub[::-1])
    ordered = np.stack([k[inner] for k in sub])
    repeated = np.zeros(table.num_rows, dtype=bool)
    repeated[rows[inner[1:]]] = np.all(ordered[:, 1:] == ordered[:, :-1], axis=0)
    return table.filter(pa.array(~repeated)) if repeated.any() else table


# --------------------------------------------------------------------------- labels etc.


def make_demographics(world: World, users: Users, config: PipelineConfig,
                      options: GeneratorOptions) -> pa.Table:
    unknown = set(config.demographics.field_names) - KNOWN_DEMOGRAPHICS
    if unknown:
        raise ValueError(f"demographics fields {sorted(unknown)} are not produced by the "
                         f"synthetic generator; it knows {sorted(KNOWN_DEMOGRAPHICS)}")
    rng = np.random.default_rng([options.seed, 3])
    n = len(users.types)
    z = users.z
    values: dict[str, np.ndarray] = {
        "age": np.clip(np.round(world.age_base[users.types] + 6 * z[:, 0]
                                + rng.normal(0, 5, n)), 18, 90),
        "household_size": 1 + rng.poisson(np.exp(0.2 + 0.35 * z[:, 1])),
        "gender": np.array(["female", "male", "other"], dtype=object)[
            _draw_categorical(np.cumsum(world.gender_probs[users.types], axis=1), rng)],
        "region": np.array(["north", "east", "central", "west", "south"], dtype=object)[
            _draw_categorical(np.cumsum(_softmax(np.stack(
                [z[:, 2], -z[:, 2], z[:, 3], -z[:, 3], 0 * z[:, 3]], axis=1)), axis=1), rng)],
    }
    columns = {"user_id": users.ids}
    for name in config.demographics.field_names:
        column = values[name].astype(object)
        column[rng.random(n) < 0.02] = None  # 2% missing answers per field
        columns[name] = pa.array(column.tolist())
    schema = demographics_schema(config)
    return pa.table({f.name: columns[f.name].cast(f.type) for f in schema}, schema=schema)


def task_probabilities(weights: np.ndarray, bias: np.ndarray, z: np.ndarray) -> np.ndarray:
    """P(positive) per user and task: a noisy logistic function of the latent vector."""
    return _sigmoid(z @ weights.T + bias)  # [U, tasks]


def make_labels(world: World, users: Users, options: GeneratorOptions
                ) -> tuple[pa.Table, pa.Table, pa.Table, np.ndarray]:
    """Source labels, target labels, campaign seeds and the per-user truth matrix."""
    rng = np.random.default_rng([options.seed, 4])
    n = len(users.types)
    p_source = task_probabilities(world.source_weights, world.source_bias, users.z)
    p_target = task_probabilities(world.target_weights, world.target_bias, users.z)
    ids = np.asarray(users.ids.to_numpy(zero_copy_only=False), dtype=object)

    def labels(rows: list[tuple[np.ndarray, str, np.ndarray]]) -> pa.Table:
        if not rows:
            return LABELS.empty_table()
        return pa.table({
            "user_id": pa.array(np.concatenate([ids[w] for w, _, _ in rows]).tolist(),
                                pa.string()),
            "task": pa.array(np.concatenate([np.full(len(w), t, dtype=object)
                                             for w, t, _ in rows]).tolist(), pa.string()),
            "label": pa.array(np.concatenate([y for _, _, y in rows]).astype(np.int8)),
        }, schema=LABELS)

    source_rows = []
    for k, task in enumerate(world.source_tasks):
        labelled = np.flatnonzero(rng.random(n) < world.source_label_rate[k])
        source_rows.append((labelled, task, rng.random(len(labelled)) < p_source[labelled, k]))
    target_rows, seed_rows = [], []
    for b, task in enumerate(world.target_tasks):
        existing = rng.random(n) < 0.5 * p_target[:, b]  # bought the brand inside the window
        adopts = rng.random(n) < p_target[:, b]  # buys it in the label period
        fresh = np.flatnonzero(~existing)
        target_rows.append((fresh, task, adopts[fresh]))
        seeds = np.flatnonzero(existing)
        seeds = rng.permutation(seeds)[:options.seeds_per_campaign]
        seed_rows.append((np.sort(seeds), f"cmp_{task}", np.ones(len(seeds), bool)))
    seed_table = labels(seed_rows)
    seeds = pa.table({"campaign_id": seed_table.column("task"),
                      "user_id": seed_table.column("user_id"),
                      "label": seed_table.column("label")}, schema=CAMPAIGN_SEEDS)
    truth = np.concatenate([p_source, p_target], axis=1)
    return labels(source_rows), labels(target_rows), seeds, truth


def make_registry(world: World, options: GeneratorOptions) -> pa.Table:
    n = len(world.target_tasks)
    return pa.table({
        "campaign_id": [f"cmp_{t}" for t in world.target_tasks],
        "name": [t.replace("_", " ").title() for t in world.target_tasks],
        "status": ["active"] * n,
        "segment_size": [max(10, options.users // 100)] * n,
        "score_threshold": [None] * n,
        "exclude_campaigns": [[] for _ in range(n)],
    }, schema=CAMPAIGN_REGISTRY)


def make_ground_truth(world: World, users: Users, truth: np.ndarray) -> pa.Table:
    columns = {"user_id": users.ids, "type": pa.array(users.types.astype(np.int16))}
    for d in range(users.z.shape[1]):
        columns[f"z{d}"] = pa.array(users.z[:, d].astype(np.float32))
    for k, task in enumerate(world.source_tasks + world.target_tasks):
        columns[f"p_{task}"] = pa.array(truth[:, k].astype(np.float32))
    return pa.table(columns)


def draw_conversions(ground_truth: pa.Table, task: str, first_day: dt.date, days: int,
                     seed: int = 0) -> pa.Table:
    """Conversions of a brand campaign after a night, from the generator's own adoption
    model: each user converts once with their true probability of adopting ``task``
    (``p_<task>`` of the ground truth), on a uniform day of the ``days`` from ``first_day``,
    for a log-normal value. Nothing depends on being reached by a campaign (no ad effect),
    so a segment's treated and control members convert alike, and a segment's lift over the
    population measures how well it was chosen."""
    column = f"p_{task}"
    if column not in ground_truth.column_names:
        raise ValueError(f"the ground truth has no {column}: {task!r} is not a target task "
                         f"of this synthetic world")
    p = ground_truth.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    rng = np.random.default_rng([seed, 7, *task.encode()])
    converts = np.flatnonzero(rng.random(len(p)) < p)
    day = rng.integers(0, days, len(converts))
    return pa.table({
        "user_id": ground_truth.column("user_id").take(pa.array(converts)),
        "time": pa.array([first_day + dt.timedelta(days=int(d)) for d in day], pa.date32()),
        "value": pa.array(np.round(rng.lognormal(3.0, 0.6, len(converts)), 2)),
    })


# --------------------------------------------------------------------------- driver


def generate(config: PipelineConfig, options: GeneratorOptions,
             progress: Callable[[str], None] = log.info) -> dict:
    """Write the whole synthetic data set under the config's storage; return its counts."""
    if options.format not in ("parquet", "csv", "jsonl"):
        raise ValueError(f"format {options.format!r} is not one of parquet, csv, jsonl")
    if options.users < 1:
        raise ValueError(f"users must be at least 1, got {options.users}")
    if not 0 <= options.bad_row_fraction < 0.1:
        raise ValueError(f"bad_row_fraction {options.bad_row_fraction} is outside 0..0.1")
    end = config.window.end
    if end is None:
        raise ValueError(f"config {config.name!r} has no window.end; the generator needs it "
                         "to know which days to generate")
    started = time.perf_counter()
    world = make_world(config, options)
    users = make_users(world, options)
    days = [config.window.start(end) + dt.timedelta(days=i)
            for i in range(config.window.days + options.extra_days)]
    paths = {s: config.storage.uri(f"raw_{s}") for s in RAW_SOURCES}
    counts = {s: {"rows_generated": 0, "rows_written": 0, "clean_rows": 0, "bad_rows": {}}
              for s in RAW_SOURCES}
    progress(f"generating {options.users:,} users over {len(days)} days "
             f"({days[0]} .. {days[-1]}) as {options.format}")
    with Publisher().staged(paths["purchases"]) as purchases_dir, \
            Publisher().staged(paths["points"]) as points_dir:
        staging = {"purchases": purchases_dir, "points": points_dir}
        for index, day in enumerate(days):
            tables = day_events(world, users, day, index, config.window.timezone, options)
            rng = np.random.default_rng([options.seed, 5, index])
            for source, table in tables.items():
                c = counts[source]
                c["rows_generated"] += table.num_rows
                wanted = bad_row_counts(c["rows_generated"], c["bad_rows"], source,
                                        options.format, options.bad_row_fraction)
                dirty, malformed, planted = inject_bad_rows(table, source, wanted, rng)
                write_partition(dirty, staging[source], day, options.format, malformed)
                c["rows_written"] += dirty.num_rows
                c["clean_rows"] += dirty.num_rows - sum(planted.values())
                for kind, k in planted.items():
                    c["bad_rows"][kind] = c["bad_rows"].get(kind, 0) + k
            if (index + 1) % 30 == 0 or index + 1 == len(days):
                events = sum(c["rows_written"] for c in counts.values())
                elapsed = time.perf_counter() - started
                progress(f"day {index + 1}/{len(days)} ({day}): {events:,} rows, "
                         f"{events / elapsed:,.0f} rows/s")

    demographics = make_demographics(world, users, config, options)
    source_labels, target_labels, seeds, truth = make_labels(world, users, options)
    outputs = {
        "demographics": demographics,
        "source_labels": source_labels,
        "target_labels": target_labels,
        "campaign_seeds": seeds,
        "campaign_registry": make_registry(world, options),
        "opt_outs": pa.table({"user_id": users.ids.filter(
            pa.array(np.random.default_rng([options.seed, 6]).random(options.users) < 0.005))},
            schema=OPT_OUTS),
        "ground_truth": make_ground_truth(world, users, truth),
    }
    for key, table in outputs.items():
        with Publisher().staged(config.storage.uri(key)) as directory:
            storage.write_parquet(table, storage.join(directory, "part-00000.parquet"))
    with Publisher().staged(config.storage.uri("ground_truth") + "_world") as directory:
        storage.write_json(world.to_json(), storage.join(directory, "world.json"))

    seconds = time.perf_counter() - started
    report = {
        "generator": "synthetic",
        "options": dataclasses.asdict(options),
        "config": config.name,
        "days": {"first": days[0].isoformat(), "last": days[-1].isoformat(), "count": len(days)},
        "users": options.users,
        "sources": counts,
        "outputs": {key: table.num_rows for key, table in outputs.items()},
        "labels": _label_counts(source_labels, target_labels, options.users),
        "seconds": round(seconds, 2),
        "rows_per_second": round(sum(c["rows_written"] for c in counts.values()) / seconds),
    }
    storage.write_json(report, storage.join(config.storage.root, "_generation.json"))
    return report


def _label_counts(source: pa.Table, target: pa.Table, users: int) -> dict:
    result = {}
    for kind, table in (("source", source), ("target", target)):
        frame = table.to_pandas()
        grouped = frame.groupby("task")["label"].agg(["sum", "count"])
        result[kind] = {
            task: {"positives": int(row["sum"]), "negatives": int(row["count"] - row["sum"]),
                   "unlabelled": int(users - row["count"])}
            for task, row in grouped.iterrows()
        }
    return result
