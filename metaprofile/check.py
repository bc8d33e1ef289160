"""``metaprofile check``: a config and every input it names, checked before any Spark work.

For each table the ``import`` section reads, and each input of the config's storage
section, the check reports whether it is there, and
for Parquet files whether every column's type can be read (``schemas/typed_inputs.py``; the
footers only, with pyarrow). For the raw logs it also counts the window's landing dates
that have no partition, and reads the first event times of the newest partition: dates
alone without ``raw.event_time_precision: day``, or text that is no ISO-8601 time, would be
quarantined row by row. Each finding is ``ok``, ``warn`` or ``error``; the command exits 1
when there is an error. Inputs on remote storage (``s3a://``, ``hdfs://`` …) are listed as
not checked: the jobs check them when they read them.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from common import storage
from schemas.config import PipelineConfig

OK, WARN, ERROR = "ok", "warn", "error"
# Raw columns without which every row would be rejected.
RAW_REQUIRED = {"purchases": ("user_id", "event_time", "genre", "amount", "status"),
                "points": ("user_id", "event_time", "point_type", "points")}


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | error
    input: str  # the storage key, e.g. raw_purchases
    message: str


def _folder_findings(name: str, uri: str, contract, required: tuple[str, ...],
                     folders: list[str]) -> list[Finding]:
    """Types and required columns of the Parquet files in local ``folders``."""
    from jobs.typed_read import data_files, footer_schema
    from schemas import typed_inputs

    files = [path for folder in folders for path in data_files(folder)]
    if not files:
        return [Finding(ERROR, name, f"{uri}: no data files")]
    out = []
    for path in files:
        schema = footer_schema(path)
        if isinstance(schema, str):
            out.append(Finding(ERROR, name, f"{path}: {schema}"))
            continue
        out += [Finding(ERROR, name, line) for line in typed_inputs.problems(schema, contract,
                                                                            path)]
        absent = [c for c in required if c not in schema.names]
        if absent:
            out.append(Finding(ERROR, name, f"{path}: no column {', '.join(map(repr, absent))} "
                                            f"(has {', '.join(schema.names)})"))
    if not out:
        out.append(Finding(OK, name, f"{len(files)} file(s), column types readable"))
    return out


def check_raw(config: PipelineConfig, source: str, ds: dt.date) -> list[Finding]:
    from jobs.encoding.validation import (
        landing_partitions,
        missing_dates,
        partition_dates,
        window_dates,
    )
    from schemas.contracts import RAW_SOURCES

    name = f"raw_{source}"
    uri = config.storage.uri(name)
    if not storage.is_local(uri):
        return [Finding(WARN, name, f"{uri}: remote, not checked here (encode checks it)")]
    dates = partition_dates(config, ds, full=True)
    folders = [p for p in landing_partitions(uri, dates) if os.path.isdir(storage.local_path(p))]
    if not folders:
        if getattr(config.imports, source):
            return [Finding(ERROR, name, f"{uri}: no landing partition yet; run `metaprofile "
                                         f"import` first (the config's import.{source})")]
        level = ERROR if source == "purchases" else WARN
        return [Finding(level, name, f"{uri}: no landing partition dt=… for the window ending "
                                     f"{ds}" + ("" if level == ERROR else
                                                "; its channels will be empty"))]
    missing = missing_dates(window_dates(config, ds), [p.rsplit("/dt=", 1)[1] for p in folders])
    out = [Finding(OK, name, f"{len(folders)} landing partition(s) for the window ending {ds}")]
    if missing["count"]:
        level = ERROR if config.raw.missing_partitions == "fail" else WARN
        more = ", …" if missing["count"] > len(missing["dates"]) else ""
        out.append(Finding(level, name, f"{missing['count']} date(s) of the window have no "
                                        f"partition ({', '.join(missing['dates'])}{more}); "
                                        f"raw.missing_partitions is "
                                        f"{config.raw.missing_partitions}"))
    if config.raw.format == "parquet":
        out += [f for f in _folder_findings(name, uri, RAW_SOURCES[source],
                                            RAW_REQUIRED[source], folders) if f.level != OK]
    if config.raw.format in ("parquet", "csv"):
        out += event_time_findings(config, name, folders[-1])
    return out


SAMPLE_ROWS = 1000


def sample_event_times(path: str, fmt: str) -> list[str] | None:
    """Up to SAMPLE_ROWS ``event_time`` values of one raw file as text (None: not text, or
    unreadable; the footer check reports that)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            handle = pq.ParquetFile(path)
            if "event_time" not in handle.schema_arrow.names or not handle.num_row_groups:
                return None
            column = handle.read_row_group(0, columns=["event_time"])["event_time"]
        else:
            options = pacsv.ConvertOptions(column_types={"event_time": pa.string()},
                                           include_columns=["event_time"])
            with pacsv.open_csv(path, convert_options=options) as reader:
                column = pa.chunked_array([reader.read_next_batch()["event_time"]])
    except (OSError, KeyError, StopIteration, pa.ArrowInvalid):
        return None
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return None  # a typed timestamp or date: nothing to parse
    return [v for v in column.slice(0, SAMPLE_ROWS).to_pylist() if v is not None]


def event_time_findings(config: PipelineConfig, name: str, folder: str) -> list[Finding]:
    import re

    from jobs.encoding.validation import DATE_PATTERN, TIMESTAMP_PATTERN
    from jobs.typed_read import data_files

    files = data_files(folder)
    values = sample_event_times(files[0], config.raw.format) if files else None
    if not values:
        return []
    dates = [v for v in values if re.match(DATE_PATTERN, v.strip())]
    bad = [v for v in values if not re.match(TIMESTAMP_PATTERN, v.strip())
           and not re.match(DATE_PATTERN, v.strip())]
    where = f"{files[0]}: event_time"
    out = []
    if dates and config.raw.event_time_precision != "day":
        out.append(Finding(ERROR, name, f"{where} holds dates alone ({len(dates)} of the first "
                                        f"{len(values)}, e.g. {dates[0]!r}); encode would "
                                        "quarantine them as unparseable: set "
                                        "raw.event_time_precision: day (and raw.day_hour)"))
    if bad:
        out.append(Finding(ERROR if len(bad) == len(values) else WARN, name,
                           f"{where}: {len(bad)} of the first {len(values)} values are no "
                           f"ISO-8601 time (e.g. {bad[0]!r}); encode quarantines each as "
                           "unparseable. Land ISO-8601 times, or use metaprofile import with "
                           "event_time_format"))
    return out


def check_side_input(config: PipelineConfig, name: str, contract, required: tuple[str, ...],
                     needed_by: str, missing_level: str) -> list[Finding]:
    uri = config.storage.uri(name)
    if not storage.is_local(uri):
        return [Finding(WARN, name, f"{uri}: remote, not checked here")]
    if not os.path.exists(storage.local_path(uri)):
        return [Finding(missing_level, name, f"{uri}: not found (needed by {needed_by})")]
    return _folder_findings(name, uri, contract, required, [uri])


def check_import_inputs(config: PipelineConfig) -> list[Finding]:
    """Presence of the tables the ``import`` section reads (their expressions are checked
    by ``metaprofile import`` itself, against the columns Spark finds). A table named in
    ``import.tables`` is checked once, under that name."""
    imports = config.imports
    uses: dict[str, set[str]] = {name: set() for name, _ in imports.tables}  # -> storage keys
    tables = []  # (finding name, uri, the storage keys it lands in, the config field)

    def add(where: str, table, lands: str) -> None:
        if table.name:
            uses[table.name].add(lands)
        else:
            tables.append((where, table.uri, {lands}, f"{where}.input.uri"))

    for log in ("purchases", "points"):
        parts = getattr(imports, log)
        for i, part in enumerate(parts):
            where = f"import.{log}" + (f"[{i}]" if len(parts) > 1 else "")
            add(where, part.input, f"raw_{log}")
            if part.genre is not None and part.genre.lookup is not None:
                add(f"{where}.genre.lookup", part.genre.lookup, f"raw_{log}")
    if imports.demographics is not None:
        add("import.demographics", imports.demographics.input, "demographics")
    queried = {name for name, _ in imports.queries} or {"source_labels"}
    for name, table in imports.tables:  # a table only SQL reads lands in what queries write
        tables.append((f"import.tables.{name}", table.uri, uses[name] or queried,
                       f"import.tables.{name}.uri"))
    out = []
    for where, uri, lands, field in tables:
        if not storage.is_local(uri):
            out.append(Finding(WARN, where, f"{uri}: remote, not checked here"))
        elif os.path.exists(storage.local_path(uri)):
            out.append(Finding(OK, where, f"{uri}: found"))
        elif all(storage.exists(config.storage.uri(key)) for key in lands):  # landed already
            out.append(Finding(WARN, where, f"{uri}: not found; {', '.join(sorted(lands))} "
                                            "exist, so `metaprofile import` is not needed now"))
        else:
            out.append(Finding(ERROR, where, f"{uri}: not found (the config's {field})"))
    return out


def check_inputs(config: PipelineConfig, ds: dt.date | None = None) -> list[Finding]:
    """Every finding for the inputs that ``config`` names, for the window ending ``ds``."""
    from schemas.contracts import (
        CAMPAIGN_REGISTRY,
        CAMPAIGN_SEEDS,
        LABELS,
        OPT_OUTS,
        RAW_SOURCES,
        demographics_schema,
    )

    ds = ds or config.window.end
    out = check_import_inputs(config)
    for source in RAW_SOURCES:
        out += check_raw(config, source, ds)
    labelled = bool(config.source_tasks)  # behaviour tasks need no label file
    out += check_side_input(config, "demographics", demographics_schema(config), ("user_id",),
                            "heatmaps, embed", ERROR if config.demographics.field_names
                            else WARN)  # without fields, no table means no demographics
    out += check_side_input(config, "source_labels", LABELS, ("user_id", "task", "label"),
                            "heatmaps", ERROR if labelled else WARN)
    out += check_side_input(config, "target_labels", LABELS, ("user_id", "task", "label"),
                            "evaluate", WARN)
    out += check_side_input(config, "campaign_registry", CAMPAIGN_REGISTRY,
                            ("campaign_id", "status"), "campaigns", WARN)
    out += check_side_input(config, "campaign_seeds", CAMPAIGN_SEEDS,
                            ("campaign_id", "user_id"), "campaigns", WARN)
    out += check_side_input(config, "opt_outs", OPT_OUTS, ("user_id",),
                            "campaigns (without it no user is excluded)", WARN)
    return out


def format_findings(findings: list[Finding], config_path: str) -> str:
    width = max(len(f.input) for f in findings)
    lines = [f"{f.level:5}  {f.input:{width}}  {f.message}" for f in findings]
    errors = sum(f.level == ERROR for f in findings)
    warnings = sum(f.level == WARN for f in findings)
    lines.append(f"{config_path}: {errors} error(s), {warnings} warning(s)"
                 + ("" if errors else "; the inputs can be encoded"))
    return "\n".join(lines)
