"""Single-process reference run of the Arrow engine: the encoder's cells and accounting from
one process, numpy and pyarrow alone, writing nothing.

``encode_reference(config, dates)`` reads the raw Parquet landing partitions of ``dates``
and runs :func:`jobs.encoding.arrow.encode_table` over them one landing date at a time, in
this process, with no Spark. ``bench/bench_encode.py`` uses it as the baseline: how fast one
process encodes the same rows, against the Spark job that runs the same engine one task per
landing date (and against the Spark engine, which is checked to give the same cells).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from common import privacy, storage
from jobs.encode import account, totals
from jobs.encoding.arrow import CELLS, encode_table, read_files
from jobs.typed_read import data_files
from schemas.config import PipelineConfig
from schemas.contracts import RAW_SOURCES


@dataclass(frozen=True)
class ReferenceEncoding:
    """The cells of the encoded landing dates and their row accounting.

    ``sources`` has the shape of ``encode.run(...)["sources"]``: per raw source found,
    ``rows_read``, ``rows_encoded`` and ``rows_rejected`` (reason -> rows, non-zero only).
    """

    cells: pa.Table  # schema CELLS
    sources: dict[str, dict]

    @property
    def rows_read(self) -> int:
        return sum(s["rows_read"] for s in self.sources.values())


def encode_reference(config: PipelineConfig, dates: Iterable[dt.date]) -> ReferenceEncoding:
    """Encode the raw landing partitions ``dt=<date>`` of ``dates``; missing ones are skipped."""
    if config.raw.format != "parquet":
        raise NotImplementedError(f"the reference run reads Parquet only, not "
                                  f"{config.raw.format!r}")
    key = privacy.load_pseudonym_key(config.pseudonymisation)
    per_date: dict[str, dict] = {}
    pieces: list[pa.Table] = []
    for source in RAW_SOURCES:
        root = Path(storage.local_path(config.storage.uri(f"raw_{source}")))
        for day in sorted(set(dates)):
            folder = root / f"dt={day.isoformat()}"
            if not folder.is_dir():
                continue
            files = [f for f in data_files(str(folder)) if Path(f).stat().st_size]
            encoded = encode_table(read_files(files, source, day), config, source, key)
            pieces += encoded.cells
            per_date.setdefault(day.isoformat(), {})
            account(per_date, source, encoded.counts)
    cells = pa.concat_tables(pieces) if pieces else CELLS.empty_table()
    return ReferenceEncoding(cells=cells, sources=totals(per_date))
