"""The synthetic data set's planted bad rows, one kind per quarantine reason, and its partition
writers (Parquet, CSV, JSON lines)."""
from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from common import catalog, storage

# Bad-row classes planted in each source (value = the reject reason the encoder must give).
BAD_ROW_KINDS = {
    "purchases": ("null_user_id", "unparseable_timestamp", "out_of_range_timestamp",
                  "negative_value", "non_numeric_value", "unknown_genre", "duplicate_row",
                  "malformed_line"),
    "points": ("null_user_id", "unparseable_timestamp", "out_of_range_timestamp",
               "negative_value", "non_numeric_value", "unknown_point_type", "duplicate_row",
               "malformed_line"),
}
TEXT_ONLY_KINDS = ("malformed_line",)
_UNPARSEABLE = ("not-a-date", "2026-13-45T25:61:00Z", "31/02/2026 10:00", "yesterday", "")
_NON_NUMERIC = ("abc", "12,50", "NaN", "1.2.3", "¥1200", "n/a")
_OUT_OF_RANGE = ("1970-01-01T00:00:00Z", "2099-12-31T23:59:59Z", "1900-01-01T09:00:00Z")


# --------------------------------------------------------------------------- bad rows


def bad_row_counts(rows_so_far: int, planted_so_far: dict[str, int], source: str, fmt: str,
                   fraction: float) -> dict[str, int]:
    """Bad rows of each class to plant in the next partition.

    ``rows_so_far`` counts generated rows including this partition. Counts are diffused
    across partitions: after each partition the running total of every class is exactly
    ``round(fraction * rows_so_far)`` whenever the partitions have had room for them, and a
    partition too small to take its share passes the rest on to the next one.
    """
    kinds = [k for k in BAD_ROW_KINDS[source] if fmt != "parquet" or k not in TEXT_ONLY_KINDS]
    target = int(round(rows_so_far * fraction))
    return {kind: max(0, target - planted_so_far.get(kind, 0)) for kind in kinds}


def inject_bad_rows(table: pa.Table, source: str, counts: dict[str, int],
                    rng: np.random.Generator
                    ) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """Corrupt distinct rows in place (one class each) and append duplicate rows.

    Returns the new table, the row positions to turn into malformed lines when the table is
    written as text (they are clean rows until then, and get no other defect), and how many
    rows of each class were planted: fewer than asked when the table is too small.
    """
    value_col = "amount" if source == "purchases" else "points"
    order = rng.permutation(table.num_rows)
    cursor = 0

    planted: dict[str, int] = {}

    def take(kind: str) -> np.ndarray:
        nonlocal cursor
        picked = np.sort(order[cursor:cursor + counts.get(kind, 0)])
        cursor += len(picked)
        if kind in counts:
            planted[kind] = len(picked)
        return picked

    def pick(choices: tuple[str, ...], n: int) -> list[str | None]:
        return [choices[i] or None for i in rng.integers(0, len(choices), size=n)]

    edits: dict[str, list[tuple[np.ndarray, list]]] = {name: [] for name in table.column_names}
    null_ids = take("null_user_id")
    edits["user_id"].append((null_ids, [None] * len(null_ids)))
    unparseable = take("unparseable_timestamp")
    edits["event_time"].append((unparseable, pick(_UNPARSEABLE, len(unparseable))))
    out_of_range = take("out_of_range_timestamp")
    edits["event_time"].append((out_of_range, pick(_OUT_OF_RANGE, len(out_of_range))))
    negative = take("negative_value")
    values = table.column(value_col)
    edits[value_col].append((negative, ["-" + v for v in values.take(negative).to_pylist()]))
    non_numeric = take("non_numeric_value")
    edits[value_col].append((non_numeric, pick(_NON_NUMERIC, len(non_numeric))))
    unknown_genre = take("unknown_genre")
    edits.setdefault("genre", []).append(
        (unknown_genre, [f"legacy_{i}/unmapped" for i in rng.integers(0, 100, len(unknown_genre))]))
    unknown_type = take("unknown_point_type")
    edits.setdefault("point_type", []).append((unknown_type, ["legacy_bonus"] * len(unknown_type)))
    malformed = take("malformed_line")
    originals = take("duplicate_row")  # clean rows whose exact copies are appended
    dirty = pa.table({name: _replace_rows(table.column(name), edits.get(name, []))
                      for name in table.column_names}, schema=table.schema)
    return pa.concat_tables([dirty, dirty.take(originals)]), malformed, planted


def _replace_rows(column: pa.ChunkedArray, edits: list[tuple[np.ndarray, list]]) -> pa.Array:
    """``column`` with the rows at each edit's positions replaced by its values."""
    edits = [(p, v) for p, v in edits if len(p)]
    if not edits:
        return column.combine_chunks()
    positions = np.concatenate([p for p, _ in edits])
    replacements = [x for _, v in edits for x in v]
    order = np.argsort(positions, kind="stable")
    mask = np.zeros(len(column), dtype=bool)
    mask[positions] = True
    return pc.replace_with_mask(column.combine_chunks(), pa.array(mask),
                                pa.array([replacements[i] for i in order], pa.string()))


# --------------------------------------------------------------------------- writers


def _to_text(table: pa.Table, fmt: str, malformed: np.ndarray) -> bytes:
    """Serialise as CSV (with header) or JSON lines, breaking the ``malformed`` rows."""
    if fmt == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        lines = buffer.getvalue().decode().splitlines()
        header, rows = lines[:1], lines[1:]
        for i in malformed:  # cut after the second field: too few columns
            rows[i] = ",".join(rows[i].split(",")[:2])
        return ("\n".join(header + rows) + "\n").encode()
    rows = table.to_pandas().to_json(orient="records", lines=True, force_ascii=False)
    lines = rows.splitlines()
    for i in malformed:  # truncate the JSON object: not parseable
        lines[i] = lines[i][: max(1, len(lines[i]) // 2)]
    return ("\n".join(lines) + "\n").encode()


def write_partition(table: pa.Table, directory: str, day: dt.date, fmt: str,
                    malformed: np.ndarray) -> None:
    target = storage.join(catalog.landing_path(directory, day), f"part-00000.{fmt}")
    if fmt == "parquet":
        storage.write_parquet(table, target)
    else:
        storage.write_bytes(_to_text(table, fmt, malformed), target)
