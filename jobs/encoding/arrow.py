"""The Arrow engine: one landing date's raw Parquet rows to cells, rejects and accounting,
in vectorised numpy and pyarrow, inside one Spark task.

Every cell of a landing date comes from that date's rows alone (the duplicate check and the
sums are per landing date), so the engine needs no shuffle: :func:`landing_task` runs as one
Spark task per landing date (``jobs/encode.py`` hands them out with ``mapInArrow``), reads
the date's files with pyarrow, and writes the date's events and rejects into the run's
staging folders. Only the row accounting goes back to the driver.

String checks run as Arrow kernels, over a column's distinct values where it has few
(genres, statuses, point types); timestamps are decoded from the string bytes with numpy
once a regular expression has vouched for their shape; cells are summed by sorting one
packed integer key and reducing with ``np.add.reduceat``; exact copies are found by one
hash group-by over the raw columns. Python loops run over sources, modalities, channels and
rules, never over rows (and, with pseudonymisation or an erasure list, over distinct ids).

The rules are those of :func:`jobs.encoding.validation.parse_and_validate` and
:func:`jobs.encoding.cells.channel_values` (the Spark engine, which reads every format),
including Spark's parsing quirks as measured on Spark 4.3: ``try_to_timestamp`` rejects a
zone after a time without seconds and offsets beyond ±18:00; ``try_cast`` to double
follows ``java.lang.Double.parseDouble`` (``1e3d``, ``Infinity``, ``-NaN``, surrounding
control characters) plus Spark's ``inf``/``nan`` literals. The two engines are checked
against each other (``tests/test_reference_encoder.py``). Not modelled, so the encoder
gives such inputs to the Spark engine or would differ on them:

* hexadecimal floating-point values (``0x1p3``), which Spark accepts: here non-numeric;
* a timestamp followed by a line terminator, which Java's ``$`` tolerates: here unparseable;
* raw formats other than Parquet, typed (non-string) raw columns and non-local storage
  URIs: ``jobs/encode.py`` uses the Spark engine for those (:func:`usable`).
"""
from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common import privacy
from common.erasures import ERASED
from jobs.encoding.validation import DATE_PATTERN, TIMESTAMP_PATTERN, VALUE_COLUMN
from schemas.config import ModalityConfig, PipelineConfig
from schemas.contracts import (
    MAX_RAW_VALUE,
    PURCHASE_STATUSES,
    RAW_SOURCES,
    REJECT_REASONS,
    REJECTS,
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
ERASED_CODE = len(REJECT_REASONS) + 1  # reason codes: 0 valid, 1 + i REJECT_REASONS[i]

CELLS = pa.schema([
    pa.field("dt", pa.date32(), nullable=False),  # landing date: Spark's events/dt=...
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),  # local date of the event
    pa.field("hour", pa.int8(), nullable=False),
    pa.field("channel", pa.int16(), nullable=False),
    pa.field("value", pa.float32(), nullable=False),
])
# One row per (landing date, source, reason) back to the driver: what encode.account folds.
COUNTS = pa.schema([
    pa.field("dt", pa.date32()), pa.field("source", pa.string()),
    pa.field("reason", pa.string()), pa.field("rows", pa.int64()),
    pa.field("duplicates", pa.int64()),
])
COUNTS_DDL = "dt DATE, source STRING, reason STRING, rows BIGINT, duplicates BIGINT"


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
    return pc.utf8_trim(ids, characters=" \t\n\x0b\f\r")  # the class of ID_TRIM_PATTERN


class UserIds:
    """A batch's raw user ids, trimmed once, as distinct ids and each row's index into them
    (-1 for a null id). Validation, the erasure list, the duplicate check and publication
    all read this one encoding."""

    def __init__(self, column: pa.Array | pa.ChunkedArray):
        encoded = pc.dictionary_encode(trimmed_ids(_array(column)))
        self.distinct: pa.Array = encoded.dictionary
        self.index = pc.fill_null(encoded.indices, -1).to_numpy(
            zero_copy_only=False).astype(np.int64)

    def blank(self) -> np.ndarray:
        """Null, or nothing but whitespace: ``null_user_id``."""
        empty = np.append(~_mask(pc.not_equal(self.distinct, "")), True)
        return empty[self.index]  # index -1 picks the appended True


def _holds(text: pa.Array, needle: str) -> bool:
    """Whether any string of ``text`` may contain ``needle``: one scan of the data buffer
    (a false positive only costs the exact kernel)."""
    data = text.buffers()[2] if text.type == pa.string() else None
    if data is None:
        return text.type != pa.string()
    return needle.encode("utf-8") in data.to_pybytes()


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
        if any(_holds(numbers, c) for c in "fFdD") and _mask(
                pc.match_substring_regex(numbers, TYPE_SUFFIX)).any():
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


def event_times(text: pa.Array, config: PipelineConfig) -> pa.Array:
    """``event_time`` as validation reads it: with ``raw.event_time_precision: day`` a date
    alone stands for that date at ``raw.day_hour`` o'clock."""
    if config.raw.event_time_precision != "day":
        return text
    text = _spark_trim(text)
    dated = pc.fill_null(pc.match_substring_regex(text, DATE_PATTERN), False)
    return pc.if_else(dated, pc.binary_join_element_wise(
        text, pa.scalar(f"T{config.raw.day_hour:02d}:00:00"), ""), text)


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


def check_rows(table: pa.Table, config: PipelineConfig, source: str,
               users: UserIds) -> CheckedRows:
    """Every check of ``parse_and_validate``, in its order; the first failure wins."""
    column = {name: _array(table.column(name)) for name in table.column_names}
    utc, parsed = parse_timestamps(event_times(column["event_time"], config),
                                   config.raw.timestamp_timezone)
    lower = (config.raw.valid_from - EPOCH).days * SECONDS_PER_DAY
    upper = (config.raw.valid_until - EPOCH).days * SECONDS_PER_DAY
    value_text = _spark_trim(column[VALUE_COLUMN[source]])
    value, numeric = parse_doubles(value_text)
    raw_text = [column[name] for name in RAW_SOURCES[source].names]
    undecodable = np.zeros(table.num_rows, dtype=bool)
    for text in raw_text:
        if _holds(text, REPLACEMENT_CHARACTER):
            undecodable |= _mask(pc.match_substring(text, REPLACEMENT_CHARACTER))
    checks = [
        ("malformed_line", undecodable),
        ("null_user_id", users.blank()),
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


def first_copies(table: pa.Table, rows: np.ndarray, user: np.ndarray,
                 utc: np.ndarray) -> np.ndarray:
    """Sorted positions, among ``rows`` of ``table``, of one copy of each distinct row
    (every column equal; nulls are equal).

    Exact copies share their user and their event time, so only the rows whose (user,
    UTC second) pair repeats (``user``: an index per row, ``utc``: the parsed time) are
    compared on every column, by a hash group-by; every other row is the only copy of
    itself. Copies are rare, so the group-by sees few rows.
    """
    if len(rows) == 0:
        return rows
    seconds = utc[rows] - utc[rows].min()
    users = user[rows] + 1
    if (int(seconds.max()) + 1) * (int(users.max()) + 1) < 2 ** 62:
        key = users * (int(seconds.max()) + 1) + seconds
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
    else:
        order = np.lexsort((seconds, users))
        same = (users[order][1:] == users[order][:-1]) & (
            seconds[order][1:] == seconds[order][:-1])
    repeated = np.zeros(len(rows), dtype=bool)
    repeated[order[1:][same]] = True
    repeated[order[:-1][same]] = True
    candidates = np.flatnonzero(repeated)
    if len(candidates) == 0:
        return rows
    subset = table.take(pa.array(rows[candidates]))
    numbered = subset.append_column("_row", pa.array(np.arange(len(candidates))))
    grouped = numbered.group_by(subset.column_names, use_threads=False).aggregate(
        [("_row", "min")])
    kept = np.ones(len(rows), dtype=bool)
    kept[candidates] = False
    kept[candidates[grouped.column("_row_min").to_numpy()]] = True
    return rows[kept]


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


def published_users(users: UserIds, rows: np.ndarray,
                    key: bytes | None) -> tuple[pa.Array, np.ndarray]:
    """(the distinct published ids in sorted order, the position of each of ``rows`` among
    them); ``rows`` have ids. Published ids are the pseudonyms when a key is set (hashed
    once per distinct id)."""
    names = users.distinct
    if key is not None:
        names = pa.array([privacy.pseudonym(key, u) for u in names.to_pylist()], pa.string())
    rank = pc.rank(names, sort_keys="ascending").to_numpy().astype(np.int64) - 1
    return names.take(pa.array(np.argsort(rank))), rank[users.index[rows]]


def erased_rows(users: UserIds, erased: frozenset[str]) -> np.ndarray:
    """Whether each raw id, trimmed as the encoder trims it, is on the erasure list (its
    SHA-256, ``common/erasures.py``); hashed once per distinct id."""
    if not erased:
        return np.zeros(len(users.index), dtype=bool)
    import hashlib

    listed = np.array([hashlib.sha256(u.encode("utf-8")).hexdigest() in erased
                       for u in users.distinct.to_pylist()] + [False], dtype=bool)
    return listed[users.index]


# Jackson's escapes, as Spark's to_json writes them: short forms where JSON has them.
_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def json_strings(text: pa.Array) -> pa.Array:
    """Each string as a JSON value (quoted and escaped), null as ``null``."""
    text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
    if _mask(pc.match_substring_regex(text, r"[\x00-\x1f]")).any():
        for code in range(0x20):
            char = chr(code)
            text = pc.replace_substring(text, char, _SHORT_ESCAPES.get(char, f"\\u{code:04X}"))
    quoted = pc.binary_join_element_wise(pa.scalar('"'), text, pa.scalar('"'), "")
    return pc.fill_null(quoted, "null")


def json_records(table: pa.Table, names: Sequence[str]) -> pa.Array:
    """Spark's ``to_json(struct(<names>))`` with null fields kept, for string columns."""
    pieces = []
    for i, name in enumerate(names):
        pieces += [pa.scalar(("{" if i == 0 else ",") + f'"{name}":'),
                   json_strings(_array(table.column(name)))]
    return pc.binary_join_element_wise(*pieces, pa.scalar("}"), "")


@dataclass(frozen=True)
class Encoded:
    """One source's rows of a batch, encoded."""

    cells: list[pa.Table]  # one CELLS table per modality of the source
    rejects: pa.Table  # REJECTS' columns plus dt: one row per rejected copy
    counts: list[dict]  # COUNTS rows


def encode_table(table: pa.Table, config: PipelineConfig, source: str,
                 key: bytes | None, erased: frozenset[str] = frozenset()) -> Encoded:
    """Validate, de-duplicate, bin, route and sum the raw rows of ``table``.

    ``table`` holds the source's contract columns (strings), ``dt`` (date32) and
    ``input_file``. A row of a user on the erasure list is counted as erased and goes
    nowhere else; an invalid row is one reject with its reason and file; of exact copies of
    a valid row (same landing date, every raw column equal, nulls equal) one is encoded and
    each other is a ``duplicate_row`` reject without a file.
    """
    raw = RAW_SOURCES[source].names
    users = UserIds(table.column("user_id"))
    checked = check_rows(table, config, source, users)
    reason = np.where(erased_rows(users, erased), np.int8(ERASED_CODE), checked.reason)
    valid = np.flatnonzero(reason == 0)
    keep = first_copies(table.select([*raw, "dt"]), valid, users.index, checked.utc)
    copies = np.setdiff1d(valid, keep, assume_unique=True)
    counts = _counts(table, source, reason, copies)

    rejected = np.flatnonzero((reason > 0) & (reason != ERASED_CODE))
    order = np.concatenate([rejected, copies])
    names = pa.array(list(REJECT_REASONS))
    reasons = names.take(pa.array(np.concatenate([
        reason[rejected].astype(np.int64) - 1,
        np.full(len(copies), REJECT_REASONS.index("duplicate_row"))])))
    taken = table.take(pa.array(order, pa.int64()))
    files = pa.concat_arrays([_array(taken.column("input_file")).slice(0, len(rejected)),
                              pa.nulls(len(copies), pa.string())])
    rejects = pa.table([pa.repeat(pa.scalar(source), len(order)), reasons,
                        json_records(taken, raw), files, _array(taken.column("dt"))],
                       schema=pa.schema([*REJECTS, pa.field("dt", pa.date32())]))
    routing = ("status", "genre") if source == "purchases" else ("point_type",)
    kept = table.select(["dt", *routing]).take(pa.array(keep, pa.int64()))
    return Encoded(cells=_cells(kept, checked, keep, config, source,
                                published_users(users, keep, key), routing),
                   rejects=rejects, counts=counts)


def _counts(table: pa.Table, source: str, reason: np.ndarray,
            copies: np.ndarray) -> list[dict]:
    """COUNTS rows: per landing date and reason, with the valid rows' surplus copies."""
    landing = table.column("dt").cast(pa.int32()).to_numpy()
    rows = []
    for day in np.unique(landing):
        on_day = landing == day
        date = EPOCH + dt.timedelta(days=int(day))
        tally = np.bincount(reason[on_day], minlength=ERASED_CODE + 1)
        duplicates = int(np.count_nonzero(landing[copies] == day))
        for code, n in enumerate(tally):
            if n:
                name = (None if code == 0 else ERASED if code == ERASED_CODE
                        else REJECT_REASONS[code - 1])
                rows.append({"dt": date, "source": source, "reason": name, "rows": int(n),
                             "duplicates": duplicates if code == 0 else 0})
    return rows


def _cells(rows: pa.Table, checked: CheckedRows, keep: np.ndarray, config: PipelineConfig,
           source: str, published: tuple[pa.Array, np.ndarray],
           routing: Sequence[str]) -> list[pa.Table]:
    """The cells of the kept (valid, first-copy) ``rows``, one table per modality."""
    utc = checked.utc[keep]
    local = utc + utc_offsets(utc, config.window.timezone)
    date = np.floor_divide(local, SECONDS_PER_DAY)
    hour = np.floor_divide(np.mod(local, SECONDS_PER_DAY), 3600)
    landing = rows.column("dt").cast(pa.int32()).to_numpy()
    names, user = published
    value = checked.value[keep]
    quantity = checked.quantity[keep] if checked.quantity is not None else None
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


# --------------------------------------------------------------------------- one landing date


def read_files(files: Sequence[str], source: str, landing: dt.date) -> pa.Table:
    """The raw rows of one landing date's Parquet files: the contract's columns as strings
    (a column a file lacks reads as null), ``dt`` and ``input_file`` (as Spark names it)."""
    import pyarrow.parquet as pq

    contract = RAW_SOURCES[source]
    schema = pa.schema([*contract, pa.field("dt", pa.date32()),
                        pa.field("input_file", pa.string())])
    pieces = []
    for path in files:
        parquet = pq.ParquetFile(path)  # one open: the footer, then the columns it has
        table = parquet.read(columns=[n for n in contract.names
                                      if n in parquet.schema_arrow.names])
        n = table.num_rows
        pieces.append(pa.table(
            [table.column(f.name).cast(pa.string()) if f.name in table.column_names
             else pa.nulls(n, pa.string()) for f in contract]
            + [pa.repeat(pa.scalar(landing, pa.date32()), n),
               pa.repeat(pa.scalar(spark_file_path(path)), n)], schema=schema))
    return pa.concat_tables(pieces).combine_chunks() if pieces else schema.empty_table()


def spark_file_path(path: str) -> str:
    """A local file as Spark's ``_metadata.file_path`` names it."""
    return "file:" + os.path.abspath(path)


@dataclass(frozen=True)
class LandingTask:
    """One landing date's work: its data files per source."""

    dt: dt.date
    files: dict[str, list[str]]


def landing_task(task: LandingTask, config: PipelineConfig, key: bytes | None,
                 erased: frozenset[str], events_dir: str, rejects_dir: str) -> list[dict]:
    """Encode one landing date; write its events and rejects as one Parquet file each under
    ``<dir>/dt=<date>/`` (none when it has no row); return its COUNTS rows.

    Events are sorted by (user_id, modality, date, hour, channel), as the Spark engine
    writes them.
    """
    cells, rejects, counts = [], [], []
    for source, files in task.files.items():
        encoded = encode_table(read_files(files, source, task.dt), config, source, key, erased)
        cells += encoded.cells
        rejects.append(encoded.rejects)
        counts += encoded.counts
    name = f"part-{uuid.uuid4().hex}.snappy.parquet"
    events = pa.concat_tables(cells).drop_columns(["dt"]) if cells else None
    if events is not None and events.num_rows:
        events = events.take(pa.array(cell_order(events)))
        _write(events, f"{events_dir}/dt={task.dt.isoformat()}", name)
    quarantined = pa.concat_tables(rejects).drop_columns(["dt"]) if rejects else None
    if quarantined is not None and quarantined.num_rows:
        _write(quarantined, f"{rejects_dir}/dt={task.dt.isoformat()}", name)
    return counts


def cell_order(events: pa.Table) -> np.ndarray:
    """The order of (user_id, modality, date, hour, channel): strings ranked once per
    distinct value, then one integer lexsort, instead of comparing strings per cell."""
    keys = []
    for name in ("channel", "hour", "date", "modality", "user_id"):
        column = _array(events.column(name))
        if pa.types.is_string(column.type):
            encoded = pc.dictionary_encode(column)
            rank = pc.rank(encoded.dictionary, sort_keys="ascending").to_numpy()
            keys.append(rank[encoded.indices.to_numpy()])
        else:
            keys.append(column.cast(pa.int32()).to_numpy())
    return np.lexsort(keys)


def _write(table: pa.Table, folder: str, name: str) -> None:
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, name), compression="snappy")


def landing_tasks_function(tasks: Sequence[LandingTask], config: PipelineConfig,
                           key: bytes | None, erased: frozenset[str], events_dir: str,
                           rejects_dir: str) -> Callable[[Iterator], Iterator]:
    """A ``mapInArrow`` function over a frame of task indexes (``id``): runs each task and
    yields its COUNTS rows."""
    def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # Spark runs a task per core already: Arrow's own thread pool would oversubscribe.
        threads = pa.cpu_count()
        pa.set_cpu_count(1)
        try:
            for batch in batches:
                for index in batch.column("id").to_pylist():
                    rows = landing_task(tasks[index], config, key, erased, events_dir,
                                        rejects_dir)
                    yield pa.RecordBatch.from_pylist(rows, schema=COUNTS)
        finally:
            pa.set_cpu_count(threads)
    return apply


def usable(config: PipelineConfig, landed: dict[str, list[str]]) -> str | None:
    """Why the Arrow engine cannot encode the ``landed`` partitions (source -> folders), or
    None when it can: ``raw.engine`` is ``auto``, the format Parquet, every folder local and
    every raw column present in a data file a text column."""
    from common import storage
    from jobs.typed_read import data_files, footer_schema

    if config.raw.engine != "auto":
        return f"raw.engine is {config.raw.engine!r}"
    if config.raw.format != "parquet":
        return f"raw.format is {config.raw.format!r}"
    for source, folders in landed.items():
        for folder in folders:
            if not storage.is_local(folder):
                return f"{folder} is not on local storage"
            for path in data_files(folder):
                schema = footer_schema(path) if os.path.getsize(path) else None
                if schema is None or isinstance(schema, str):  # empty; or refused earlier
                    continue
                typed = [f"{f.name} ({f.type})" for f in schema if f.name in
                         RAW_SOURCES[source].names and not pa.types.is_string(f.type)
                         and not pa.types.is_large_string(f.type)]
                if typed:
                    return f"{path} has typed raw columns: {', '.join(typed)}"
    return None


def landing_tasks(landed: dict[str, list[str]]) -> list[LandingTask]:
    """One task per landing date found, with each source's non-empty data files."""
    from jobs.typed_read import data_files

    files: dict[str, dict[str, list[str]]] = {}
    for source, folders in landed.items():
        for folder in folders:
            day = folder.rsplit("/dt=", 1)[1]
            files.setdefault(day, {})[source] = [
                p for p in data_files(folder) if os.path.getsize(p)]
    return [LandingTask(dt=dt.date.fromisoformat(day), files=by_source)
            for day, by_source in sorted(files.items())]
