"""The evaluation's files: results CSV, summary JSON, figures and the Markdown report."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np

from common import storage
from common.publish import Publisher
from evaluation import report
from evaluation.settings import RESULT_COLUMNS

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("auroc", "aupr", "aupr_low", "aupr_high")

# --------------------------------------------------------------------------- outputs


def rows_to_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and k in METRIC_COLUMNS
                             else v) for k, v in row.items()})
    return buffer.getvalue()


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


def write_outputs(out: str, result: dict, curves: dict) -> list[str]:
    """results.json, results.csv, decision.json, the PNG plots and report.md under ``out``
    (replaced whole: staged and renamed on local disk, ``_SUCCESS`` last elsewhere)."""


    def write_all(directory: str) -> list[str]:
        images = report.plot_all(directory, result, curves)
        documents = {"results.json": _json_safe(result),
                     "decision.json": _json_safe(result["decision"])}
        for name, document in documents.items():
            with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=2, sort_keys=True, allow_nan=False)
                fh.write("\n")
        with open(os.path.join(directory, "results.csv"), "w", encoding="utf-8") as fh:
            fh.write(rows_to_csv(result["rows"]))
        with open(os.path.join(directory, "report.md"), "w", encoding="utf-8") as fh:
            fh.write(report.render_markdown(result, images))
        return sorted(["results.json", "decision.json", "results.csv", "report.md", *images])

    if storage.is_local(out):
        with Publisher().staged(out) as staging:
            return write_all(staging)
    staging = tempfile.mkdtemp(prefix="metaprofile-eval-")
    try:
        files = write_all(staging)
        for name in files:
            with open(os.path.join(staging, name), "rb") as fh:
                storage.write_bytes(fh.read(), storage.join(out, name))
        storage.write_bytes(b"", storage.join(out, storage.SUCCESS))
        return files
    finally:
        shutil.rmtree(staging, ignore_errors=True)
