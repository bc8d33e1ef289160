"""The raw contracts drive Spark's readers: every generated row arrives, in every format."""
from __future__ import annotations

import pytest
from conftest import SYNTHETIC_CONFIG

from metaprofile.datasets.synthetic import GeneratorOptions, generate
from schemas.config import load_config
from schemas.contracts import RAW_SOURCES, spark_ddl

pytestmark = pytest.mark.spark
CORRUPT = "_corrupt_record"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_spark_reads_raw_logs_with_the_contract(spark, tmp_path, fmt):
    config = load_config(SYNTHETIC_CONFIG, overrides=[f"storage.root={tmp_path}",
                                                      "window.days=20"])
    report = generate(config, GeneratorOptions(users=60, format=fmt, bad_row_fraction=0.02),
                      progress=lambda _: None)
    for source, schema in RAW_SOURCES.items():
        ddl = spark_ddl(schema)
        path = config.storage.uri(f"raw_{source}")
        if fmt == "parquet":
            frame = spark.read.schema(ddl).parquet(path)
        else:
            reader = spark.read.schema(f"{ddl}, `{CORRUPT}` STRING").option(
                "mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
            frame = (reader.option("header", "true").option("enforceSchema", "false").csv(path)
                     if fmt == "csv" else reader.json(path))
        counts = report["sources"][source]
        assert frame.count() == counts["rows_written"]
        assert frame.select("dt").distinct().count() == 20  # landing partitions discovered
        assert frame.schema.fieldNames()[:len(schema)] == schema.names
        if fmt != "parquet":
            broken = frame.filter(frame[CORRUPT].isNotNull()).cache()
            assert broken.count() == counts["bad_rows"]["malformed_line"] > 0
