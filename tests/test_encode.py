"""jobs/encode.py: known answers, quarantine with reasons, exact accounting, idempotence."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SYNTHETIC_CONFIG

from common.privacy import PseudonymKeyError
from jobs import encode
from jobs.encoding.snapshot import (
    assemble_snapshot,
    build_snapshot,
    dirty_dates,
    partition_fingerprint,
)
from jobs.encoding.validation import EncodeError, partition_dates
from metaprofile.datasets.synthetic import GeneratorOptions, generate
from schemas.config import parse_config
from schemas.contracts import RAW_SOURCES
from schemas.sparse_text import parse_cells

pytestmark = pytest.mark.spark
KEY = "k" * 32


def config_for(tmp_path, **changes):
    """The synthetic config, with its storage under tmp_path and the given section changes."""
    raw = yaml.safe_load(SYNTHETIC_CONFIG.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    raw["tasks"]["target"] = []  # their label periods follow the default window end
    raw["storage"] = {"root": str(tmp_path / "data")}
    return parse_config(raw, base_dir=tmp_path)


def purchase(user, time, genre="fashion/basics", amount="10", quantity="1", status="purchase"):
    return {"user_id": user, "event_time": time, "genre": genre, "amount": amount,
            "quantity": quantity, "status": status}


def point(user, time, point_type="used", points="100", service="market"):
    return {"user_id": user, "event_time": time, "point_type": point_type, "points": points,
            "service": service}


def write_raw(config, source: str, day: str, rows: list[dict], part: int = 0) -> None:
    directory = Path(config.storage.uri(f"raw_{source}")) / f"dt={day}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SOURCES[source]),
                   directory / f"part-{part:05d}.parquet")


def events_of(spark, config):
    frame = spark.read.parquet(config.storage.uri("events"))
    return sorted(tuple(r) for r in frame.select("user_id", "modality", "date", "hour",
                                                 "channel", "value").collect())


def snapshot_of(spark, config, ds):
    frame = spark.read.parquet(f"{config.storage.uri('snapshots')}/ds={ds}")
    return {(r["user_id"], r["modality"]): r.asDict() for r in frame.collect()}


def manifest(config, key: str, day: str) -> dict:
    return json.loads((Path(config.storage.uri(key)) / f"dt={day}" / "_manifest.json")
                      .read_text())


# --------------------------------------------------------------------------- known answers


def test_paper_example_section_3_1(spark, tmp_path):
    """'2, 10, 28: 5000; 100, 20, 25: 6000' with 30 genre channels and a UTC window."""
    channels = [{"genre": f"g{i:02d}", "measure": "purchase_amount"} for i in range(30)]
    config = config_for(tmp_path, window__timezone="UTC", window__end="2026-04-30",
                        window__days=120,
                        modalities=[{"name": "purchases", "source": "purchases",
                                     "channels": channels},
                                    {"name": "points", "source": "points",
                                     "channels": [{"point_type": "used", "measure": "points"}]}])
    write_raw(config, "purchases", "2026-01-03",
              [purchase("u1", "2026-01-03T10:15:00Z", "g28/item", "5000")])
    write_raw(config, "purchases", "2026-04-11",
              [purchase("u1", "2026-04-11T20:59:59Z", "g25/item", "6000")])
    write_raw(config, "points", "2026-01-03", [point("u2", "2026-01-03T00:00:00Z")])
    report = encode.run(spark, config, dt.date(2026, 4, 30), full=True)
    row = snapshot_of(spark, config, "2026-04-30")[("u1", "purchases")]
    assert row["text"] == "2,10,28:5000;100,20,25:6000"
    assert (row["day"], row["hour"], row["channel"], row["value"]) == \
        ([2, 100], [10, 20], [28, 25], [5000.0, 6000.0])
    assert [tuple(c) for c in parse_cells(row["text"])] == [(2, 10, 28, 5000.0),
                                                            (100, 20, 25, 6000.0)]
    assert report["sources"]["purchases"] == {"rows_read": 2, "rows_encoded": 2,
                                              "rows_rejected": {}}
    assert report["snapshot"]["modalities"]["purchases"] == {"users": 1, "cells": 2}


def test_daylight_saving_changes_window_edges_and_outside_events(spark, tmp_path):
    """Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET."""
    spring = config_for(tmp_path / "spring", window__end="2026-03-30", window__days=2)
    write_raw(spring, "purchases", "2026-03-28", [
        purchase("u1", "2026-03-28T22:59:59Z", amount="1"),   # 23:59 local on 03-28: outside
        purchase("u1", "2026-03-28T23:00:00Z", amount="2"),   # 00:00 local on 03-29: day 0
    ])
    write_raw(spring, "purchases", "2026-03-29", [
        purchase("u1", "2026-03-29T00:30:00Z", amount="4"),   # 01:30 CET
        purchase("u1", "2026-03-29T01:30:00Z", amount="8"),   # 03:30 CEST (02:xx is skipped)
    ])
    write_raw(spring, "points", "2026-03-29", [point("u1", "2026-03-29T12:00:00+02:00")])
    encode.run(spark, spring, dt.date(2026, 3, 30), full=True)
    fashion = spring.modality("purchases").channel_index("fashion_purchase_amount")
    cells = [(str(d), h, v) for _, m, d, h, c, v in events_of(spark, spring)
             if m == "purchases" and c == fashion]
    assert cells == [("2026-03-28", 23, 1.0), ("2026-03-29", 0, 2.0), ("2026-03-29", 1, 4.0),
                     ("2026-03-29", 3, 8.0)]
    row = snapshot_of(spark, spring, "2026-03-30")[("u1", "purchases")]
    assert [(c.day, c.hour, c.value) for c in parse_cells(row["text"]) if c.channel == fashion] \
        == [(0, 0, 2.0), (0, 1, 4.0), (0, 3, 8.0)]
    points = snapshot_of(spark, spring, "2026-03-30")[("u1", "points")]
    assert points["text"] == "0,12,2:100;0,12,3:1"  # used points, and the used count

    autumn = config_for(tmp_path / "autumn", window__end="2026-10-25", window__days=1)
    write_raw(autumn, "purchases", "2026-10-25", [
        purchase("u1", "2026-10-25T00:30:00Z", amount="16"),  # 02:30 CEST, first pass
        purchase("u1", "2026-10-25T01:30:00Z", amount="32"),  # 02:30 CET, second pass
        purchase("u1", "2026-10-25T22:59:59Z", amount="64"),  # 23:59 local: last window day
        purchase("u1", "2026-10-25T23:00:00Z", amount="128"),  # 00:00 local 10-26: outside
    ])
    write_raw(autumn, "points", "2026-10-25", [point("u2", "2026-10-25T10:00:00Z")])
    encode.run(spark, autumn, dt.date(2026, 10, 25))
    cells = [(str(d), h, v) for _, m, d, h, c, v in events_of(spark, autumn)
             if m == "purchases" and c == fashion]
    assert cells == [("2026-10-25", 2, 48.0), ("2026-10-25", 23, 64.0), ("2026-10-26", 0, 128.0)]
    row = snapshot_of(spark, autumn, "2026-10-25")[("u1", "purchases")]
    assert [(c.day, c.hour, c.value) for c in parse_cells(row["text"]) if c.channel == fashion] \
        == [(0, 2, 48.0), (0, 23, 64.0)]


def test_duplicates_and_cancellations(spark, tmp_path):
    config = config_for(tmp_path, window__end="2026-06-30", window__days=10,
                        raw__max_reject_ratio=0.6)
    rows = [purchase("u1", "2026-06-30T08:00:00Z", "beauty/lip", "30", "2"),
            purchase("u1", "2026-06-30T08:00:00Z", "beauty/lip", "30", "2"),  # duplicate
            purchase("u1", "2026-06-30T08:00:00Z", "beauty/lip", "30", "2"),  # duplicate
            purchase("u1", "2026-06-30T09:00:00Z", "beauty/lip", "30", "2", "cancel")]
    write_raw(config, "purchases", "2026-06-30", rows)
    write_raw(config, "purchases", "2026-06-30", rows[:1], part=1)  # a re-delivered copy
    write_raw(config, "points", "2026-06-30", [point("u1", "2026-06-30T08:00:00Z")])
    report = encode.run(spark, config, dt.date(2026, 6, 30))
    assert report["sources"]["purchases"] == {
        "rows_read": 5, "rows_encoded": 2, "rows_rejected": {"duplicate_row": 3}}
    purchases = config.modality("purchases")
    beauty, count, cancel = (purchases.channel_index(n) for n in (
        "beauty_purchase_amount", "all_purchase_count", "all_cancel_amount"))
    cells = {(h, c): v for _, m, _, h, c, v in events_of(spark, config) if m == "purchases"}
    # Local hours are CEST (UTC+2). Separate mode: the cancel feeds only the cancel channel.
    assert cells == {(10, beauty): 30.0, (10, count): 1.0, (11, cancel): 30.0}
    rejects = spark.read.parquet(config.storage.uri("rejects")).collect()
    assert [(r["reason"], json.loads(r["record"]), r["input_file"]) for r in rejects] == \
        [("duplicate_row", rows[0], None)] * 3

    net = config_for(tmp_path / "net", window__end="2026-06-30", window__days=10,
                     raw__max_reject_ratio=0.6)
    net = parse_config({**net.to_dict(), "modalities": [
        {**m, "cancellations": "net"} if m["source"] == "purchases" else m
        for m in net.to_dict()["modalities"]]}, base_dir=tmp_path)
    write_raw(net, "purchases", "2026-06-30", rows)
    write_raw(net, "points", "2026-06-30", [point("u1", "2026-06-30T08:00:00Z")])
    encode.run(spark, net, dt.date(2026, 6, 30))
    cells = {(h, c): v for _, m, _, h, c, v in events_of(spark, net) if m == "purchases"}
    assert cells[(10, beauty)] == 30.0 and cells[(11, beauty)] == -30.0


# --------------------------------------------------------------------------- quarantine


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_generated_bad_row_class_is_quarantined_with_its_reason(spark, tmp_path, fmt):
    config = config_for(tmp_path, window__days=6, raw__format=fmt, raw__max_reject_ratio=0.5)
    generated = generate(config, GeneratorOptions(users=80, format=fmt, bad_row_fraction=0.01),
                         progress=lambda _: None)
    report = encode.run(spark, config, config.window.end, full=True)
    for source, counts in generated["sources"].items():
        got = report["sources"][source]
        assert got["rows_rejected"] == {k: v for k, v in counts["bad_rows"].items() if v}
        assert got["rows_read"] == counts["rows_written"]
        assert got["rows_encoded"] == counts["clean_rows"]
    rejects = spark.read.parquet(config.storage.uri("rejects"))
    assert rejects.count() == sum(sum(s["rows_rejected"].values())
                                  for s in report["sources"].values())
    null_ids = rejects.where("reason = 'null_user_id' and source = 'purchases'").first()
    assert json.loads(null_ids["record"])["user_id"] is None
    assert null_ids["input_file"].endswith(f".{fmt}")


def test_too_many_rejects_fail_the_run_naming_the_reason(spark, tmp_path):
    config = config_for(tmp_path, window__end="2026-06-30", window__days=5)
    write_raw(config, "purchases", "2026-06-30",
              [purchase("u1", "2026-06-30T08:00:00Z", amount="abc")] * 3
              + [purchase(None, "2026-06-30T08:00:00Z")]
              + [purchase("u2", "2026-06-30T08:00:00Z")] * 1)
    write_raw(config, "points", "2026-06-30", [point("u1", "2026-06-30T08:00:00Z")])
    with pytest.raises(EncodeError, match=r"purchases: 4 of 5 rows rejected .* most are "
                                                 r"non_numeric_value \(3\)"):
        encode.run(spark, config, dt.date(2026, 6, 30))
    assert not Path(config.storage.uri("events"), "dt=2026-06-30").exists()
    assert Path(config.storage.uri("rejects"), "dt=2026-06-30", "_SUCCESS").exists()


TYPED_PURCHASES = pa.schema([("user_id", pa.int64()), ("event_time", pa.timestamp("us", "UTC")),
                             ("genre", pa.string()), ("amount", pa.float64()),
                             ("quantity", pa.int32()), ("status", pa.string())])


@pytest.mark.slow
def test_typed_parquet_encodes_like_text_with_the_same_quarantine(spark, tmp_path):
    """A retailer's typed Parquet (int ids, a zoned timestamp, a double amount, an int
    quantity; a second file with a zoneless timestamp) lands the same events and rejects as
    the same rows written as text, beside a file of text rows in the same partition."""
    at = dt.datetime(2026, 6, 30, 8, tzinfo=dt.timezone.utc)
    typed = [(1, at, "beauty/lip", 30.5, 2, "purchase"),
             (2, at, "fashion/basics", float("nan"), 1, "purchase"),  # non_numeric_value
             (3, at, "fashion/basics", -5.0, 1, "purchase"),  # negative_value
             (None, at, "fashion/basics", 10.0, 1, "purchase"),  # null_user_id
             (4, dt.datetime(1999, 1, 1, tzinfo=dt.timezone.utc), "fashion/basics", 1.0, 1,
              "purchase"),  # out_of_range_timestamp
             (5, None, "fashion/basics", 1.0, 1, "purchase"),  # unparseable_timestamp
             (7, at, "fashion/basics", 1e20, None, "cancel")]  # value_too_large
    as_text = [purchase(None if u is None else str(u),
                        None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ"), g,
                        "NaN" if a != a else repr(a), None if q is None else str(q), st)
               for u, t, g, a, q, st in typed]
    naive = pa.table({"user_id": [6], "event_time": pa.array([dt.datetime(2026, 6, 30, 9)],
                                                            pa.timestamp("ms")),
                      "amount": pa.array([12], pa.int64()), "genre": ["beauty/lip"],
                      "status": ["purchase"]})  # no quantity column: 1, as an empty one
    text_rows = [purchase("u9", "2026-06-30T10:00:00Z")]
    reports, events = {}, {}
    for kind in ("typed", "text"):
        config = config_for(tmp_path / kind, window__end="2026-06-30", window__days=10,
                            raw__max_reject_ratio=0.9)
        write_raw(config, "purchases", "2026-06-30", text_rows)
        folder = Path(config.storage.uri("raw_purchases")) / "dt=2026-06-30"
        if kind == "typed":
            columns = list(zip(*typed))
            pq.write_table(pa.table([pa.array(c, f.type) for c, f in zip(columns, TYPED_PURCHASES)],
                                    schema=TYPED_PURCHASES), folder / "part-00001.parquet")
            pq.write_table(naive, folder / "part-00002.parquet")
        else:
            write_raw(config, "purchases", "2026-06-30", as_text, part=1)
            write_raw(config, "purchases", "2026-06-30",
                      [purchase("6", "2026-06-30T09:00:00", "beauty/lip", "12", None)], part=2)
        write_raw(config, "points", "2026-06-30", [point("u1", "2026-06-30T08:00:00Z")])
        reports[kind] = encode.run(spark, config, dt.date(2026, 6, 30))
        events[kind] = events_of(spark, config)
    assert reports["typed"]["sources"] == reports["text"]["sources"]
    assert reports["typed"]["sources"]["purchases"] == {
        "rows_read": 9, "rows_encoded": 3, "rows_rejected": {
            "non_numeric_value": 1, "negative_value": 1, "null_user_id": 1,
            "out_of_range_timestamp": 1, "unparseable_timestamp": 1, "value_too_large": 1}}
    assert events["typed"] == events["text"]
    beauty = config.modality("purchases").channel_index("beauty_purchase_amount")
    cells = {(u, h, c): v for u, m, _, h, c, v in events["typed"] if m == "purchases"}
    assert cells[("1", 10, beauty)] == 30.5 and cells[("6", 11, beauty)] == 12.0  # CEST


def test_a_column_of_an_unusable_type_fails_before_spark_naming_file_and_types(spark, tmp_path):
    config = config_for(tmp_path, window__end="2026-06-30", window__days=5)
    folder = Path(config.storage.uri("raw_purchases")) / "dt=2026-06-30"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u1"], "event_time": ["2026-06-30T08:00:00Z"],
                             "genre": ["beauty/lip"], "amount": [True], "quantity": ["1"],
                             "status": ["purchase"]}), folder / "part-00000.parquet")
    pq.write_table(pa.table({"user_id": ["u1"], "event_time": pa.array(
        [dt.datetime(2026, 6, 30, 8)], pa.timestamp("ns", "UTC")), "point_type": ["used"],
        "points": ["1"], "service": ["market"]}),
        Path(config.storage.uri("raw_points")) / "dt=2026-06-30" / "p.parquet"
        if (Path(config.storage.uri("raw_points")) / "dt=2026-06-30").mkdir(parents=True)
        is None else None)
    with pytest.raises(EncodeError) as raised:
        encode.run(spark, config, dt.date(2026, 6, 30))
    message = str(raised.value)
    assert (f"raw purchases: {folder / 'part-00000.parquet'}: column 'amount' has type bool; "
            "expected string or integer or floating or decimal") in message
    assert "column 'event_time' has type timestamp[ns, tz=UTC]" in message
    assert "coerce_timestamps='us'" in message
    assert not Path(config.storage.uri("rejects")).exists()  # stopped before any Spark work


@pytest.mark.slow
def test_date_only_event_times_land_at_the_configured_hour_with_day_precision(spark, tmp_path):
    """A daily export: '2026-06-30' (text) or a Parquet date is that date at raw.day_hour in
    raw.timestamp_timezone; without raw.event_time_precision: day it is unparseable."""
    rows = [purchase("u1", "2026-06-30"), purchase("u2", "2026-06-30T08:00:00Z"),
            purchase("u3", "2026-06-31")]  # not a date
    typed = pa.table({"user_id": ["u4"], "event_time": pa.array([dt.date(2026, 6, 29)]),
                      "genre": ["fashion/basics"], "amount": ["10"], "quantity": ["1"],
                      "status": ["purchase"]})
    results = {}
    for precision in ("day", "second"):
        config = config_for(tmp_path / precision, window__end="2026-06-30", window__days=5,
                            window__timezone="Europe/Berlin", raw__max_reject_ratio=0.9,
                            raw__event_time_precision=precision, raw__day_hour=9,
                            raw__timestamp_timezone="Europe/Berlin")
        write_raw(config, "purchases", "2026-06-30", rows)
        pq.write_table(typed, Path(config.storage.uri("raw_purchases")) / "dt=2026-06-30"
                       / "part-00001.parquet")
        write_raw(config, "points", "2026-06-30", [point("u1", "2026-06-30T08:00:00Z")])
        results[precision] = encode.run(spark, config, dt.date(2026, 6, 30))["sources"]
        if precision == "day":
            hours = {(u, str(d), h) for u, m, d, h, _, _ in events_of(spark, config)
                     if m == "purchases"}
            assert hours == {("u1", "2026-06-30", 9), ("u2", "2026-06-30", 10),
                             ("u4", "2026-06-29", 9)}
    assert results["day"]["purchases"]["rows_rejected"] == {"unparseable_timestamp": 1}
    assert results["second"]["purchases"]["rows_rejected"] == {"unparseable_timestamp": 3}


@pytest.mark.slow
def test_missing_landing_partitions_are_counted_and_can_fail_the_run(spark, tmp_path, caplog):
    days = ["2026-06-26", "2026-06-27", "2026-06-29", "2026-06-30"]  # 06-28 never landed
    for policy in ("warn", "fail"):
        config = config_for(tmp_path / policy, window__end="2026-06-30", window__days=5,
                            raw__missing_partitions=policy)
        for day in days:
            write_raw(config, "purchases", day, [purchase("u1", f"{day}T08:00:00Z")])
        write_raw(config, "points", "2026-06-30", [point("u1", "2026-06-30T08:00:00Z")])
        if policy == "fail":
            with pytest.raises(EncodeError, match=re.escape(
                    "purchases: 1 landing partition(s) of the window missing (2026-06-28); "
                    "points: 4 landing partition(s) of the window missing (2026-06-26, "
                    "2026-06-27, 2026-06-28, 2026-06-29)")):
                encode.run(spark, config, dt.date(2026, 6, 30), full=True)
            assert not Path(config.storage.uri("events")).exists()
            continue
        with caplog.at_level("WARNING", logger="metaprofile.encode"):
            report = encode.run(spark, config, dt.date(2026, 6, 30), full=True)
        assert report["missing_landing_partitions"]["purchases"] == {
            "count": 1, "dates": ["2026-06-28"]}
        assert report["missing_landing_partitions"]["points"]["count"] == 4
        assert any("missing (2026-06-28)" in r.getMessage() for r in caplog.records)
        # A full run writes an event partition for every date; its manifest names the gaps.
        assert manifest(config, "events", "2026-06-28")["missing_sources"] == [
            "purchases", "points"]
        assert manifest(config, "events", "2026-06-30")["missing_sources"] == []
        assert report["snapshot"]["missing_event_partitions"] == {"count": 0, "dates": []}

    # Daily runs: a date whose run never happened has no event partition; the snapshot counts it.
    config = config_for(tmp_path / "daily", window__end="2026-06-30", window__days=5)
    for day in ("2026-06-29", "2026-06-30"):
        write_raw(config, "purchases", day, [purchase("u1", f"{day}T08:00:00Z")])
        write_raw(config, "points", day, [point("u1", f"{day}T08:00:00Z")])
    encode.run(spark, config, dt.date(2026, 6, 29), snapshot=False)
    report = encode.run(spark, config, dt.date(2026, 6, 30))
    assert report["snapshot"]["missing_event_partitions"] == {
        "count": 3, "dates": ["2026-06-26", "2026-06-27", "2026-06-28"]}
    snapshot = json.loads((Path(config.storage.uri("snapshots")) / "ds=2026-06-30"
                           / "_manifest.json").read_text())
    assert snapshot["missing_event_partitions"]["count"] == 3


# --------------------------------------------------------------------------- incremental


@pytest.mark.slow
def test_full_year_equals_day_by_day_and_reruns_are_idempotent(spark, tmp_path):
    full = config_for(tmp_path / "full", window__days=8, raw__max_reject_ratio=1.0)
    daily = config_for(tmp_path / "daily", window__days=8, raw__max_reject_ratio=1.0)
    options = GeneratorOptions(users=40, bad_row_fraction=0.01, extra_days=1)
    generate(full, options, progress=lambda _: None)
    generate(daily, options, progress=lambda _: None)
    ds = full.window.end
    encode.run(spark, full, ds, full=True)
    for day in partition_dates(daily, ds, full=True):
        if Path(daily.storage.uri("raw_purchases"), f"dt={day}").exists():
            encode.run(spark, daily, day, snapshot=False)
    build_snapshot(spark, daily, ds)
    assert events_of(spark, full) == events_of(spark, daily)
    assert snapshot_of(spark, full, ds) == snapshot_of(spark, daily, ds)

    before = sorted(p.name for p in Path(daily.storage.uri("events")).iterdir())
    first = manifest(daily, "events", str(ds))
    encode.run(spark, daily, ds)  # rerun the last day
    assert sorted(p.name for p in Path(daily.storage.uri("events")).iterdir()) == before
    assert manifest(daily, "events", str(ds)) == first
    assert events_of(spark, full) == events_of(spark, daily)
    assert snapshot_of(spark, full, ds) == snapshot_of(spark, daily, ds)
    leftovers = [p for p in Path(daily.storage.root).rglob(".staging-*")]
    assert leftovers == []


def full_assembly(spark, config, ds):
    """The snapshot at ``ds`` assembled from every daily partition, without publishing it."""
    events = spark.read.parquet(config.storage.uri("events"))
    return {(r["user_id"], r["modality"]): r.asDict()
            for r in assemble_snapshot(events, config, ds).collect()}


def snapshot_manifest(config, ds) -> dict:
    return json.loads((Path(config.storage.uri("snapshots")) / f"ds={ds}" / "_manifest.json")
                      .read_text())


@pytest.mark.slow
def test_nightly_snapshots_update_the_previous_one_and_equal_a_full_assembly(spark, tmp_path):
    config = config_for(tmp_path, window__days=6, raw__max_reject_ratio=1.0)
    days = [dt.date(2026, 4, 1) + dt.timedelta(days=i) for i in range(8)]
    for i, day in enumerate(days):
        rows = [purchase("u1", f"{day}T10:00:00Z", amount=str(i + 1)),
                # 23:30 UTC is 01:30 the next local day (Berlin, UTC+2): lands a day early
                purchase(f"late{i % 3}", f"{day}T23:30:00Z", amount="7")]
        if day == dt.date(2026, 4, 1):
            rows.append(purchase("gone", f"{day}T09:00:00Z"))  # leaves the window on 04-07
        write_raw(config, "purchases", str(day), rows)
        write_raw(config, "points", str(day), [point(f"p{i}", f"{day}T12:00:00Z")])
    modes = []
    for day in days:
        report = encode.run(spark, config, day)
        modes.append(report["snapshot"]["assembly"]["mode"])
        assert snapshot_of(spark, config, str(day)) == full_assembly(spark, config, day), day
    assert modes == ["full"] + ["incremental"] * 7
    last = snapshot_manifest(config, "2026-04-08")["assembly"]
    # the day before also had partition dt=04-08 as a neighbour, which did not exist yet
    assert last == {"mode": "incremental", "engine": "arrow", "base_ds": "2026-04-07",
                    "dates_rederived": ["2026-04-07", "2026-04-08"],
                    "event_partitions_read": 3}  # dt=04-06 .. 04-08
    users = {user for user, _ in snapshot_of(spark, config, "2026-04-08")}
    assert "gone" not in users and {"u1", "late0", "p7"} <= users

    # A past landing date is re-encoded with a new user: its date and both neighbours are
    # re-derived (its rows may fall on either local date), the rest comes from the base.
    write_raw(config, "purchases", "2026-04-05",
              [purchase("u1", "2026-04-05T10:00:00Z", amount="50"),
               purchase("newcomer", "2026-04-04T23:30:00Z", amount="3")])
    encode.run(spark, config, dt.date(2026, 4, 5), snapshot=False)
    report = build_snapshot(spark, config, dt.date(2026, 4, 8))
    assert report["assembly"]["base_ds"] == "2026-04-08"
    assert report["assembly"]["dates_rederived"] == ["2026-04-04", "2026-04-05", "2026-04-06"]
    snapshot = snapshot_of(spark, config, "2026-04-08")
    assert snapshot == full_assembly(spark, config, dt.date(2026, 4, 8))
    # day 2 = 04-05 in the window from 04-03; channel 10 counts the purchases
    assert snapshot[("newcomer", "purchases")]["text"] == "2,1,0:3;2,1,10:1"
    assert "2,12,0:50;2,12,10:1" in snapshot[("u1", "purchases")]["text"]

    # --full-snapshot reads every partition and gives the same rows.
    report = build_snapshot(spark, config, dt.date(2026, 4, 8), incremental=False)
    assert report["assembly"] == {"mode": "full", "event_partitions_read": 7}  # dt=04-02 ..
    assert snapshot_manifest(config, "2026-04-08")["assembly"]["mode"] == "full"
    assert snapshot_of(spark, config, "2026-04-08") == snapshot


def test_dirty_dates_are_the_uncovered_dates_and_the_neighbours_of_changed_partitions():
    base = {"ds": "2026-04-07", "window_start": "2026-04-02",
            "event_fingerprints": {f"2026-04-0{i}": f"f{i}" for i in range(1, 9)}}
    same = dict(base["event_fingerprints"])
    day = dt.date.fromisoformat
    assert dirty_dates(day("2026-04-07"), 6, same, base) == []
    # one day later: the new date is uncovered; a rewritten dt=04-08 touches 04-07 and 04-08
    assert dirty_dates(day("2026-04-08"), 6, {**same, "2026-04-08": "new"}, base) == \
        [day("2026-04-07"), day("2026-04-08")]
    # a partition that disappeared counts as changed, as one that appeared does
    gone = {k: v for k, v in same.items() if k != "2026-04-04"}
    assert dirty_dates(day("2026-04-07"), 6, gone, base) == \
        [day("2026-04-03"), day("2026-04-04"), day("2026-04-05")]
    # a longer window than the base's: the dates before the base window are uncovered
    assert dirty_dates(day("2026-04-07"), 7, same, base) == [day("2026-04-01")]


def test_partition_fingerprint_ignores_markers_and_sees_rewrites():
    files = [("part-0-aaa.parquet", 10), ("_SUCCESS", 0), ("_manifest.json", 99)]
    assert partition_fingerprint(files) == \
        partition_fingerprint([("part-0-aaa.parquet", 10)])
    assert partition_fingerprint(files) != \
        partition_fingerprint([("part-0-bbb.parquet", 10)])
    assert partition_fingerprint(files) != \
        partition_fingerprint([("part-0-aaa.parquet", 11)])


# --------------------------------------------------------------------------- pseudonyms


def test_pseudonymisation_is_keyed_consistent_and_never_leaks_the_key(spark, tmp_path,
                                                                     monkeypatch, capsys):
    config = config_for(tmp_path, window__end="2026-06-30", window__days=5,
                        pseudonymisation__enabled=True)
    write_raw(config, "purchases", "2026-06-30", [purchase("u1", "2026-06-30T08:00:00Z")])
    write_raw(config, "points", "2026-06-30", [point("u1", "2026-06-30T09:00:00Z")])
    monkeypatch.delenv("METAPROFILE_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymKeyError, match="METAPROFILE_PSEUDONYM_KEY"):
        encode.run(spark, config, dt.date(2026, 6, 30))
    monkeypatch.setenv("METAPROFILE_PSEUDONYM_KEY", KEY)
    encode.run(spark, config, dt.date(2026, 6, 30))
    expected = hmac.new(KEY.encode(), b"u1", hashlib.sha256).hexdigest()[:32]
    users = {(u, m) for u, m, *_ in events_of(spark, config)}
    assert users == {(expected, "purchases"), (expected, "points")}
    assert set(snapshot_of(spark, config, "2026-06-30")) == users
    for path in Path(config.storage.root).rglob("*"):
        if path.is_file() and "rejects" not in path.parts and "raw_" not in str(path):
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in capsys.readouterr().err
