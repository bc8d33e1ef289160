"""Arrow schemas of every dataset that crosses a stage boundary.

Raw logs keep their value columns as *strings*: they are contracts for data as it lands
(CSV, JSON lines or Parquet written by someone else), and a non-numeric amount or an
unparseable timestamp must reach validation intact so it can be quarantined with its reason
instead of becoming a silent null at read time.

Spark jobs read with :func:`spark_ddl` so the same contract drives both worlds.
"""
from __future__ import annotations

import pyarrow as pa

from schemas import SCHEMA_VERSION
from schemas.config import PipelineConfig

PURCHASE_STATUSES = ("purchase", "cancel")


def _list(value_type: pa.DataType) -> pa.DataType:
    # Parquet names list items 'element'; using the same name keeps round trips exact.
    return pa.list_(pa.field("element", value_type))


RAW_PURCHASES = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("event_time", pa.string()),  # ISO-8601; naive values are in raw.timestamp_timezone
        pa.field("genre", pa.string()),  # genre path, e.g. 'beauty/makeup/lipstick'
        pa.field("amount", pa.string()),  # decimal number, currency units, >= 0
        pa.field("quantity", pa.string()),  # integer >= 1; empty means 1
        pa.field("status", pa.string()),  # 'purchase' | 'cancel'
    ],
    metadata={"contract": "raw_purchases", "version": str(SCHEMA_VERSION)},
)

RAW_POINTS = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("event_time", pa.string()),
        pa.field("point_type", pa.string()),  # e.g. 'standard_earned', 'limited_earned', 'used'
        pa.field("points", pa.string()),  # number >= 0
        pa.field("service", pa.string()),  # originating service, kept for audits
    ],
    metadata={"contract": "raw_points", "version": str(SCHEMA_VERSION)},
)

LABELS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),  # 1 positive, 0 negative; no row = unlabelled
    ],
    metadata={"contract": "labels", "version": str(SCHEMA_VERSION)},
)

CAMPAIGN_SEEDS = pa.schema(
    [
        pa.field("campaign_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),  # 1 seed user, 0 explicit negative
    ],
    metadata={"contract": "campaign_seeds", "version": str(SCHEMA_VERSION)},
)

CAMPAIGN_STATUSES = ("active", "paused", "archived")
CAMPAIGN_REGISTRY = pa.schema(
    [
        pa.field("campaign_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # one of CAMPAIGN_STATUSES
        pa.field("segment_size", pa.int64()),  # top-K; null when score_threshold is used
        pa.field("score_threshold", pa.float64()),  # null when segment_size is used
        pa.field("exclude_campaigns", _list(pa.string())),  # their seeds are excluded too
    ],
    metadata={"contract": "campaign_registry", "version": str(SCHEMA_VERSION)},
)

OPT_OUTS = pa.schema(
    [pa.field("user_id", pa.string(), nullable=False)],
    metadata={"contract": "opt_outs", "version": str(SCHEMA_VERSION)},
)

# One aggregated heatmap cell of one user on one absolute local date (daily partitions).
SPARSE_EVENTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),  # pseudonym
        pa.field("modality", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),  # local calendar date
        pa.field("hour", pa.int8(), nullable=False),  # local hour 0..23
        pa.field("channel", pa.int16(), nullable=False),  # index into the modality's channels
        pa.field("value", pa.float32(), nullable=False),  # aggregated measure, untransformed
    ],
    metadata={"contract": "sparse_events", "version": str(SCHEMA_VERSION)},
)

# One user's modality over the window ending at ds; days are relative (0 = first window day).
SNAPSHOT = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("day", _list(pa.int16()), nullable=False),
        pa.field("hour", _list(pa.int8()), nullable=False),
        pa.field("channel", _list(pa.int16()), nullable=False),
        pa.field("value", _list(pa.float32()), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # 'day,hour,channel:value;...'
    ],
    metadata={"contract": "snapshot", "version": str(SCHEMA_VERSION)},
)

REJECTS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # 'purchases', 'points', ...
        pa.field("reason", pa.string(), nullable=False),  # one of REJECT_REASONS
        pa.field("record", pa.string(), nullable=False),  # the original row/line, verbatim JSON or text
        pa.field("input_file", pa.string()),
    ],
    metadata={"contract": "rejects", "version": str(SCHEMA_VERSION)},
)

# Why a raw row can be quarantined. The synthetic generator plants one class per reason.
REJECT_REASONS = (
    "null_user_id",
    "unparseable_timestamp",
    "out_of_range_timestamp",
    "negative_value",
    "non_numeric_value",
    "value_too_large",
    "unknown_genre",
    "unknown_point_type",
    "unknown_status",
    "duplicate_row",
    "malformed_line",
)

# An amount, points value or quantity above this is refused (value_too_large): no real one
# comes near, and a year of sums of such values could overflow a float64 cell to inf.
MAX_RAW_VALUE = 1e15
# What counts as whitespace around a raw user id (the ASCII class of Java's and RE2's \s):
# an id is trimmed of it, and an id of nothing else is null_user_id.
ID_WHITESPACE = "[ \t\n\x0B\f\r]"
ID_TRIM_PATTERN = f"^{ID_WHITESPACE}+|{ID_WHITESPACE}+$"
# What a decoder leaves of bytes that are not UTF-8; a raw value holding it is malformed_line.
REPLACEMENT_CHARACTER = "\ufffd"

RAW_SOURCES = {"purchases": RAW_PURCHASES, "points": RAW_POINTS}

# ----------------------------------------------------------------- the nightly lookalike's
# Written by jobs/embed.py, campaigns.py, score.py and export.py, each under
# <dataset>/ds=<ds>[/campaign=<id>] (common/catalog.py).

# embeddings/ds=<ds>: one row per user of the snapshot.
EMBEDDINGS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),  # pseudonym
        pa.field("embedding", _list(pa.float32()), nullable=False),  # the profile g_θ(user)
        pa.field("features", _list(pa.float32()), nullable=False),  # the DMP aggregates
        pa.field("model_version", pa.string(), nullable=False),
    ],
    metadata={"contract": "embeddings", "version": str(SCHEMA_VERSION)},
)

# Why a seed of a campaign is where it is (supports/ds=<ds>/campaign=<id>/members).
SEED_ROLES = ("support", "holdout", "negative", "unknown", "opted_out", "conflicting")
SUPPORT_MEMBERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),  # one of SEED_ROLES
    ],
    metadata={"contract": "support_members", "version": str(SCHEMA_VERSION)},
)

# scores/ds=<ds>/campaign=<id>: the selected users, best first; the exported segment
# (segments/ds=<ds>/campaign=<id>/segment.csv|parquet) has the same columns.
SCORES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 1 = best
    ],
    metadata={"contract": "scores", "version": str(SCHEMA_VERSION)},
)
SEGMENT = SCORES.with_metadata({"contract": "segment", "version": str(SCHEMA_VERSION)})
# A segment's files (segments/ds=<ds>/campaign=<id>/): its members as segment.<format>, its
# control group, never activated, as control.csv; both in the SEGMENT layout.
SEGMENT_FILE = "segment.{format}"
CONTROL_FILE = "control.csv"


def demographics_schema(config: PipelineConfig) -> pa.Schema:
    """user_id plus the configured fields: numeric as float64, categorical as string."""
    fields = [pa.field("user_id", pa.string(), nullable=False)]
    fields += [pa.field(n, pa.float64()) for n in config.demographics.numeric]
    fields += [pa.field(c.name, pa.string()) for c in config.demographics.categorical]
    return pa.schema(fields, metadata={"contract": "demographics",
                                       "version": str(SCHEMA_VERSION)})


def check_table(table: pa.Table, schema: pa.Schema) -> None:
    """Raise ValueError naming the contract, field and first row that break ``schema``."""
    name = (schema.metadata or {}).get(b"contract", b"table").decode()
    if table.schema.names != schema.names:
        raise ValueError(f"{name}: columns {table.schema.names} differ from the contract's "
                         f"{schema.names}")
    for f in schema:
        column = table.column(f.name)
        if column.type != f.type:
            raise ValueError(f"{name}.{f.name}: type {column.type} differs from the "
                             f"contract's {f.type}")
        if not f.nullable and column.null_count:
            row = column.is_null().to_numpy(zero_copy_only=False).argmax()
            raise ValueError(f"{name}.{f.name}: {column.null_count} null value(s), first at "
                             f"row {row}; the contract does not allow nulls here")


_DDL_TYPES = {
    pa.string(): "STRING",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
}


def _ddl_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"ARRAY<{_ddl_type(t.value_type)}>"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    try:
        return _DDL_TYPES[t]
    except KeyError:
        raise TypeError(f"no Spark DDL type for Arrow type {t}") from None


def spark_ddl(schema: pa.Schema, nullable: bool = False) -> str:
    """The schema as a Spark DDL string (``StructType.fromDDL`` / ``spark.read.schema``).

    ``nullable=True`` drops the NOT NULL constraints: for the result schema of an Arrow
    batch function, which Spark takes as declared.
    """
    return ", ".join(
        f"`{f.name}` {_ddl_type(f.type)}{'' if f.nullable or nullable else ' NOT NULL'}"
        for f in schema
    )
