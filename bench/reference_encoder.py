"""Single-process reference encoder: the Spark encoder's cells, from numpy and pyarrow alone.

``encode_reference(config, dates)`` reads the same raw Parquet landing partitions as
``jobs/encode.py`` and yields the same event cells, one row per (dt, user_id, modality, date,
hour, channel), together with the same row accounting. It serves two purposes:

* a **cross-check** of the Spark job, written independently of it (array arithmetic instead
  of Spark column expressions; see ``tests/test_reference_encoder.py``);
* a **baseline** for ``bench/bench_encode.py``: how fast one process encodes the same rows.

Everything is vectorised. String checks run as Arrow kernels, over a column's distinct
values where it has few (genres, statuses, point types); timestamps are decoded from the
string bytes with numpy once a regular expression has vouched for their shape; cells are
summed by sorting one packed integer key and reducing with ``np.add.reduceat``. Python loops
run only over batches of landing dates, modalities, channels and rules, never over rows
(and, when pseudonymisation is on, over distinct user ids, as in the Spark job).

The rules are those of ``parse_and_validate`` and ``channel_values``, including
Spark's parsing quirks as measured on Spark 4.3: ``try_to_timestamp`` rejects a zone after a
time without seconds and offsets beyond ±18:00; ``try_cast`` to double follows
``java.lang.Double.parseDouble`` (``1e3d``, ``Infinity``, ``-NaN``, surrounding control
characters) plus Spark's ``inf``/``nan`` literals. Not modelled, so such rows would differ:

* hexadecimal floating-point values (``0x1p3``), which Spark accepts: here non-numeric;
* a timestamp followed by a line terminator, which Java's ``$`` tolerates: here unparseable;
* raw formats other than Parquet (so no malformed lines), and non-local storage URIs.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from common import privacy, storage
from jobs.encoding.validation import TIMESTAMP_PATTERN, VALUE_COLUMN
from schemas.config import ModalityConfig, PipelineConfig
from schemas.contracts import (
    ID_TRIM_PATTERN,
    MAX_RAW_VALUE,
    PURCHASE_STATUSES,
    RAW_SOURCES,
    REJECT_REASONS,
    REPLACEMENT_CHARACTER,
)

EPOCH = dt.date(1970, 1, 1)
SECONDS_PER_DAY = 86_400
JAVA_WHITESPACE = "".join(chr(c) for c in range(0x21))  # what Java's String.trim() removes
# java.lang.Double.parseDouble's decimal grammar; a trailing f/d type suffix is ignored.
JAVA_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fFdD]?$"
TYPE_SUFFIX = "[fFdD]$"
POSITIVE_INFINITY = ("inf", "+inf", "infinity", "+infinity")  # Spark's literals, any case
NEGATIVE_INFINITY = ("-inf", "-infinity")
JAVA_NAN = ("NaN", "+NaN", "-NaN")
MAX_OFFSET_MINUTES = 18 * 60  # java.time.ZoneOffset's range

CELLS = pa.schema([
    pa.field("dt", pa.date32(), nullable=False),  # landing date: Spark's events/dt=...
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),  # local date of the event
    pa.field("hour", pa.int8(), nullable=False),
    pa.field("channel", pa.int16(), nullable=False),
    pa.field("value", pa.float32(), nullable=False),
])


@dataclass(frozen=True)
class ReferenceEncoding:
    """The cells of the encoded landing dates and their row accounting.

    ``sources`` has the shape of ``encode.run(...)["sources"]``: per raw source found,
    ``rows_read``, ``rows_encoded`` and ``rows_rejected`` (reason -> rows, non-zero only).
    """

    cells: pa.Table  # schema CELLS, sorted by (dt, user_id, date, hour, channel) per modality
    sources: dict[str, dict]

    @property
    def rows_read(self) -> int:
        return sum(s["rows_read"] for s in self.sources.values())

    @property
    def rows_encoded(self) -> int:
        return sum(s["rows_encoded"] for s in self.sources.values())

    @property
    def rows_rejected(self) -> int:
        return sum(sum(s["rows_rejected"].values()) for s in self.sources.values())


# --------------------------------------------------------------------------- entry point


def encode_reference(config: PipelineConfig, dates: Iterable[dt.date],
                     dates_per_batch: int = 16) -> ReferenceEncoding:
    """Encode the raw landing partitions ``dt=<date>`` of ``dates``; missing ones are skipped.

    Landing dates are processed ``dates_per_batch`` at a time, which bounds memory: cells
    never combine across landing dates, so batches are independent.
    """
    if config.raw.format != "parquet":
        raise NotImplementedError(f"the reference encoder reads Parquet only, not "
                                  f"{config.raw.format!r}")
    dates = sorted(set(dates))
    key = privacy.load_pseudonym_key(config.pseudonymisation)
    accounting: dict[str, dict] = {}
    pieces: list[pa.Table] = []
    for source in RAW_SOURCES:
        counts = np.zeros(len(REJECT_REASONS) + 1, dtype=np.int64)  # [0]: rows encoded
        rows_read, found = 0, False
        for start in range(0, len(dates), dates_per_batch):
            table = read_landing(config, source, dates[start:start + dates_per_batch])
            if table is None:
                continue
            found = True
            rows_read += table.num_rows
            pieces.extend(encode_batch(table, config, source, counts, key))
        if found:
            accounting[source] = {
                "rows_read": rows_read,
                "rows_encoded": int(counts[0]),
                "rows_rejected": {reason: int(n) for reason, n
                                  in zip(REJECT_REASONS, counts[1:]) if n},
            }
    cells = pa.concat_tables(pieces) if pieces else CELLS.empty_table()
    return ReferenceEncoding(cells=cells, sources=accounting)


def read_landing(config: PipelineConfig, source: str,
                 dates: Sequence[dt.date]) -> pa.Table | None:
    """The raw rows of the given landing dates: the contract's string columns plus ``dt``.

    Like Spark, every non-hidden file of a ``dt=`` directory is read, and a column missing
    from a file reads as null. Returns None when none of the partitions exists.
    """
    root = Path(storage.local_path(config.storage.uri(f"raw_{source}")))
    directories = [root / f"dt={d.isoformat()}" for d in dates]
    directories = [d for d in directories if d.is_dir()]
    if not directories:
        return None
    files = [str(p) for d in directories for p in sorted(d.iterdir())
             if p.is_file() and not p.name.startswith(("_", "."))]
    landing = pa.schema([pa.field("dt", pa.date32())])
    schema = pa.unify_schemas([RAW_SOURCES[source], landing])
    if not files:
        return schema.empty_table()
    dataset = pads.dataset(files, schema=schema, format="parquet",
                           partition_base_dir=str(root),
                           partitioning=pads.partitioning(landing, flavor="hive"))
    return dataset.to_table().combine_chunks()


# --------------------------------------------------------------------------- string helpers


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null counting as False (as in Spark's ``when``)."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _spark_trim(text: pa.Array) -> pa.Array:
    """Spark's ``trim``: leading and trailing spaces only."""
    return pc.utf8_trim(text, characters=" ")


def trimmed_ids(ids: pa.Array) -> pa.Array:
    """The encoder's ``trimmed_id``: whitespace (tabs and line breaks too) around an id."""
    return pc.replace_substring_regex(ids, ID_TRIM_PATTERN, "")


def _blank(text: pa.Array) -> np.ndarray:
    """Null, or nothing but spaces."""
    return ~_mask(pc.not_equal(_spark_trim(text), ""))


class Distinct:
    """A string column as its distinct values and each row's index into them.

    Rules over a low-cardinality column (genres, statuses, point types) are evaluated once
    per distinct value and broadcast to the rows; null rows always get False.
    """

    def __init__(self, column: pa.Array | pa.ChunkedArray):
        encoded = pc.dictionary_encode(_array(column))
        self.values: pa.Array = encoded.dictionary
        self._index = pc.fill_null(encoded.indices, len(self.values)).to_numpy(
            zero_copy_only=False)

    def where(self, rule: Callable[[pa.Array], np.ndarray]) -> np.ndarray:
        verdict = np.append(np.asarray(rule(self.values), dtype=bool), False)
        return verdict[self._index]


class Bytes:
    """Byte ``k`` of every string of an array, counted from the start or from the end.

    A string shorter than ``k`` gives 0. Used to decode fixed-layout text (timestamps whose
    shape a regular expression has already checked) without a kernel per field.
    """

    def __init__(self, text: pa.Array):
        text = text.cast(pa.string())
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int32,
                                count=len(text) + 1, offset=4 * text.offset)
        data = text.buffers()[2]
        self._data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size \
            else np.zeros(1, dtype=np.uint8)
        self._starts, self._ends = offsets[:-1], offsets[1:]
        self._lengths = self._ends - self._starts

    def _gather(self, positions: np.ndarray, present: np.ndarray) -> np.ndarray:
        return np.where(present, self._data[np.where(present, positions, 0)], 0)

    def at(self, k: int) -> np.ndarray:
        return self._gather(self._starts + k, self._lengths > k)

    def back(self, k: int) -> np.ndarray:
        """Byte ``k`` from the end: ``back(1)`` is the last byte."""
        return self._gather(self._ends - k, self._lengths >= k)

    def digits(self, *positions: int) -> np.ndarray:
        """The decimal number written at the given positions (negative: from the end)."""
        number = np.zeros(len(self._lengths), dtype=np.int64)
        for k in positions:
            byte = self.at(k) if k >= 0 else self.back(-k)
            number = number * 10 + (byte.astype(np.int64) - ord("0"))
        return number


# --------------------------------------------------------------------------- parsing


def parse_doubles(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Spark's ``try_cast(text AS DOUBLE)``: (values, parsed); unparsed values are NaN.

    Java's grammar (surrounding whitespace ignored, optional sign, digits with an optional
    point and exponent, an optional ``f``/``d`` suffix, ``NaN`` and ``Infinity``), then
    Spark's case-insensitive ``inf``, ``infinity`` and ``nan`` for what Java refuses.
    """
    text = pc.utf8_trim(text, characters=JAVA_WHITESPACE)
    values = np.full(len(text), np.nan)
    decimal = _mask(pc.match_substring_regex(text, JAVA_DECIMAL))
    parsed = decimal.copy()
    if decimal.any():
        numbers = text.filter(pa.array(decimal))
        if _mask(pc.match_substring_regex(numbers, TYPE_SUFFIX)).any():
            numbers = pc.replace_substring_regex(numbers, TYPE_SUFFIX, "")
        values[decimal] = pc.cast(numbers, pa.float64()).to_numpy(zero_copy_only=False)
    others = np.flatnonzero(~decimal & _mask(text.is_valid()))
    if len(others):
        words = text.take(pa.array(others))
        lower = pc.utf8_lower(words)
        positive = _mask(pc.is_in(lower, pa.array(POSITIVE_INFINITY)))
        negative = _mask(pc.is_in(lower, pa.array(NEGATIVE_INFINITY)))
        nan = _mask(pc.equal(lower, "nan")) | _mask(pc.is_in(words, pa.array(JAVA_NAN)))
        values[others[positive]], values[others[negative]] = np.inf, -np.inf
        parsed[others] = positive | negative | nan
    return values, parsed


def _days_from_civil(year: np.ndarray, month: np.ndarray,
                     day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(days since 1970-01-01, whether year-month-day is a real calendar date)."""
    months = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    first = months.astype("datetime64[D]").astype(np.int64)
    length = (months + 1).astype("datetime64[D]").astype(np.int64) - first
    return first + day - 1, (month >= 1) & (month <= 12) & (day >= 1) & (day <= length)


def utc_offsets(seconds: np.ndarray, zone: str) -> np.ndarray:
    """Seconds east of UTC in ``zone`` at each UTC instant (tz database, DST-correct)."""
    if zone == "UTC" or len(seconds) == 0:
        return np.zeros(len(seconds), dtype=np.int64)
    instants = pa.array(seconds, pa.timestamp("s", tz=zone))
    wall = pc.local_timestamp(instants).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return wall - seconds


def local_to_utc(local: np.ndarray, zone: str) -> np.ndarray:
    """UTC seconds of wall-clock seconds in ``zone``, as Spark's ``to_utc_timestamp``.

    java.time's rule: in an overlap (clocks turned back) the earlier offset wins; in a gap
    (clocks turned forward) the time moves forward by the gap, i.e. the offset from before
    the change applies. Assumes a zone's changes are more than two days apart.
    """
    if zone == "UTC":
        return local
    before = utc_offsets(local - 2 * SECONDS_PER_DAY, zone)
    after = utc_offsets(local + 2 * SECONDS_PER_DAY, zone)
    before_holds = utc_offsets(local - before, zone) == before
    after_holds = utc_offsets(local - after, zone) == after
    return local - np.where(~before_holds & after_holds, after, before)


def parse_timestamps(text: pa.Array, naive_zone: str) -> tuple[np.ndarray, np.ndarray]:
    """Spark's reading of ``event_time``: (UTC seconds, parsed).

    ``TIMESTAMP_PATTERN`` vouches for the layout ``yyyy-MM-dd[T ]HH:mm[:ss[.f]][zone]``
    with a zone of ``Z``, ``±hh``, ``±hhmm`` or ``±hh:mm``; the fields are then read from
    fixed byte positions. Fractions of a second are dropped: they never move a row across an
    hour or a range bound, which are whole seconds.
    """
    text = _spark_trim(text)
    shaped = _mask(pc.match_substring_regex(text, TIMESTAMP_PATTERN))
    b = Bytes(text)
    year, month, day = b.digits(0, 1, 2, 3), b.digits(5, 6), b.digits(8, 9)
    hour, minute = b.digits(11, 12), b.digits(14, 15)
    has_seconds = b.at(16) == ord(":")
    second = np.where(has_seconds, b.digits(17, 18), 0)

    signs = (ord("+"), ord("-"))
    colon_zone = np.isin(b.back(6), signs) & (b.back(3) == ord(":"))  # ±hh:mm
    four_zone = np.isin(b.back(5), signs)  # ±hhmm
    two_zone = np.isin(b.back(3), signs)  # ±hh
    has_zone = colon_zone | four_zone | two_zone | (b.back(1) == ord("Z"))
    sign = np.select([colon_zone, four_zone, two_zone], [b.back(6), b.back(5), b.back(3)], 0)
    zone_hours = np.select([colon_zone, four_zone, two_zone],
                           [b.digits(-5, -4), b.digits(-4, -3), b.digits(-2, -1)], 0)
    zone_minutes = np.where(colon_zone | four_zone, b.digits(-2, -1), 0)
    offset_minutes = zone_hours * 60 + zone_minutes

    days, real_date = _days_from_civil(year, month, day)
    parsed = (shaped & real_date & (hour <= 23) & (minute <= 59) & (second <= 59)
              & (zone_minutes <= 59) & (offset_minutes <= MAX_OFFSET_MINUTES)
              & (has_seconds | ~has_zone))  # Spark: no zone after hh:mm without seconds
    naive = np.where(parsed, days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second, 0)
    utc = naive - np.where(sign == ord("-"), -offset_minutes, offset_minutes) * 60
    wall = parsed & ~has_zone
    if naive_zone != "UTC" and wall.any():
        utc[wall] = local_to_utc(naive[wall], naive_zone)
    return utc, parsed


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class CheckedRows:
    """Per-row validation of a batch: the first check each row fails, and typed values."""

    reason: np.ndarray  # int8: 0 valid, else 1 + index into REJECT_REASONS
    utc: np.ndarray  # int64 UTC seconds of the event
    value: np.ndarray  # float64 amount or points
    quantity: np.ndarray | None  # float64 item count (purchases)


def genre_matches(genres: pa.Array, prefix: str) -> np.ndarray:
    """The genre is ``prefix`` or lies below it, by whole path segments; ``*`` matches all."""
    if prefix == "*":
        return np.ones(len(genres), dtype=bool)
    return _mask(pc.equal(genres, prefix)) | _mask(pc.starts_with(genres, prefix + "/"))


def known_genres(config: PipelineConfig, genres: pa.Array) -> np.ndarray:
    """Whether a specific (non-``*``) prefix of any purchases modality matches each genre."""
    prefixes = {c.genre for m in config.modalities_for("purchases") for c in m.channels
                if c.genre not in (None, "*")}
    known = np.zeros(len(genres), dtype=bool)
    for prefix in prefixes:
        known |= genre_matches(genres, prefix)
    return known


def normalised_status(values: pa.Array) -> pa.Array:
    return pc.utf8_lower(_spark_trim(values))


def check_rows(table: pa.Table, config: PipelineConfig, source: str) -> CheckedRows:
    """Every check of ``parse_and_validate``, in its order; the first failure wins."""
    column = {name: _array(table.column(name)) for name in table.column_names}
    utc, parsed = parse_timestamps(column["event_time"], config.raw.timestamp_timezone)
    lower = (config.raw.valid_from - EPOCH).days * SECONDS_PER_DAY
    upper = (config.raw.valid_until - EPOCH).days * SECONDS_PER_DAY
    value_text = _spark_trim(column[VALUE_COLUMN[source]])
    value, numeric = parse_doubles(value_text)
    raw_text = [column[name] for name in RAW_SOURCES[source].names]
    undecodable = np.zeros(table.num_rows, dtype=bool)
    for text in raw_text:
        undecodable |= _mask(pc.match_substring(text, REPLACEMENT_CHARACTER))
    checks = [
        ("malformed_line", undecodable),
        ("null_user_id", ~_mask(pc.not_equal(trimmed_ids(column["user_id"]), ""))),
        ("unparseable_timestamp", ~parsed),
        ("out_of_range_timestamp", parsed & ((utc < lower) | (utc >= upper))),
        ("non_numeric_value", _blank(value_text) | ~numeric | ~np.isfinite(value)),
        ("negative_value", value < 0),
        ("value_too_large", value > MAX_RAW_VALUE),
    ]
    quantity = None
    if source == "purchases":
        quantity_text = _spark_trim(column["quantity"])
        quantity, quantity_numeric = parse_doubles(quantity_text)
        empty = _blank(quantity_text)
        quantity = np.where(empty, 1.0, quantity)  # an empty quantity means 1
        statuses = pa.array(PURCHASE_STATUSES)
        checks += [
            ("non_numeric_value", ~(empty | quantity_numeric) | ~np.isfinite(quantity)),
            ("negative_value", quantity < 0),
            ("value_too_large", quantity > MAX_RAW_VALUE),
            ("unknown_status", ~Distinct(column["status"]).where(
                lambda v: _mask(pc.is_in(normalised_status(v), statuses)))),
            ("unknown_genre", ~Distinct(column["genre"]).where(
                lambda v: known_genres(config, v))),
        ]
    else:
        point_types = pa.array(sorted({c.point_type for m in config.modalities_for("points")
                                       for c in m.channels}))
        checks.append(("unknown_point_type", ~Distinct(column["point_type"]).where(
            lambda v: _mask(pc.is_in(_spark_trim(v), point_types)))))
    reason = np.zeros(table.num_rows, dtype=np.int8)
    for name, failed in reversed(checks):
        reason = np.where(failed, np.int8(REJECT_REASONS.index(name) + 1), reason)
    return CheckedRows(reason=reason, utc=utc, value=value, quantity=quantity)


def first_copies(table: pa.Table) -> np.ndarray:
    """Sorted positions of one copy of each distinct row (every column; nulls are equal)."""
    numbered = table.append_column("_row", pa.array(np.arange(table.num_rows)))
    grouped = numbered.group_by(table.column_names, use_threads=False).aggregate(
        [("_row", "min")])
    return np.sort(grouped.column("_row_min").to_numpy())


# --------------------------------------------------------------------------- encoding


Contribution = tuple[int, np.ndarray, np.ndarray]  # (channel, rows feeding it, their values)


def channel_contributions(modality: ModalityConfig, columns: dict[str, Distinct],
                          value: np.ndarray, quantity: np.ndarray | None
                          ) -> list[Contribution]:
    """What each row adds to each channel of ``modality``, as in ``channel_values``."""
    result = []
    if modality.source == "purchases":
        status = columns["status"]
        is_purchase = status.where(lambda v: _mask(pc.equal(normalised_status(v), "purchase")))
        is_cancel = status.where(lambda v: _mask(pc.equal(normalised_status(v), "cancel")))
        ones = np.ones(len(value))
        for index, channel in enumerate(modality.channels):
            if channel.measure == "purchase_amount" and modality.cancellations == "net":
                feeds, amount = is_purchase | is_cancel, np.where(is_cancel, -value, value)
            else:
                feeds, amount = {
                    "purchase_amount": (is_purchase, value),
                    "cancel_amount": (is_cancel, value),
                    "purchase_count": (is_purchase, ones),
                    "cancel_count": (is_cancel, ones),
                    "quantity": (is_purchase, quantity),
                }[channel.measure]
            feeds = feeds & columns["genre"].where(
                lambda v, prefix=channel.genre: genre_matches(v, prefix))
            picked = np.flatnonzero(feeds)
            result.append((index, picked, amount[picked]))
    else:
        for index, channel in enumerate(modality.channels):
            picked = np.flatnonzero(columns["point_type"].where(
                lambda v, kind=channel.point_type: _mask(pc.equal(_spark_trim(v), kind))))
            amount = value[picked] if channel.measure == "points" else np.ones(len(picked))
            result.append((index, picked, amount))
    return result


def group_sums(keys: Sequence[np.ndarray], values: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``values`` per distinct key tuple by sort-and-reduce.

    Returns (position of one member of each group, group sums), groups in ascending key
    order. Keys are packed into one int64 when their ranges allow it (one argsort instead
    of a multi-key lexsort).
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    lows = [int(k.min()) for k in keys]
    spans = [int(k.max()) - low + 1 for k, low in zip(keys, lows)]
    if math.prod(spans) < 2 ** 62:
        packed = np.zeros(len(values), dtype=np.int64)
        for k, low, span in zip(keys, lows, spans):
            packed = packed * span + (k.astype(np.int64) - low)
        order = np.argsort(packed, kind="stable")
        ordered = packed[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    else:
        order = np.lexsort(list(keys)[::-1])
        changed = np.zeros(len(values), dtype=bool)
        changed[0] = True
        for k in keys:
            ordered = k[order]
            changed[1:] |= ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(changed)
    return order[starts], np.add.reduceat(values[order], starts)


def published_users(user_ids: pa.Array, key: bytes | None) -> tuple[pa.Array, np.ndarray]:
    """(the distinct published ids in sorted order, each row's position among them).

    Published ids are the pseudonyms when a key is set (hashed once per distinct id).
    """
    encoded = pc.dictionary_encode(user_ids)
    names = encoded.dictionary
    if key is not None:
        names = pa.array([privacy.pseudonym(key, u) for u in names.to_pylist()], pa.string())
    rank = pc.rank(names, sort_keys="ascending").to_numpy().astype(np.int64) - 1
    return names.take(pa.array(np.argsort(rank))), rank[encoded.indices.to_numpy()]


def encode_batch(table: pa.Table, config: PipelineConfig, source: str,
                 counts: np.ndarray, key: bytes | None) -> list[pa.Table]:
    """Validate, de-duplicate, bin, route and sum one batch; add its accounting to ``counts``.

    ``counts[0]`` collects rows encoded, ``counts[1 + i]`` rows rejected as
    ``REJECT_REASONS[i]``. Returns one cell table per modality of ``source``.
    """
    checked = check_rows(table, config, source)
    tally = np.bincount(checked.reason, minlength=len(REJECT_REASONS) + 1)
    valid = np.flatnonzero(checked.reason == 0)
    # Exact copies within a landing date: one is encoded, the others are duplicate_row.
    keep = valid[first_copies(table.take(pa.array(valid)))]
    tally[0] = len(keep)
    tally[1 + REJECT_REASONS.index("duplicate_row")] += len(valid) - len(keep)
    counts += tally

    rows = table.take(pa.array(keep))
    utc = checked.utc[keep]
    local = utc + utc_offsets(utc, config.window.timezone)
    date = np.floor_divide(local, SECONDS_PER_DAY)
    hour = np.floor_divide(np.mod(local, SECONDS_PER_DAY), 3600)
    landing = rows.column("dt").cast(pa.int32()).to_numpy()
    names, user = published_users(trimmed_ids(_array(rows.column("user_id"))), key)
    value = checked.value[keep]
    quantity = checked.quantity[keep] if checked.quantity is not None else None
    routing = ("status", "genre") if source == "purchases" else ("point_type",)
    columns = {name: Distinct(rows.column(name)) for name in routing}

    pieces = []
    for modality in config.modalities_for(source):
        contributions = channel_contributions(modality, columns, value, quantity)
        picked = np.concatenate([p for _, p, _ in contributions])
        channel = np.concatenate([np.full(len(p), i, dtype=np.int16)
                                  for i, p, _ in contributions])
        amount = np.concatenate([a for _, _, a in contributions]).astype(np.float64)
        first, sums = group_sums([landing[picked], user[picked], date[picked], hour[picked],
                                  channel], amount)
        origin = picked[first]
        pieces.append(pa.table([
            pa.array(landing[origin]).cast(pa.date32()),
            names.take(pa.array(user[origin])),
            pa.repeat(pa.scalar(modality.name, pa.string()), len(first)),
            pa.array(date[origin].astype(np.int32)).cast(pa.date32()),
            pa.array(hour[origin].astype(np.int8)),
            pa.array(channel[first]),
            pa.array(sums.astype(np.float32)),
        ], schema=CELLS))
    return pieces
