"""The snapshot update in Arrow: an earlier snapshot + the re-derived dates' daily cells ->
the snapshot at ``ds``, in one process, without Spark.

This is :func:`jobs.encoding.snapshot.update_snapshot` (the Spark version, which stays the
definition) in numpy and pyarrow. It runs where the inputs are local Parquet;
``build_snapshot`` chooses it (``snapshot.arrow_usable``). The nightly update touches every
row, because the days are relative to the window and every cell's day moves; in Spark's
higher-order functions that measured 20.5 s warm and 47.5 s in a fresh JVM for 16.9 M
cells, which bounded the nightly run (here: 5.3 s, ``bench/bench_encode.py``).

Per base row the carried cells keep their order (a shift keeps (day, hour, channel, value)
sorted), so the merge with the fresh cells is a stable sort by row, and the text form of a
carried cell is its old text with the day replaced: only the fresh cells' values are
formatted, as Spark casts a float to a string (``java.lang.Float.toString`` below 1e15, which
this module reproduces; at or above 1e15 Java 17 prints digits that are not the shortest, so
such a fresh value gives the update back to Spark: :class:`NeedsSpark`).
"""
from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contracts import SNAPSHOT

EPOCH = dt.date(1970, 1, 1)
BATCH_ROWS = 16_384  # base snapshot rows per step: a few million cells at a year's window
# Whole values print as integers below this (the Spark version's bigint cast); above it
# Spark prints java.lang.Float.toString, whose Java 17 digits are not reproduced here.
WHOLE_LIMIT = 1e15
CELL_FIELDS = ("day", "hour", "channel", "value")


class NeedsSpark(Exception):
    """The update holds a value whose text only Spark prints as Spark does."""


# --------------------------------------------------------------------------- text form

def java_float_text(value: float) -> str:
    """``java.lang.Float.toString`` of a float32 value, for values below 1e15 in magnitude
    (checked against Spark 4.3 on Java 17 for 420,000 values): the shortest digits that
    identify the float, positional from 1e-3 to 1e7, else ``d.dddE<n>``."""
    v = np.float32(value)
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return "-0.0" if np.signbit(v) else "0.0"
    sign = "-" if v < 0 else ""
    mantissa, exponent = np.format_float_scientific(abs(v), unique=True, trim="0").split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    exp = int(exponent)
    if 1e-3 <= abs(float(v)) < 1e7:
        point = exp + 1
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{sign}{digits}{'0' * (point - len(digits))}.0"
        return f"{sign}{digits[:point]}.{digits[point:]}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exp}"


def value_texts(values: np.ndarray) -> pa.Array:
    """Each float32 value as the snapshot's text prints it: whole values below 1e15 without a
    decimal point (5000, not 5000.0), others as Spark casts a float to a string."""
    values = np.asarray(values, dtype=np.float32)
    magnitude = np.abs(values)
    whole = (magnitude < WHOLE_LIMIT) & (values == np.floor(values))
    if np.any(np.isfinite(values) & (magnitude >= WHOLE_LIMIT)):
        raise NeedsSpark("a cell value of 1e15 or more")
    text = pc.cast(pa.array(np.where(whole, values, 0).astype(np.int64)), pa.string())
    if whole.all():
        return text
    odd = ~whole
    distinct, inverse = np.unique(values[odd], return_inverse=True)
    formatted = np.array([java_float_text(v) for v in distinct], dtype=object)[inverse]
    texts = np.array(text.to_pylist(), dtype=object)
    texts[odd] = formatted
    return pa.array(texts, pa.string())


def cell_texts(day: np.ndarray, hour: np.ndarray, channel: np.ndarray,
               values: pa.Array) -> pa.Array:
    """'day,hour,channel:value' per cell."""
    channel_value = pc.binary_join_element_wise(pc.cast(pa.array(channel), pa.string()),
                                                values, ":")
    return pc.binary_join_element_wise(pc.cast(pa.array(day), pa.string()),
                                       pc.cast(pa.array(hour), pa.string()), channel_value, ",")


# --------------------------------------------------------------------------- cells

@dataclass
class Cells:
    """Cells of many rows: ``row`` (non-decreasing within each part that was built in row
    order), the four cell fields and each cell's text."""

    row: np.ndarray
    day: np.ndarray
    hour: np.ndarray
    channel: np.ndarray
    value: np.ndarray
    text: pa.Array

    def take(self, index: np.ndarray) -> "Cells":
        return Cells(self.row[index], self.day[index], self.hour[index], self.channel[index],
                     self.value[index], self.text.take(pa.array(index)))

    @staticmethod
    def concat(parts: Sequence["Cells"]) -> "Cells":
        return Cells(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("row", *CELL_FIELDS)),
                     pa.concat_arrays([p.text for p in parts]))


@dataclass
class Fresh:
    """One modality's re-derived cells, sorted by (user, day, hour, channel): the users, their
    cells' offsets, and whether a base row has claimed each user."""

    users: pa.Array
    offsets: np.ndarray
    cells: Cells
    claimed: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if self.claimed is None:
            self.claimed = np.zeros(len(self.users), dtype=bool)

    def cells_of(self, users: np.ndarray, rows: np.ndarray) -> Cells:
        """The cells of fresh ``users`` (indexes), renumbered to the base ``rows``."""
        starts, ends = self.offsets[users], self.offsets[users + 1]
        lengths = ends - starts
        index = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
            lengths.sum())
        taken = self.cells.take(index)
        taken.row = np.repeat(rows, lengths)
        return taken


def fresh_cells(events: pa.Table, start: dt.date, redo: Sequence[dt.date]) -> dict[str, Fresh]:
    """Daily event rows (the sparse-events contract) -> each modality's cells of the ``redo``
    local dates: summed per (user, date, hour, channel) across landing partitions, as floats,
    with days relative to ``start``."""
    wanted = pa.array(sorted(redo), pa.date32())
    rows = events.filter(pc.is_in(events.column("date"), value_set=wanted))
    rows = rows.set_column(rows.schema.get_field_index("value"), "value",
                           pc.cast(rows.column("value"), pa.float64()))
    summed = rows.group_by(["modality", "user_id", "date", "hour", "channel"],
                           use_threads=False).aggregate([("value", "sum")])
    found = {}
    for modality in pc.unique(summed.column("modality")).to_pylist():
        part = summed.filter(pc.equal(summed.column("modality"), modality))
        users = pc.dictionary_encode(part.column("user_id").combine_chunks())
        rank = pc.rank(users.dictionary, sort_keys="ascending").to_numpy()
        user = rank[users.indices.to_numpy()] - 1
        date = part.column("date").combine_chunks().cast(pa.int32()).to_numpy()
        hour = part.column("hour").to_numpy()
        channel = part.column("channel").to_numpy()
        order = np.lexsort((channel, hour, date, user))
        user, date, hour, channel = user[order], date[order], hour[order], channel[order]
        value = part.column("value_sum").to_numpy()[order].astype(np.float32)
        day = (date - (start - EPOCH).days).astype(np.int16)
        hour, channel = hour.astype(np.int8), channel.astype(np.int16)
        names = pc.take(users.dictionary, pa.array(np.argsort(rank)))
        offsets = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=len(names)))])
        found[modality] = Fresh(names, offsets, Cells(user, day, hour, channel, value,
                                                       cell_texts(day, hour, channel,
                                                                  value_texts(value))))
    return found


def carried_cells(batch: pa.RecordBatch, shift: int, window_days: int,
                  redo_days: Sequence[int]) -> Cells:
    """A base batch's cells moved to the new window (day + ``shift``), without the days
    outside it and without ``redo_days``; texts are the old ones with the new day."""
    lengths = pc.list_value_length(batch.column("day")).to_numpy(zero_copy_only=False)
    row = np.repeat(np.arange(batch.num_rows), lengths)
    fields = [pc.list_flatten(batch.column(f)).to_numpy() for f in CELL_FIELDS]
    day = (fields[0].astype(np.int32) + shift)
    keep = (day >= 0) & (day < window_days)
    if len(redo_days):
        keep &= ~np.isin(day, np.asarray(redo_days))
    kept = np.flatnonzero(keep)
    day = day[kept].astype(np.int16)
    hour, channel, value = (f[kept] for f in fields[1:])
    old = pc.list_flatten(pc.split_pattern(batch.column("text"), ";"))
    if len(old) == len(keep):
        rest = pc.list_element(pc.split_pattern(old.take(pa.array(kept)), ",", max_splits=1), 1)
        text = pc.binary_join_element_wise(pc.cast(pa.array(day), pa.string()), rest, ",")
    else:  # a text that does not match its arrays: print it again from the arrays
        text = cell_texts(day, hour, channel, value_texts(value))
    return Cells(row[kept], day, hour, channel, value, text)


def merge(carried: Cells, fresh: Cells, in_order: bool) -> Cells:
    """Per row, the carried cells then the fresh ones, sorted by (day, hour, channel, value)
    unless ``in_order`` (every fresh day follows every carried day)."""
    both = Cells.concat([carried, fresh])
    if in_order:  # two runs sorted by row: a stable sort merges them
        order = np.argsort(both.row, kind="stable")
    else:
        order = np.lexsort((both.value, both.channel, both.hour, both.day, both.row))
    return both.take(order)


def snapshot_batch(users: pa.Array, modality: str, cells: Cells, rows: int) -> pa.RecordBatch:
    """Cells of ``rows`` rows (``users``) -> snapshot rows, without the rows left empty."""
    lengths = np.bincount(cells.row, minlength=rows)
    present = np.flatnonzero(lengths)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths[present])]).astype(np.int32))
    arrays = [users.take(pa.array(present)),
              pa.repeat(pa.scalar(modality, pa.string()), len(present))]
    for name in CELL_FIELDS:
        kind = SNAPSHOT.field(name).type
        arrays.append(pa.ListArray.from_arrays(offsets, pa.array(getattr(cells, name),
                                                                  kind.value_type), type=kind))
    arrays.append(pc.binary_join(pa.ListArray.from_arrays(offsets, cells.text), ";"))
    return pa.RecordBatch.from_arrays(arrays, schema=SNAPSHOT)


# --------------------------------------------------------------------------- the update

@dataclass
class Update:
    """What the update needs to know: the windows and the re-derived days."""

    base_start: dt.date
    start: dt.date
    window_days: int
    redo: Sequence[dt.date]

    @property
    def redo_days(self) -> list[int]:
        return sorted((d - self.start).days for d in self.redo)

    @property
    def in_order(self) -> bool:
        days = self.redo_days
        return days == list(range(self.window_days - len(days), self.window_days))


def updated_batches(base: Iterator[pa.RecordBatch], fresh: dict[str, Fresh],
                    update: Update) -> Iterator[pa.RecordBatch]:
    """The base snapshot's batches updated, then the rows of users only the fresh cells
    know (per modality)."""
    shift = (update.base_start - update.start).days
    redo_days = update.redo_days
    for batch in base:
        modalities = batch.column("modality")
        for modality in pc.unique(modalities).to_pylist():
            part = batch.filter(pc.equal(modalities, modality))
            carried = carried_cells(part, shift, update.window_days, redo_days)
            extra = fresh.get(modality)
            if extra is not None:
                found = pc.index_in(part.column("user_id"), value_set=extra.users)
                rows = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
                users = found.drop_null().to_numpy().astype(np.int64)
                extra.claimed[users] = True
                carried = merge(carried, extra.cells_of(users, rows), update.in_order)
            result = snapshot_batch(part.column("user_id"), modality, carried, part.num_rows)
            if result.num_rows:
                yield result
    for modality, extra in fresh.items():
        newcomers = np.flatnonzero(~extra.claimed)
        if len(newcomers):
            cells = extra.cells_of(newcomers, np.arange(len(newcomers)))
            yield snapshot_batch(extra.users.take(pa.array(newcomers)), modality, cells,
                                 len(newcomers))


def read_events(files: Sequence[str]) -> pa.Table:
    """The sparse-events columns of daily event files."""
    import pyarrow.parquet as pq

    names = ["user_id", "modality", "date", "hour", "channel", "value"]
    tables = [pq.read_table(path, columns=names) for path in files]
    schema = pa.schema([pa.field(n, t) for n, t in zip(
        names, (pa.string(), pa.string(), pa.date32(), pa.int8(), pa.int16(), pa.float32()))])
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def base_batches(files: Sequence[str]) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    for path in files:
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS,
                                                     columns=SNAPSHOT.names)


def write_update(base_files: Sequence[str], event_files: Sequence[str], update: Update,
                 folder: str) -> dict[str, dict[str, int]]:
    """Write the updated snapshot as one Parquet file into ``folder``; per modality, its
    users and cells. Raises :class:`NeedsSpark` when a value has no text here (a fresh one
    before anything is written; one of a base row whose text did not match its arrays, while
    writing: the caller discards the folder)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    fresh = fresh_cells(read_events(event_files), update.start, update.redo)
    summary: dict[str, dict[str, int]] = {}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"part-{uuid.uuid4().hex}.snappy.parquet")
    # Reading the next base batch and writing the last result run in threads beside the
    # update of the current batch (Parquet's decoder and encoder release the GIL); the
    # batches are still written one at a time, in order.
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writing, \
            pq.ParquetWriter(path, SNAPSHOT, compression="snappy") as writer:
        pending = None
        try:
            for batch in updated_batches(prefetched(base_batches(base_files), reader), fresh,
                                         update):
                if pending is not None:
                    pending.result()
                pending = writing.submit(writer.write_batch, batch)
                m = batch.column("modality")[0].as_py()
                entry = summary.setdefault(m, {"users": 0, "cells": 0})
                entry["users"] += batch.num_rows
                entry["cells"] += int(pc.sum(pc.list_value_length(batch.column("day"))).as_py())
        finally:
            if pending is not None:
                pending.result()  # before the writer closes; raises what the write raised
    return summary


def prefetched(batches: Iterator[pa.RecordBatch], pool) -> Iterator[pa.RecordBatch]:
    """``batches``, each read in ``pool`` while the one before it is being used."""
    upcoming = pool.submit(next, batches, None)
    while True:
        batch = upcoming.result()
        if batch is None:
            return
        upcoming = pool.submit(next, batches, None)
        yield batch
