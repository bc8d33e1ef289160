"""jobs/encoding/snapshot_arrow.py: the snapshot update in Arrow gives the Spark update's rows,
arrays and text exactly; values whose text only Spark prints send the update to Spark."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_encode import config_for, purchase, snapshot_of, write_raw

from jobs import encode
from jobs.encoding import snapshot_arrow
from jobs.encoding.snapshot import update_snapshot
from jobs.typed_read import data_files
from metaprofile.datasets.synthetic import GeneratorOptions, generate
from schemas.contracts import SNAPSHOT, SPARSE_EVENTS, spark_ddl

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """80 synthetic users over a 10-day window, encoded with the full snapshot at ds; the
    generator lands 3 more days, encoded without a snapshot."""
    root = tmp_path_factory.mktemp("snapshot-arrow")
    config = config_for(root, window__days=10, raw__max_reject_ratio=1.0)
    generate(config, GeneratorOptions(users=80, extra_days=3), progress=lambda _: None)
    ds = config.window.end
    encode.run(spark, config, ds, full=True)
    for k in (1, 2, 3):
        encode.run(spark, config, ds + dt.timedelta(days=k), snapshot=False)
    return config, ds


def rows(table_rows) -> list[tuple]:
    return sorted((r["user_id"], r["modality"], tuple(r["day"]), tuple(r["hour"]),
                   tuple(r["channel"]), tuple(r["value"]), r["text"]) for r in table_rows)


def both_updates(spark, config, base_ds: dt.date, ds: dt.date, redo: list[dt.date],
                 folder: Path) -> tuple[list, list]:
    """The Spark update and the Arrow update of the snapshot at ``base_ds`` to ``ds``."""
    events_uri = config.storage.uri("events")
    needed = sorted({d + dt.timedelta(days=k) for d in redo for k in (-1, 0, 1)})
    partitions = [f"{events_uri}/dt={d}" for d in needed if Path(events_uri, f"dt={d}").is_dir()]
    base_uri = f"{config.storage.uri('snapshots')}/ds={base_ds}"
    base_start = config.window.start(base_ds)
    events = spark.read.schema(spark_ddl(SPARSE_EVENTS)).option("basePath", events_uri) \
        .parquet(*partitions)
    by_spark = update_snapshot(spark.read.schema(spark_ddl(SNAPSHOT)).parquet(base_uri),
                               base_start, events, config, ds, redo, broadcast=True).collect()
    update = snapshot_arrow.Update(base_start=base_start, start=config.window.start(ds),
                                   window_days=config.window.days, redo=redo)
    summary = snapshot_arrow.write_update(
        data_files(base_uri), [f for p in partitions for f in data_files(p)], update,
        str(folder))
    by_arrow = pq.read_table(folder).to_pylist()
    assert summary == {m: {"users": sum(r["modality"] == m for r in by_arrow),
                           "cells": sum(len(r["day"]) for r in by_arrow if r["modality"] == m)}
                       for m in {r["modality"] for r in by_arrow}}
    return rows(by_spark), rows(by_arrow)


def test_the_nightly_update_equals_spark_s(spark, world, tmp_path):
    config, ds = world
    nightly = ds + dt.timedelta(days=1)
    by_spark, by_arrow = both_updates(spark, config, ds, nightly, [ds, nightly], tmp_path)
    assert by_arrow == by_spark
    assert len(by_spark) > 100
    # The world has fractional amounts and users that leave or join the window.
    assert any("." in r[-1] for r in by_spark)


def test_an_update_two_days_on_with_dates_in_the_middle_equals_spark_s(spark, world, tmp_path):
    """Re-derived days before carried ones: the merge sorts each row's cells."""
    config, ds = world
    later = ds + dt.timedelta(days=2)
    redo = [ds - dt.timedelta(days=4), ds - dt.timedelta(days=3), ds + dt.timedelta(days=1),
            later]
    by_spark, by_arrow = both_updates(spark, config, ds, later, redo, tmp_path)
    assert by_arrow == by_spark


def test_value_texts_are_spark_s_float_to_string(spark):
    from pyspark.sql import functions as F

    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.uniform(0, 1000, 300), np.round(rng.uniform(0, 500, 300), 2),
        10.0 ** rng.uniform(-9, 14.9, 300), rng.uniform(0, 1e-3, 50),
        [0.0, 1.0, 0.1, 0.001, 0.0009999, 1e7 - 0.5, 9_999_999.0, 1e7, 123456.78, 5000.0,
         float("inf"), float("nan")]]).astype(np.float32)
    frame = spark.createDataFrame([(float(v),) for v in values], "v FLOAT")
    whole = (F.abs("v") < 1e15) & (F.col("v") == F.round("v"))
    expected = [r[0] for r in frame.select(
        F.when(whole, F.col("v").cast("bigint").cast("string"))
        .otherwise(F.col("v").cast("string"))).collect()]
    assert snapshot_arrow.value_texts(values).to_pylist() == expected


def test_a_value_of_1e15_or_more_is_updated_by_spark(spark, tmp_path):
    """Java 17 prints such floats with more digits than the shortest: Spark does those."""
    with pytest.raises(snapshot_arrow.NeedsSpark):
        snapshot_arrow.value_texts(np.array([12.5, 2e15], dtype=np.float32))
    config = config_for(tmp_path, window__days=4, raw__max_reject_ratio=1.0)
    first, second = dt.date(2026, 4, 1), dt.date(2026, 4, 2)
    write_raw(config, "purchases", str(first), [purchase("u1", f"{first}T10:00:00Z")])
    # Two purchases of the largest accepted amount in one hour: one cell of 2e15.
    write_raw(config, "purchases", str(second),
              [purchase("u1", f"{second}T10:00:00Z", amount="1e15"),
               purchase("u1", f"{second}T10:30:00Z", amount="1e15")])
    for day in (first, second):
        write_raw(config, "points", str(day), [])
    encode.run(spark, config, first)
    report = encode.run(spark, config, second)
    assert report["snapshot"]["assembly"]["engine"] == "spark"
    cells = snapshot_of(spark, config, str(second))[("u1", "purchases")]
    assert pytest.approx(2e15) in cells["value"]
