"""The Arrow engine's pieces that need no Spark: which inputs it takes, the reject records'
JSON, the duplicate check and the order of the cells it writes. Its cells and accounting
against the Spark engine: tests/test_reference_encoder.py."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_encode import config_for, purchase

from jobs.encoding import arrow
from schemas.contracts import RAW_SOURCES


def landed(tmp_path, table: pa.Table) -> dict[str, list[str]]:
    folder = tmp_path / "raw" / "dt=2026-06-30"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return {"purchases": [str(folder)]}


def test_the_engine_takes_local_text_parquet_and_names_what_it_cannot_take(tmp_path):
    rows = [purchase("u1", "2026-06-30T08:00:00Z")]
    text = pa.Table.from_pylist(rows, schema=RAW_SOURCES["purchases"])
    config = config_for(tmp_path)
    assert arrow.usable(config, landed(tmp_path / "text", text)) is None

    typed = text.set_column(3, "amount", pa.array([10.0]))
    reason = arrow.usable(config, landed(tmp_path / "typed", typed))
    assert "part-0.parquet has typed raw columns: amount (double)" in reason
    assert arrow.usable(config_for(tmp_path, raw__engine="spark"), {}) == \
        "raw.engine is 'spark'"
    assert arrow.usable(config_for(tmp_path, raw__format="csv"), {}) == "raw.format is 'csv'"


@pytest.mark.parametrize("value", ['plain', 'quo"te', "back\\slash", "tab\tnew\nline",
                                   "\x00\x1f\x7f", "ünï©ødé ✓", "", None])
def test_reject_records_are_the_json_of_the_raw_row(value):
    table = pa.table({"user_id": pa.array([value], pa.string()),
                      "event_time": pa.array(["2026-06-30T08:00:00Z"])})
    record = arrow.json_records(table, ["user_id", "event_time"])[0].as_py()
    assert json.loads(record) == {"user_id": value, "event_time": "2026-06-30T08:00:00Z"}
    assert "\n" not in record and "\t" not in record


def test_copies_are_found_by_every_column_only_where_user_and_second_repeat():
    table = pa.table({"user_id": ["a", "a", "a", "b", "a"],
                      "event_time": ["t1", "t1", "t1 ", "t1", "t1"],
                      "amount": ["1", "1", "1", "1", "2"]})
    user = np.array([0, 0, 0, 1, 0])
    utc = np.array([5, 5, 5, 5, 5])  # 't1 ' parses to the same second: compared, not a copy
    kept = arrow.first_copies(table, np.arange(5), user, utc)
    assert kept.tolist() == [0, 2, 3, 4]  # row 1 is the only exact copy (of row 0)
    assert arrow.first_copies(table, np.array([3, 4]), user, utc).tolist() == [3, 4]


def test_cells_are_ordered_by_user_modality_date_hour_channel():
    day = dt.date(2026, 6, 30)
    events = pa.table({
        "user_id": ["b", "a", "a", "b", "a"], "modality": ["points", "purchases", "points",
                                                           "points", "points"],
        "date": pa.array([day] * 5, pa.date32()), "hour": pa.array([3, 1, 2, 1, 2], pa.int8()),
        "channel": pa.array([0, 0, 1, 0, 0], pa.int16())})
    ordered = events.take(pa.array(arrow.cell_order(events)))
    assert list(zip(*(ordered.column(c).to_pylist() for c in ("user_id", "modality", "hour",
                                                              "channel")))) == [
        ("a", "points", 2, 0), ("a", "points", 2, 1), ("a", "purchases", 1, 0),
        ("b", "points", 1, 0), ("b", "points", 3, 0)]
