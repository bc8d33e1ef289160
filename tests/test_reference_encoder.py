"""The encoder's two engines against each other: the same cells, rejects and accounting.

Two independent implementations of one specification check each other: the Arrow engine
(``jobs/encoding/arrow.py``: numpy and pyarrow, one Spark task per landing date, and its
single-process run in ``bench/reference_encoder.py``) and the Spark engine (column
expressions, ``raw.engine: spark``) must agree cell for cell (values within float32
rounding), reject for reject and row for row in the accounting, on generated data and on
hand-written edge cases.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SYNTHETIC_CONFIG
from test_encode import point, purchase

from bench.reference_encoder import encode_reference
from jobs import encode
from jobs.encoding.arrow import parse_doubles, parse_timestamps
from jobs.encoding.validation import partition_dates
from metaprofile.datasets.synthetic import GeneratorOptions, generate
from schemas.config import PipelineConfig, load_config, parse_config
from schemas.contracts import RAW_SOURCES

pytestmark = pytest.mark.spark

KEYS = ("dt", "user_id", "modality", "date", "hour", "channel")


def spark_cells(spark, config: PipelineConfig) -> list[tuple]:
    """The published events as sorted (dt, user_id, modality, date, hour, channel, value)."""
    frame = spark.read.parquet(config.storage.uri("events"))
    return sorted(tuple(r) for r in frame.select(*KEYS, "value").collect())


def reference_cells(table: pa.Table) -> list[tuple]:
    return sorted(zip(*(table.column(c).to_pylist() for c in (*KEYS, "value"))))


def assert_same_cells(spark_rows: list[tuple], reference_rows: list[tuple]) -> None:
    assert [r[:-1] for r in reference_rows] == [r[:-1] for r in spark_rows]
    np.testing.assert_allclose([r[-1] for r in reference_rows], [r[-1] for r in spark_rows],
                               rtol=1e-6)


# --------------------------------------------------------------------------- the data


# Edge cases, landed as an extra file beside a generated partition. Naive times are read in
# Berlin (raw.timestamp_timezone), and cells are binned in Berlin (window.timezone).
EDGE_PURCHASES = [
    purchase("e1", "2026-03-29T02:30:00"),  # spring gap: moves to 03:30 CEST
    purchase("e1", "2026-03-29 01:59:59", amount="7"),
    purchase("e1", "2026-03-29T01:59:59", amount="7"),  # not a copy: another string
    purchase("e1", "2026-10-25T02:30:00", amount="2"),  # autumn overlap: the CEST reading
    purchase("e1", "2026-10-25T03:30:00", amount="4"),
    purchase("e1", "2026-10-25T03:30:00", amount="4", status="cancel"),
    purchase("e1", "2026-10-25T03:30:00Z", genre="fashion/basics/linen", amount="8"),
    purchase("e2", "2026-03-29T10:15:00+0530", "fashion", " 1e3d ", quantity=""),
    purchase("e2", "2026-03-29T10:15:00.987654321-05:00", "beauty/x", "Infinity"),
    purchase("e2", "2026-03-29T10:15:00.5-05:00", amount="2.5", quantity=" Infinity"),
    purchase("e3", "2026-03-29T10:15+01:00"),  # a zone without seconds: unparseable
    purchase("e3", "2026-03-29 10:15", quantity="NaN"),
    purchase("e3", "2026-03-29 10:15", quantity="-2"),
    purchase("e4", "2026-03-29T12:00:00Z", amount="10"),
    purchase("e4", "2026-03-29T12:20:00Z", amount="10", status=" Cancel "),  # net: a 0 cell
    purchase("e4", "2026-03-29T12:30:00Z", status="refund"),
    purchase("e5", "2026-03-29T12:00:00Z", genre="fashionable/x"),  # not a whole segment
    purchase("e5", "2026-03-29T12:00:00Z", genre="FASHION/basics"),
    purchase("e5", "2026-03-29T12:00:00Z", genre=None),
    purchase(" ", "2026-03-29T12:00:00Z"),
    purchase(None, "2026-03-29T12:00:00Z"),
    purchase("e6", "2019-12-31T23:59:59Z"),
    purchase("e6", "2029-12-31T23:59:59Z", amount="-0"),  # in range, far from the window
    purchase("e6", "2026-02-29T00:00:00Z"),
    purchase("e6", "2026-03-29T12:00:00Z", amount="-1"),
    purchase("e6", "2026-03-29T12:00:00Z", amount=""),
    purchase("e6", "2026-03-29T12:00:00Z", amount="12,50"),
    *[purchase("e7", "2026-03-29T18:00:00Z", quantity=None)] * 3,  # 2 duplicates
    *[purchase("e7", "2026-03-29T18:00:00Z", amount="x")] * 2,  # 2 non-numeric, no duplicate
]
EDGE_POINTS = [
    point("e1", "2026-03-29T12:00:00Z", " used ", "50"),
    point("e1", "2026-03-29T12:10:00Z", "used", "1e2"),
    point("e1", "2026-03-29T12:00:00Z", "Used"),
    point("e1", "2026-03-29T12:00:00Z", None),
    point("e2", "2026-03-29T12:00:00Z", "standard_earned", "NaN"),
    point("e2", "2026-03-29T12:00:00Z", "limited_earned", "-5"),
    point("e2", "2026-03-29T12:00:00Z", "limited_earned", "5"),
    *[point("e3", "2026-03-29T12:00:00Z", service=None)] * 2,
]
# An extra purchases modality: net cancellations and nested genre prefixes.
NET_DETAIL = {"name": "detail", "source": "purchases", "cancellations": "net", "channels": [
    {"genre": "fashion", "measure": "purchase_amount", "name": "fashion_net"},
    {"genre": "fashion/basics", "measure": "quantity", "name": "basics_quantity"},
    {"genre": "fashion/basics", "measure": "purchase_amount", "name": "basics_net"},
    {"genre": "*", "measure": "cancel_count"}]}


def generated_with_edge_cases(root: Path) -> tuple[PipelineConfig, dt.date]:
    """60 generated users over 5 days, plus the edge cases landed on one of the days.

    Returns the config to encode with: the generator's, with naive times read in Berlin and
    the extra modality.
    """
    overrides = [f"storage.root={root}", "raw.max_reject_ratio=0.5", "window.days=5"]
    generated = load_config(SYNTHETIC_CONFIG, overrides=overrides)
    generate(generated, GeneratorOptions(users=60, bad_row_fraction=0.01, extra_days=1),
             progress=lambda _: None)
    plain = generated.to_dict()
    plain["raw"]["timestamp_timezone"] = "Europe/Berlin"
    plain["modalities"].append(NET_DETAIL)
    config = parse_config(plain)
    landing = config.window.end - dt.timedelta(days=2)
    for source, rows in (("purchases", EDGE_PURCHASES), ("points", EDGE_POINTS)):
        directory = Path(config.storage.uri(f"raw_{source}")) / f"dt={landing}"
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SOURCES[source]),
                       directory / "part-edge.parquet")
    return config, landing


# --------------------------------------------------------------------------- the test


def rejects_of(spark, config: PipelineConfig) -> list[tuple]:
    frame = spark.read.parquet(config.storage.uri("rejects"))
    return sorted(tuple(r) for r in frame.select(
        "dt", "source", "reason", "record", "input_file").collect())


def test_the_engines_give_the_same_cells_rejects_and_accounting(spark, tmp_path):
    config, landing = generated_with_edge_cases(tmp_path / "data")
    ds = config.window.end
    by_spark = parse_config({**config.to_dict(), "raw": {**config.to_dict()["raw"],
                                                          "engine": "spark"}})
    spark_report = encode.run(spark, by_spark, ds, full=True, snapshot=False)
    spark_rows, spark_rejects = spark_cells(spark, config), rejects_of(spark, config)
    arrow_report = encode.run(spark, config, ds, full=True, snapshot=False)
    reference = encode_reference(config, partition_dates(config, ds, full=True))

    assert (spark_report["engine"], arrow_report["engine"]) == ("spark", "arrow")
    assert reference.sources == spark_report["sources"] == arrow_report["sources"]
    assert set(reference.sources["purchases"]["rows_rejected"]) == {
        "null_user_id", "unparseable_timestamp", "out_of_range_timestamp", "negative_value",
        "non_numeric_value", "unknown_status", "unknown_genre", "duplicate_row"}
    read = reference.sources["purchases"]
    assert read["rows_read"] == read["rows_encoded"] + sum(read["rows_rejected"].values())
    rows = reference_cells(reference.cells)
    assert len(rows) > 300
    assert_same_cells(spark_rows, rows)
    assert_same_cells(spark_cells(spark, config), rows)
    assert rejects_of(spark, config) == spark_rejects

    cells = {r[:6]: r[6] for r in rows}
    spring = dt.date(2026, 3, 29)
    assert cells[(landing, "e4", "detail", spring, 14, 0)] == 0.0  # 10 bought, 10 cancelled
    # quantity 'Infinity' is non_numeric_value, as an infinite amount is: no inf cell
    assert (landing, "e2", "detail", spring, 17, 1) not in cells
    assert cells[(landing, "e1", "detail", spring, 3, 0)] == 10.0  # 02:30 CET -> 03:30 CEST


# --------------------------------------------------------------------------- parsing


def test_parsers_follow_spark_quirks():
    """Known answers measured on Spark 4.3 (try_to_timestamp, try_cast to double)."""
    text = pa.array(["2026-03-29T02:30:00", "2026-01-03T10:15:00+0100",
                     "2026-01-03T10:15+01:00", "2026-02-29T00:00:00Z",
                     "2026-01-01T10:00:00+18:01", "2026-01-01T10:00:00-18:00", None])
    utc, parsed = parse_timestamps(text, "Europe/Berlin")
    assert parsed.tolist() == [True, True, False, False, False, True, False]
    assert [str(np.datetime64(int(s), "s")) for s in utc[parsed]] == [
        "2026-03-29T01:30:00", "2026-01-03T09:15:00", "2026-01-02T04:00:00"]
    values, parsed = parse_doubles(pa.array(["1e3d", " 5 ", "INF", "+nan", "-NaN", "12,50"]))
    assert parsed.tolist() == [True, True, True, False, True, False]
    assert values[:3].tolist() == [1000.0, 5.0, np.inf]
