"""One way to get a SparkSession, so every job and test sees the same settings.

The session keeps its scratch space (SPARK_LOCAL_DIRS, set by configure_environment) and
warehouse inside the project's work directory,
computes in UTC (jobs convert to the configured local zone explicitly), and leaves the
master to ``--master`` / ``spark-submit`` / ``local[*]``, in that order.
"""
from __future__ import annotations

import os

from common.workdir import configure_environment


def build_session(app_name: str, master: str | None = None,
                  conf: dict[str, str] | None = None):
    """Create (or reuse) the SparkSession for a job."""
    work = configure_environment()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    elif not _submitted():
        builder = builder.master("local[*]")
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.warehouse.dir": str(work / "spark-warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work / 'derby'}",
        "spark.sql.shuffle.partitions": os.environ.get("METAPROFILE_SHUFFLE_PARTITIONS", "8"),
        "spark.ui.showConsoleProgress": "false",
        # Jobs pass one path per daily partition; listing a year of them with a Spark job
        # (the default above 32 paths) costs more than listing them on the driver.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
    }
    if not _submitted():
        # Only a session that starts its own JVM can size the driver; under spark-submit
        # use --driver-memory.
        settings["spark.driver.memory"] = os.environ.get("METAPROFILE_DRIVER_MEMORY", "4g")
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(os.environ.get("METAPROFILE_SPARK_LOG_LEVEL", "WARN"))
    return session


def session_of(spark):
    """``spark``, a session or a function that starts one on first use (a job's
    ``lambda: job.spark``), as a session: the way a stage that may not need Spark at all
    takes its session."""
    return spark() if callable(spark) else spark


def publisher_for(spark, config):
    """A run's :class:`common.publish.Publisher`: where every dataset of ``config`` is on
    local storage it needs no session (``spark`` is not started); otherwise non-local URIs go
    through the session's Hadoop filesystem."""
    from common import storage
    from common.publish import Publisher

    local = all(storage.is_local(uri) for uri in config.storage.paths.values())
    return Publisher(None if local else session_of(spark))


def _submitted() -> bool:
    """True when running under spark-submit, which already chose the master."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def union_all(frames):
    """The frames' rows in one DataFrame, columns matched by name."""
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def erased_flag(spark, frame, digests: list[str], column: str = "_erased"):
    """``frame`` with a boolean ``column``: whether the row's raw ``user_id`` (trimmed as
    the encoder trims ids) is on the erasure list (``common/erasures.py``). A broadcast
    join on the ids' SHA-256, so the list may be long."""
    from pyspark.sql import functions as F

    from schemas.contracts import ID_TRIM_PATTERN

    listed = spark.createDataFrame([(d,) for d in digests], "_erased_id STRING")
    digest = F.sha2(F.regexp_replace(F.col("user_id"), ID_TRIM_PATTERN, ""), 256)
    return (frame.withColumn("_digest", digest)
            .join(F.broadcast(listed), F.col("_digest") == F.col("_erased_id"), "left")
            .withColumn(column, F.col("_erased_id").isNotNull())
            .drop("_digest", "_erased_id"))


def without_erased(spark, frame, config, what: str):
    """A side input (raw ids) without the rows of erased users; logs how many went."""
    import logging

    from common import erasures

    digests = erasures.digests(config)
    if not digests:
        return frame
    flagged = erased_flag(spark, frame, digests)
    gone = flagged.where("_erased").count()
    if gone:
        logging.getLogger("metaprofile").info("%s: %d row(s) of erased users left out",
                                              what, gone)
    return flagged.where("not _erased").drop("_erased")
