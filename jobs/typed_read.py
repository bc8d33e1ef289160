"""Read Parquet inputs whatever their column types, into the types of their contract.

``spark.read.schema(<contract>)`` refuses a file whose column has another physical type
(``FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH``, as a Java trace, after the job has
started). Instead, before Spark reads a row:

1. every local data file's footer is read with pyarrow, and each column is checked against
   :mod:`schemas.typed_inputs`; a column that cannot be used stops the run with one line per
   file and column (remote files: the schema Spark infers is checked the same way);
2. files are grouped by their column types, each group is read with its own types, and the
   columns are converted to the contract's: for the raw logs to the text that validation
   checks (timestamps as ISO-8601 with their offset, or without one for a zoneless
   timestamp; dates as ``YYYY-MM-DD``; numbers as decimal text), for side inputs by a
   cast that gives null, never an error, where a value does not fit.

A column missing from a file reads as null, as it did with the contract's schema.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Sequence

from common import storage
from common.errors import PipelineError
from schemas import typed_inputs

log = logging.getLogger(__name__)

ISO_WITH_OFFSET = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
ISO_WITHOUT_OFFSET = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"


class InputTypeError(PipelineError, ValueError):
    """Input columns whose types the contract cannot take; one line per file and column."""


def data_files(folder: str) -> list[str]:
    """Parquet data files under a local ``folder``, partition folders included (Spark's
    hidden ``_``/``.`` files and folders skipped)."""
    path = storage.local_path(folder)
    if os.path.isfile(path):
        return [path]
    found = []
    for root, folders, files in os.walk(path):
        folders[:] = sorted(d for d in folders if not d.startswith(("_", ".")))
        found += [os.path.join(root, name) for name in sorted(files)
                  if not name.startswith(("_", "."))]
    return found


def footer_schema(path: str):
    """The Arrow schema in a local Parquet file's footer, or the error text when it cannot
    be read. Cached by path, size and modification time, so the encoder's check before any
    Spark job and its read that follows read each footer once."""
    stat = os.stat(path)
    return _footer_schema(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8192)
def _footer_schema(path: str, size: int, mtime_ns: int):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - report the file, whatever pyarrow says
        return f"not a readable Parquet file ({exc})"


def _footers(folders: Sequence[str], contract) -> tuple[list[list[str]], list[str]]:
    """Local data files grouped by their contract columns' types, and the problems found."""
    groups: dict[tuple, list[str]] = {}
    found: list[str] = []
    for folder in folders:
        for path in data_files(folder):
            if os.path.getsize(path) == 0:  # an interrupted upload, say: it holds no row
                log.warning("%s: zero bytes, skipped (it holds no row)", path)
                continue
            schema = footer_schema(path)
            if isinstance(schema, str):
                found.append(f"{path}: {schema}; re-export the file, or move it out of the "
                             f"input folder")
                continue
            found += typed_inputs.problems(schema, contract, path)
            key = tuple((f.name, str(schema.field(f.name).type)) for f in contract
                        if f.name in schema.names)
            groups.setdefault(key, []).append(path)
    return list(groups.values()), found


def _raise(found: list[str]) -> None:
    if len(found) == 1:  # one line: the file, the column and the fix
        raise InputTypeError(found[0])
    if found:
        raise InputTypeError(f"{len(found)} input column(s) cannot be read:\n  "
                             + "\n  ".join(found))


def check_local_inputs(inputs: dict) -> None:
    """``{what: (folders, contract)}``: check every local file's footer at once, so that a
    bad column is reported before any Spark job starts (remote folders are skipped)."""
    found = []
    for what, (folders, contract) in inputs.items():
        local = [f for f in folders if storage.is_local(f)]
        found += [f"{what}: {line}" for line in _footers(local, contract)[1]]
    _raise(found)


def local_groups(folders: Sequence[str], contract, what: str) -> list[list[str]]:
    """The data files of ``folders`` grouped by their contract columns' types; raises
    :class:`InputTypeError` naming every file and column that cannot be used."""
    groups, found = _footers(folders, contract)
    _raise([f"{what}: {line}" for line in found])
    return groups


def spark_schema_problems(schema, contract, where: str) -> list[str]:
    """:func:`schemas.typed_inputs.problems` for a schema Spark inferred."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    fields = []
    for field in schema.fields:
        try:
            fields.append(pa.field(field.name, to_arrow_type(field.dataType)))
        except TypeError:
            fields.append(pa.field(field.name, pa.null()))
    return typed_inputs.problems(pa.schema(fields), contract, where)


def as_contract(frame, contract, keep: Sequence[str] = ()):
    """``frame``'s contract columns converted to the contract's types (see module doc),
    followed by the ``keep`` columns as they are."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from schemas.contracts import ID_TRIM_PATTERN, spark_ddl

    raw = (contract.metadata or {}).get(b"contract", b"").decode().startswith("raw_")
    target = T.StructType.fromDDL(spark_ddl(contract))
    columns = []
    for field in target.fields:
        if field.name not in frame.columns:
            columns.append(F.lit(None).cast(field.dataType).alias(field.name))
            continue
        column, found = F.col(f"`{field.name}`"), frame.schema[field.name].dataType
        if isinstance(found, T.TimestampNTZType):
            column = F.date_format(column, ISO_WITHOUT_OFFSET)
        elif isinstance(found, T.TimestampType):
            column = F.date_format(column, ISO_WITH_OFFSET)
        elif isinstance(found, T.DateType):
            column = F.date_format(column, "yyyy-MM-dd")
        if raw or isinstance(field.dataType, T.StringType):
            column = column.cast("string")
        elif isinstance(field.dataType, T.IntegralType) and isinstance(found, T.FractionalType):
            column = F.when(column == F.floor(column), column).try_cast(field.dataType)
        else:
            column = column.try_cast(field.dataType)
        if field.name == "user_id" and not raw:  # as the encoder trims the raw ids
            column = F.regexp_replace(column, ID_TRIM_PATTERN, "")
            column = F.when(column != "", column)
        columns.append(column.alias(field.name))
    return frame.select(*columns, *keep)


def read_parquet(spark, folders: Sequence[str], contract, what: str, base: str | None = None,
                 keep: Sequence[str] = ()):
    """Every row of the Parquet files in ``folders``, in ``contract``'s columns and types
    plus ``keep`` (e.g. ``input_file``, or a partition column found under ``base``). With no
    data file at all: an empty frame of the contract's columns."""
    from functools import reduce

    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from schemas.contracts import spark_ddl

    def read(paths):
        reader = spark.read.option("basePath", base) if base else spark.read
        frame = reader.parquet(*paths)
        return frame.withColumn("input_file", F.col("_metadata.file_path"))

    if all(storage.is_local(f) for f in folders):
        groups = local_groups(folders, contract, what)
        if not groups:
            empty = spark.createDataFrame([], T.StructType.fromDDL(spark_ddl(contract)))
            return empty.select(*empty.columns, *[F.lit(None).cast("string").alias(k)
                                                  for k in keep])
        frames = [as_contract(read(paths), contract, keep) for paths in groups]
    else:
        frame = read(list(folders))
        _raise(spark_schema_problems(frame.schema, contract, f"{what} ({folders[0]} …)"))
        frames = [as_contract(frame, contract, keep)]
    return reduce(lambda a, b: a.unionByName(b), frames)


def csv_header(path: str) -> list[str] | None | str:
    """The column names in a local CSV file's first line (a byte-order mark and CRLF
    allowed); None for a zero-byte file; the problem's text when the line is not UTF-8."""
    import csv

    with open(path, "rb") as fh:
        first = fh.readline()
    if not first:
        return None
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"its header line is not UTF-8 ({exc}); export the file as UTF-8"
    return [name.strip() for name in next(csv.reader([line]))]


def read_csv(spark, folders: Sequence[str], contract, what: str, base: str, corrupt: str):
    """Every row of the CSV files in local ``folders``, by their header's column names.

    Each file's header is read first, so a column may come in any order, extra columns are
    left out, and a missing required column stops the run naming the file (Spark itself
    would stop with a Java trace on a header that differs from the schema). Files with the
    same header are read together, positionally, under a schema made of that header, with
    malformed lines kept in ``corrupt``. A zero-byte file holds no row and is skipped.
    """
    from functools import reduce

    from pyspark.sql import functions as F

    groups: dict[tuple, list[str]] = {}
    found = []
    for folder in folders:
        for path in data_files(folder):
            header = csv_header(path)
            if header is None:
                log.warning("%s: zero bytes, skipped (it holds no row)", path)
                continue
            if isinstance(header, str):
                found.append(f"{what}: {path}: {header}")
                continue
            found += typed_inputs.missing_columns(header, contract, f"{what}: {path}")
            if len(set(header)) != len(header):
                found.append(f"{what}: {path}: the header names a column twice ({header})")
            groups.setdefault(tuple(header), []).append(path)
    _raise(found)
    frames = []
    for header, paths in groups.items():
        ddl = ", ".join(f"`{name.replace('`', '')}` STRING" for name in header)
        frame = (spark.read.schema(f"{ddl}, `{corrupt}` STRING").option("basePath", base)
                 .option("header", "true").option("enforceSchema", "true")
                 .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", corrupt)
                 .csv(paths))
        columns = [F.col(f"`{f.name}`") if f.name in header
                   else F.lit(None).cast("string").alias(f.name) for f in contract]
        frames.append(frame.select(*columns, corrupt, "dt",
                                   F.col("_metadata.file_path").alias("input_file")))
    if not frames:
        from schemas.contracts import spark_ddl
        return spark.createDataFrame([], f"{spark_ddl(contract, nullable=True)}, "
                                         f"`{corrupt}` STRING, dt STRING, input_file STRING")
    return reduce(lambda a, b: a.unionByName(b), frames)


def read_folder(spark, uri: str, contract, what: str):
    """A side input (a Parquet file or folder, partition folders included) in ``contract``'s
    columns and types; raises :class:`InputTypeError` for an unusable column."""
    folder = storage.is_local(uri) and os.path.isdir(storage.local_path(uri))
    return read_parquet(spark, [uri], contract, what, base=uri if folder else None)
