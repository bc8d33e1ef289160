"""The erasure list: users erased by ``metaprofile forget``, kept out of every later run.

One Parquet file, ``<storage.erasures>/erasures.parquet``, with the SHA-256 of each raw user
id (of the id as validation sees it: trimmed) and the date it was requested. The id itself
is never stored. ``jobs/encode.py`` drops a listed user's raw rows before validation and
counts them as ``rows_erased``; ``jobs/forget.py`` adds and removes entries.
"""
from __future__ import annotations

import hashlib
import io
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from common import storage
from schemas.config import PipelineConfig

ERASURES = pa.schema([pa.field("id_sha256", pa.string(), nullable=False),
                      pa.field("requested", pa.string(), nullable=False)],
                     metadata={"contract": "erasures", "version": "1"})
ERASURE_FILE = "erasures.parquet"
ERASED = "erased"  # the encoder's mark on a listed user's raw row (never a reject reason)


ID_WHITESPACE = " \t\n\x0b\f\r"  # what the encoder trims around a raw id


def id_digest(user_id: str) -> str:
    """What the list keeps of a raw id: the SHA-256 of the id trimmed as the encoder trims
    it, hex."""
    return hashlib.sha256(user_id.strip(ID_WHITESPACE).encode("utf-8")).hexdigest()


def list_uri(config: PipelineConfig) -> str:
    return config.storage.uri("erasures")


def read_list(config: PipelineConfig) -> pa.Table:
    """The erasure list (empty when none was ever written)."""
    uri = f"{list_uri(config)}/{ERASURE_FILE}"
    if not storage.exists(uri):
        return ERASURES.empty_table()
    fs, path = storage.resolve(uri)
    return pq.read_table(path, filesystem=fs, schema=ERASURES)


def digests(config: PipelineConfig) -> list[str]:
    """The SHA-256 of every listed id, for the encoder's filter."""
    return read_list(config).column("id_sha256").to_pylist()


def encode_list(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table.sort_by("id_sha256"), sink)
    return sink.getvalue()


def updated_list(existing: pa.Table, add: Iterable[str] = (), remove: Iterable[str] = (),
                 today: str = "") -> tuple[pa.Table, int, int]:
    """(new list, digests added, digests removed): a pure function of the old list."""
    rows = dict(zip(existing.column("id_sha256").to_pylist(),
                    existing.column("requested").to_pylist()))
    before = len(rows)
    for digest in remove:
        rows.pop(digest, None)
    removed = before - len(rows)
    added = 0
    for digest in add:
        if digest not in rows:
            rows[digest], added = today, added + 1
    table = pa.Table.from_pylist([{"id_sha256": k, "requested": v} for k, v in rows.items()],
                                 schema=ERASURES)
    return table, added, removed
