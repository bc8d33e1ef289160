"""Erase users: the right to erasure, for every dataset this pipeline derived.

    metaprofile forget --config conf/synthetic.yaml --users erase-2026-12.txt
    metaprofile forget --config conf/synthetic.yaml --remove-from-list restore.txt
    spark-submit jobs/forget.py --config conf/synthetic.yaml --users erase-2026-12.txt

``--users FILE`` lists raw user ids, as they appear in the raw logs: a text file with one id
per line (blank lines and ``#`` comments skipped), or a CSV or Parquet file with a
``user_id`` column. The job then

1. adds them to the erasure list (``storage.erasures``: the SHA-256 of each id, never the
   id itself, and the date of the request), which ``jobs/encode.py`` reads every night: a
   listed user's raw rows are dropped before validation and counted as ``rows_erased``, so
   nothing of theirs enters events, rejects or anything after, however often they reappear
   in new raw logs, until ``--remove-from-list`` takes them off;
2. rewrites every published partition that holds one of them, in events, rejects,
   snapshots, embeddings, supports, scores and segments: each partition is staged without
   their rows and republished whole (``_SUCCESS`` record, manifests, segment checksums and
   counts updated, an ``erasure`` entry in each manifest: rows removed, date);
3. rebuilds the heatmaps of every snapshot date that held one of them, from the rewritten
   snapshot (TFRecords are not filtered in place; the heatmaps job writes them anew).

Derived datasets hold pseudonyms where the config pseudonymises: the ids are hashed with the
same key first. The raw landing zone is the retailer's and is not touched; nor are trained
models (a model is not a per-user dataset; retrain to be rid of any influence).

Every partition it rewrites is locked as its own job would lock it (``encode-<dt>``,
``embed-<ds>``, …), so a nightly run and an erasure never publish over each other.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import logging
import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # spark-submit jobs/forget.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from common import erasures, locks, storage
from common.attempts import lock_folder, scope_name
from common.errors import PipelineError
from common.privacy import load_pseudonym_key, pseudonym
from common.publish import SUCCESS, Publisher, current_attempt, dataset_files
from jobs import runner
from jobs.runner import Job, JobContext, UsageError
from schemas.config import PipelineConfig

log = logging.getLogger("metaprofile.forget")

# dataset key -> the job whose lock guards its partitions
DATASETS = {"events": "encode", "rejects": "encode", "snapshots": "encode",
            "embeddings": "embed", "supports": "campaigns", "scores": "score",
            "segments": "export"}
MANIFESTS = ("_manifest.json", "_stats.json", "support.json")
WS = erasures.ID_WHITESPACE  # trimmed around an id, as the encoder trims raw ids


class ForgetError(PipelineError):
    """A request file that cannot be read, or a partition that cannot be rewritten."""


# --------------------------------------------------------------------------- the request


def read_request(path: str) -> list[str]:
    """The raw user ids of a request file (text, CSV or Parquet); see the module docstring."""
    if not os.path.exists(path):
        raise ForgetError(f"{path}: no such file")
    if path.endswith(".parquet") or path.endswith(".csv"):
        table = pq.read_table(path) if path.endswith(".parquet") else pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={"user_id": pa.string()}))
        if "user_id" not in table.column_names:
            raise ForgetError(f"{path}: no user_id column (columns: "
                              f"{', '.join(table.column_names)}); name the id column user_id")
        ids = [str(v).strip(WS) for v in table.column("user_id").to_pylist() if v is not None]
    else:
        try:
            with open(path, encoding="utf-8-sig") as fh:
                ids = [line.strip(WS) for line in fh]
        except UnicodeDecodeError as exc:
            raise ForgetError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from None
        ids = [i for i in ids if i and not i.startswith("#")]
    ids = sorted({i for i in ids if i})
    if not ids:
        raise ForgetError(f"{path}: no user id in the file")
    return ids


def write_list(config: PipelineConfig, publisher: Publisher, table: pa.Table) -> None:
    with publisher.staged(erasures.list_uri(config)) as staging:
        storage.write_bytes(erasures.encode_list(table), f"{staging}/{erasures.ERASURE_FILE}")


# --------------------------------------------------------------------------- rewriting


def published_partitions(publisher: Publisher, root: str) -> list[str]:
    """Every published dataset folder (with ``_SUCCESS``) under ``root``, hidden ones
    (staging) skipped."""
    found = []
    if publisher.exists(f"{root}/{SUCCESS}"):
        return [root]
    for name in sorted(publisher.list_folders(root)):
        if not name.startswith((".", "_")):
            found += published_partitions(publisher, f"{root}/{name}")
    return found


def filter_table(table: pa.Table, ids: set[str], raw_ids: set[str]) -> pa.Table:
    """``table`` without the rows of ``ids`` (``user_id``), or for rejects, without the
    records that hold one of ``raw_ids``."""
    if "user_id" in table.column_names:
        keep = pc.invert(pc.is_in(table.column("user_id"), value_set=pa.array(sorted(ids),
                                                                              pa.string())))
        return table.filter(pc.fill_null(keep, True))
    if "record" in table.column_names:
        records = table.column("record").to_pylist()
        return table.filter(pa.array([not _record_holds(r, raw_ids) for r in records]))
    return table


def _record_holds(record: str | None, raw_ids: set[str]) -> bool:
    if record is None:
        return False
    try:
        value = json.loads(record).get("user_id")
        return value is not None and str(value).strip(WS) in raw_ids
    except (ValueError, AttributeError):  # a malformed line, kept verbatim: any mention
        return any(i in record for i in raw_ids)


def rewrite_partition(publisher: Publisher, uri: str, ids: set[str], raw_ids: set[str],
                      today: str) -> int:
    """Republish the dataset at ``uri`` without the users; the rows removed (0: untouched)."""
    files = sorted(dataset_files(publisher, uri))
    tables, by_stem = {}, {}  # a CSV and its Parquet twin (segment.*) count their rows once
    for name in files:
        if name.endswith(".parquet"):
            table = _read_parquet(f"{uri}/{name}")
        elif name.endswith(".csv"):
            table = pacsv.read_csv(pa.BufferReader(storage.read_bytes(f"{uri}/{name}")),
                                   convert_options=pacsv.ConvertOptions(
                                       column_types={"user_id": pa.string()}))
        else:
            continue
        kept = filter_table(table, ids, raw_ids)
        if kept.num_rows != table.num_rows:
            tables[name] = kept
            stem = name.rsplit(".", 1)[0]
            by_stem[stem] = max(by_stem.get(stem, 0), table.num_rows - kept.num_rows)
    removed = sum(by_stem.values())
    if not tables:
        return 0
    with publisher.staged(uri) as staging:
        written: dict[str, bytes] = {}
        for name in files:
            if name in tables:
                written[name] = _encode(tables[name], name)
            elif not name.endswith(".crc") and os.path.basename(name) not in MANIFESTS:
                written[name] = storage.read_bytes(f"{uri}/{name}")
        for name in files:
            if os.path.basename(name) in MANIFESTS:
                document = json.loads(storage.read_bytes(f"{uri}/{name}"))
                written[name] = (json.dumps(_amend(document, written, tables, removed, today),
                                            indent=2) + "\n").encode()
        for name, data in written.items():
            storage.write_bytes(data, f"{staging}/{name}")
    return removed


def _read_parquet(uri: str) -> pa.Table:
    fs, path = storage.resolve(uri)
    return pq.read_table(path, filesystem=fs)


def _encode(table: pa.Table, name: str) -> bytes:
    sink = io.BytesIO()
    if name.endswith(".csv"):
        pacsv.write_csv(table, sink)
    else:
        pq.write_table(table, sink)
    return sink.getvalue()


def _amend(document: dict, written: dict[str, bytes], tables: dict, removed: int,
           today: str) -> dict:
    """A manifest after the erasure: its file checksums and its selected and control counts
    follow the new files, and an ``erasure`` entry says what went."""
    document = dict(document)
    if isinstance(document.get("files"), dict):
        document["files"] = {n: {"bytes": len(written[n]),
                                 "sha256": hashlib.sha256(written[n]).hexdigest()}
                             if n in written else v for n, v in document["files"].items()}
    counts = document.get("counts")
    if isinstance(counts, dict) and tables:  # a segment's: its files' and its control's rows
        counts = dict(counts)
        for name, table in tables.items():
            key = "control" if os.path.basename(name).startswith("control.") else "selected"
            if key in counts:
                counts[key] = table.num_rows
        document["counts"] = counts
    erasure = dict(document.get("erasure") or {})
    erasure["rows_removed"] = int(erasure.get("rows_removed", 0)) + removed
    erasure["last"] = today
    document["erasure"] = erasure
    return document


# --------------------------------------------------------------------------- the job


def partition_lock(config: PipelineConfig, key: str, uri: str, root: str, wait_s: float,
                   token: str):
    """The lock of the job that writes this partition (its ``ds=``/``dt=`` and campaign)."""
    parts = dict(p.split("=", 1) for p in uri[len(root):].strip("/").split("/") if "=" in p)
    day = parts.get("ds") or parts.get("dt")
    campaign = parts.get("campaign")
    scope = scope_name(DATASETS[key], dt.date.fromisoformat(day) if day else None,
                       campaign if key == "supports" else None)
    return locks.acquire(os.path.join(lock_folder(config), f"{scope}.lock"), token, scope,
                         wait_s)


def run(config: PipelineConfig, add: Sequence[str] = (), remove: Sequence[str] = (),
        wait_s: float = 0.0, spark_factory=None, today: dt.date | None = None) -> dict:
    """Update the erasure list, then erase the listed-now users from every derived dataset."""
    today_text = (today or dt.date.today()).isoformat()
    publisher = Publisher()
    table, added, taken_off = erasures.updated_list(
        erasures.read_list(config), map(erasures.id_digest, add),
        map(erasures.id_digest, remove), today_text)
    write_list(config, publisher, table)
    report = {"listed": table.num_rows, "added": added, "removed_from_list": taken_off,
              "datasets": {}}
    if not add:
        return report
    raw_ids = {i.strip(WS) for i in add}
    key = load_pseudonym_key(config.pseudonymisation)
    ids = {pseudonym(key, i) for i in raw_ids} if key is not None else set(raw_ids)
    attempt = current_attempt()
    token = attempt.run_id if attempt else "forget"
    heatmap_dates = set()
    for dataset in DATASETS:
        root = config.storage.uri(dataset).rstrip("/")
        entry = {"partitions": 0, "rewritten": 0, "rows_removed": 0}
        for uri in published_partitions(publisher, root):
            entry["partitions"] += 1
            with partition_lock(config, dataset, uri, root, wait_s, token):
                removed = rewrite_partition(publisher, uri, ids, raw_ids, today_text)
            if removed:
                entry["rewritten"] += 1
                entry["rows_removed"] += removed
                if dataset == "snapshots":
                    heatmap_dates.add(uri.rsplit("ds=", 1)[1].split("/")[0])
            log.info("%s: %s: %d row(s) removed", dataset, uri[len(root):] or "/", removed)
        report["datasets"][dataset] = entry
    report["datasets"]["heatmaps"] = rebuild_heatmaps(config, sorted(heatmap_dates),
                                                      spark_factory, wait_s, token)
    return report


def rebuild_heatmaps(config: PipelineConfig, dates: list[str], spark_factory, wait_s: float,
                     token: str) -> dict:
    """Rewrite the heatmaps of the snapshot dates whose snapshot lost rows."""
    publisher = Publisher()
    root = config.storage.uri("heatmaps").rstrip("/")
    due = [d for d in dates if publisher.exists(f"{root}/ds={d}/{SUCCESS}")]
    if not due:
        return {"rebuilt": []}
    from jobs import heatmaps
    spark = spark_factory()
    for day in due:
        scope = scope_name("heatmaps", dt.date.fromisoformat(day))
        with locks.acquire(os.path.join(lock_folder(config), f"{scope}.lock"), token, scope,
                           wait_s):
            heatmaps.run(spark, config, dt.date.fromisoformat(day))
    return {"rebuilt": due}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", default=None, metavar="FILE",
                        help="raw user ids to erase and keep out (one per line, or a CSV or "
                             "Parquet file with a user_id column)")
    parser.add_argument("--remove-from-list", default=None, metavar="FILE",
                        help="raw user ids to take off the erasure list (their data is not "
                             "restored; the next nightly runs take their new rows again)")


def _run(job: JobContext):
    if not job.args.users and not job.args.remove_from_list:
        raise UsageError("give --users FILE (erase) or --remove-from-list FILE")
    add = read_request(job.args.users) if job.args.users else []
    remove = read_request(job.args.remove_from_list) if job.args.remove_from_list else []
    return run(job.config, add, remove, job.args.wait_for_lock, lambda: job.spark)


JOB = Job(
    name="forget", run=_run, arguments=_arguments, uses_ds=False,
    description="Erase users from every derived dataset (events, rejects, snapshots, "
                "heatmaps, embeddings, supports, scores, segments) and keep them out of "
                "later nightly runs (the erasure list, read by the encoder).")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
