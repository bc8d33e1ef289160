"""Which column types an input file may have, checked from its footer before any Spark job.

Retailers' Parquet is typed: ``event_time`` a timestamp, ``amount`` a double, ``label`` an
int64, ids integers. The contracts in :mod:`schemas.contracts` name the type the pipeline
works in. An input column is accepted when it can be converted to that type without losing
what validation needs to see:

* a raw column (a string in the contract) may also be a number where it holds a number
  (``amount``, ``points``, ``quantity``, and ``user_id``: integer ids), and ``event_time``
  may be a timestamp (with or without a zone; one without is read in
  ``raw.timestamp_timezone``) or a date. The encoder turns them into the text that
  validation checks, so NaN, negative and out-of-window values are still quarantined with
  their reasons;
* a side-input column may be any integer type where the contract has an integer (a 0/1
  ``label`` as int64, a boolean, or a float such as pandas writes for a column with gaps:
  a value that is not whole reads as null, which validation reports), any integer, floating or decimal type where it has a
  float (numeric demographics), and a string or an integer where it has a string
  (categorical codes, ids).

Anything else (a boolean amount, a list, a nanosecond timestamp that Spark cannot read) is
reported as one line naming the file, the column, the type found and the types accepted.
"""
from __future__ import annotations

import pyarrow as pa

STRING, INTEGER, FLOAT, DECIMAL, BOOLEAN, TIMESTAMP, DATE = (
    "string", "integer", "floating", "decimal", "boolean", "timestamp", "date")
TIMESTAMP_NANOS = "nanosecond timestamp"  # Spark cannot read INT64 TIMESTAMP(NANOS)
NUMBER = (INTEGER, FLOAT, DECIMAL)
# Raw columns that may hold a typed value instead of text.
RAW_TYPED_COLUMNS = {"user_id": (INTEGER,), "event_time": (TIMESTAMP, DATE),
                     "amount": NUMBER, "points": NUMBER, "quantity": NUMBER}
# Raw columns a file may leave out (quantity: empty means 1; service: kept for audits only).
# Any other raw column missing from a file is refused, naming the file: read as null, it
# would reject every row of the file.
OPTIONAL_RAW_COLUMNS = ("quantity", "service")


def is_raw(contract: pa.Schema) -> bool:
    return (contract.metadata or {}).get(b"contract", b"").decode().startswith("raw_")


def required(contract: pa.Schema) -> list[str]:
    """The columns a file of ``contract`` must have: every raw column but the optional ones;
    a side input's non-nullable columns; every configured demographics field (a field the
    file lacks would read as missing for every user)."""
    name = (contract.metadata or {}).get(b"contract", b"").decode()
    if is_raw(contract):
        return [f.name for f in contract if f.name not in OPTIONAL_RAW_COLUMNS]
    return [f.name for f in contract if not f.nullable or name == "demographics"]


def missing_columns(columns, contract: pa.Schema, where: str) -> list[str]:
    """One line per required column (:func:`required`) that a file's ``columns`` lack."""
    have = set(columns)
    missing = [c for c in required(contract) if c not in have]
    if not missing:
        return []
    extra = sorted(have - set(contract.names))
    hint = (f"; it has {', '.join(repr(c) for c in extra)} instead" if extra else "")
    name = (contract.metadata or {}).get(b"contract", b"").decode()
    fix = ("Rename the column in the export, or map it with the config's import section "
           "(metaprofile import)" if is_raw(contract) else
           "Add or rename the column" + (", or take the field out of the config's "
                                         "demographics section" if name == "demographics"
                                         else ""))
    return [f"{where}: column {c!r} is missing{hint}. {fix}" for c in missing]


def kind(arrow_type: pa.DataType) -> str:
    """The family of an Arrow type, or its own name when it belongs to none of them."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list of {kind(t.value_type)}"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return STRING
    if pa.types.is_integer(t):
        return INTEGER
    if pa.types.is_floating(t):
        return FLOAT
    if pa.types.is_decimal(t):
        return DECIMAL
    if pa.types.is_boolean(t):
        return BOOLEAN
    if pa.types.is_timestamp(t):
        return TIMESTAMP if t.unit in ("ms", "us", "s") else TIMESTAMP_NANOS
    if pa.types.is_date(t):
        return DATE
    return str(t)


def accepted(contract: pa.Schema, column: str) -> tuple[str, ...]:
    """The kinds an input column may have for ``contract``'s field ``column``."""
    wanted = kind(contract.field(column).type)
    name = (contract.metadata or {}).get(b"contract", b"").decode()
    if name.startswith("raw_"):
        return (STRING,) + RAW_TYPED_COLUMNS.get(column, ())
    if wanted == STRING:
        return (STRING, INTEGER)
    if wanted == INTEGER:
        return (INTEGER, BOOLEAN, FLOAT)  # a float must be whole, or it reads as null
    if wanted == FLOAT:
        return NUMBER
    return (wanted,)


def problems(schema: pa.Schema, contract: pa.Schema, where: str) -> list[str]:
    """One line per column of ``schema`` (a file's) that ``contract`` cannot take."""
    out = missing_columns(schema.names, contract, where)
    for field in contract:
        if field.name not in schema.names:
            continue  # an optional or side-input column: reads as null
        found = schema.field(field.name).type
        if kind(found) not in accepted(contract, field.name):
            choices = " or ".join(accepted(contract, field.name))
            hint = (" (Spark reads second, milli- or microsecond timestamps: write the file "
                    "with coerce_timestamps='us', e.g. pandas' to_parquet(..., "
                    "coerce_timestamps='us'))" if kind(found) == TIMESTAMP_NANOS else "")
            out.append(f"{where}: column {field.name!r} has type {found}; expected "
                       f"{choices}{hint}")
    return out
