"""URI-addressed storage for the non-Spark tools (generator, adapters, manifests).

Local paths and ``file://`` URIs go to the local disk; ``s3a://`` is mapped to Arrow's S3
filesystem and ``hdfs://`` to its HDFS filesystem, so the same config works on a cluster.
Directory outputs are written to a temporary sibling and renamed into place on local disk,
so readers never see a half-written dataset; every finished dataset gets a ``_SUCCESS``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SUCCESS = "_SUCCESS"


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The Arrow filesystem and in-filesystem path for a URI or local path."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    scheme = uri.split("://", 1)[0]
    if scheme == "s3a":
        uri = "s3://" + uri[len("s3a://"):]
    return pafs.FileSystem.from_uri(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def write_parquet(table: pa.Table, uri: str, **options: Any) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, **options)


def write_bytes(data: bytes, uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as src:
        return src.read()


def write_json(obj: Any, uri: str) -> None:
    write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), uri)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


@contextlib.contextmanager
def atomic_directory(uri: str) -> Iterator[str]:
    """Yield a staging URI; on success it replaces ``uri`` whole and gains ``_SUCCESS``.

    On local disk the swap is a rename, so readers see the old or the new dataset, never a
    mix. On object stores (no atomic rename) the old data is deleted first and ``_SUCCESS``
    is written last: readers must check for the marker.
    """
    if not is_local(uri):
        fs, path = resolve(uri)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
        yield uri
        write_bytes(b"", join(uri, SUCCESS))
        return
    target = local_path(uri)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        yield staging
        open(os.path.join(staging, SUCCESS), "wb").close()
        retired = None
        if os.path.exists(target):
            retired = f"{staging}.old"
            os.rename(target, retired)
        os.rename(staging, target)
        if retired:
            shutil.rmtree(retired)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
