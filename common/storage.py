"""URI-addressed storage for the non-Spark tools (generator, adapters, manifests).

Local paths and ``file://`` URIs go to the local disk; ``s3a://`` is mapped to Arrow's S3
filesystem and ``hdfs://`` to its HDFS filesystem, so the same config works on a cluster.
Directory outputs are published through :class:`common.publish.Publisher` (staged, then
renamed into place with ``_SUCCESS``), never written here in place.
"""
from __future__ import annotations

import json
import os
from typing import Any

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
