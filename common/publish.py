"""Staged, atomic publication: the one way any stage makes a dataset or artifact visible.

Everything a run writes goes first to a hidden staging folder ``.staging-<run>`` beside its
destination; :meth:`Publisher.publish` then gives it ``_SUCCESS`` and renames it into place,
so a reader sees the old dataset or the new one, never a mix. The staging folder's name
starts with '.', which Spark's partition discovery and the readers here ignore.

Three filesystems sit behind one small interface (:class:`Filesystem`):

* local paths and ``file://`` URIs: the operating system, where rename is atomic;
* other URIs in a Spark driver: Hadoop's FileSystem (HDFS, s3a, gs, abfs), through the
  session's JVM, so the cluster's credentials and settings apply;
* other URIs elsewhere: Arrow's filesystems (``s3a://`` is read as ``s3://``).

Where rename is not atomic (object stores) the old dataset is removed first and
``_SUCCESS`` is written after the move: readers must wait for the marker.

Inside an attempt (:func:`common.attempts.attempt`: one job and date, under its lock) the
staging folders are named ``.staging-<scope>--<run>``, the publish checks the lock's fencing
token first, and the first staging in a folder removes what killed attempts of the same
scope left there (:func:`sweep`). A killed publish that had already moved the old dataset
aside gets it back.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from common import storage
from common.errors import PipelineError
from common.faults import crash_point

SUCCESS = storage.SUCCESS
ATOMIC_RENAME_SCHEMES = ("file", "hdfs")
STAGING_PREFIX = ".staging-"
SCOPE_SEPARATOR = "--"  # between an attempt's scope and its run id (a scope has no "--")
RETIRED_SUFFIX = ".replaced"  # the old dataset, moved aside during a publish


@dataclass
class AttemptScope:
    """What the publisher needs of the running attempt (set by :mod:`common.attempts`)."""

    scope: str  # e.g. "encode-2026-06-30": one job and date
    run_id: str
    fence: Callable[[], None]  # raises unless the attempt still holds its lock
    swept: list[str] = field(default_factory=list)  # stale staging folders removed
    restored: list[str] = field(default_factory=list)  # datasets a killed publish had moved
    seen_parents: set[str] = field(default_factory=set)

    @property
    def prefix(self) -> str:
        return f"{STAGING_PREFIX}{self.scope}{SCOPE_SEPARATOR}"


_attempt: list[AttemptScope] = []  # at most one: a process runs one attempt at a time


def enter_attempt(scope: AttemptScope) -> None:
    _attempt[:] = [scope]


def leave_attempt() -> None:
    _attempt.clear()


def current_attempt() -> AttemptScope | None:
    return _attempt[0] if _attempt else None


class PublishError(PipelineError):
    """A rename that the filesystem refused."""


class Filesystem(Protocol):
    """What publishing needs of a filesystem; every ``uri`` is absolute."""

    def exists(self, uri: str) -> bool: ...
    def mkdirs(self, uri: str) -> None: ...
    def rename(self, source: str, target: str) -> None: ...
    def delete(self, uri: str) -> None: ...  # recursive; nothing to delete is fine
    def list_files(self, uri: str) -> list[tuple[str, int]] | None: ...
    def list_folders(self, uri: str) -> list[str]: ...
    def read_bytes(self, uri: str) -> bytes | None: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...


class LocalFilesystem:
    """Local disk, through the operating system."""

    def exists(self, uri: str) -> bool:
        return os.path.exists(storage.local_path(uri))

    def mkdirs(self, uri: str) -> None:
        os.makedirs(storage.local_path(uri), exist_ok=True)

    def rename(self, source: str, target: str) -> None:
        os.rename(storage.local_path(source), storage.local_path(target))

    def delete(self, uri: str) -> None:
        path = storage.local_path(uri)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)

    def list_files(self, uri: str) -> list[tuple[str, int]] | None:
        folder = storage.local_path(uri)
        if not os.path.isdir(folder):
            return None
        with os.scandir(folder) as entries:
            return [(e.name, e.stat().st_size) for e in entries if e.is_file()]

    def list_folders(self, uri: str) -> list[str]:
        folder = storage.local_path(uri)
        if not os.path.isdir(folder):
            return []
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.is_dir()]

    def read_bytes(self, uri: str) -> bytes | None:
        try:
            with open(storage.local_path(uri), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = storage.local_path(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


class ArrowFilesystem:
    """Object stores and HDFS through ``pyarrow.fs`` (for tools without a Spark session)."""

    def _info(self, uri: str):
        fs, path = storage.resolve(uri)
        return fs, path, fs.get_file_info(path)

    def exists(self, uri: str) -> bool:
        import pyarrow.fs as pafs
        return self._info(uri)[2].type != pafs.FileType.NotFound

    def mkdirs(self, uri: str) -> None:
        fs, path = storage.resolve(uri)
        fs.create_dir(path, recursive=True)

    def rename(self, source: str, target: str) -> None:
        fs, src = storage.resolve(source)
        _, dst = storage.resolve(target)
        fs.move(src, dst)

    def delete(self, uri: str) -> None:
        import pyarrow.fs as pafs
        fs, path, info = self._info(uri)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)

    def _children(self, uri: str):
        import pyarrow.fs as pafs
        fs, path, info = self._info(uri)
        if info.type != pafs.FileType.Directory:
            return None
        return fs.get_file_info(pafs.FileSelector(path))

    def list_files(self, uri: str) -> list[tuple[str, int]] | None:
        import pyarrow.fs as pafs
        children = self._children(uri)
        if children is None:
            return None
        return [(c.base_name, int(c.size)) for c in children if c.type == pafs.FileType.File]

    def list_folders(self, uri: str) -> list[str]:
        import pyarrow.fs as pafs
        return [c.base_name for c in self._children(uri) or ()
                if c.type == pafs.FileType.Directory]

    def read_bytes(self, uri: str) -> bytes | None:
        return storage.read_bytes(uri) if self.exists(uri) else None

    def write_bytes(self, uri: str, data: bytes) -> None:
        storage.write_bytes(data, uri)


class HadoopFilesystem:
    """Any URI Hadoop can open, through a Spark session's JVM (one instance per URI root)."""

    def __init__(self, spark):
        self.spark = spark
        self._instances: dict[str, object] = {}

    def _resolve(self, uri: str):
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(uri)
        root = "/".join(uri.split("/", 3)[:3])
        if root not in self._instances:
            conf = self.spark.sparkContext._jsc.hadoopConfiguration()
            self._instances[root] = path.getFileSystem(conf)
        return path, self._instances[root]

    def exists(self, uri: str) -> bool:
        path, fs = self._resolve(uri)
        return bool(fs.exists(path))

    def mkdirs(self, uri: str) -> None:
        path, fs = self._resolve(uri)
        fs.mkdirs(path)

    def rename(self, source: str, target: str) -> None:
        src, fs = self._resolve(source)
        dst, _ = self._resolve(target)
        if not fs.rename(src, dst):
            raise PublishError(f"cannot rename {source} to {target}")

    def delete(self, uri: str) -> None:
        path, fs = self._resolve(uri)
        fs.delete(path, True)

    def list_files(self, uri: str) -> list[tuple[str, int]] | None:
        path, fs = self._resolve(uri)
        if not fs.exists(path):
            return None
        return [(s.getPath().getName(), int(s.getLen())) for s in fs.listStatus(path)
                if s.isFile()]

    def list_folders(self, uri: str) -> list[str]:
        path, fs = self._resolve(uri)
        if not fs.exists(path):
            return []
        return [s.getPath().getName() for s in fs.listStatus(path) if s.isDirectory()]

    def read_bytes(self, uri: str) -> bytes | None:
        path, fs = self._resolve(uri)
        if not fs.exists(path):
            return None
        stream = fs.open(path)
        try:
            jvm = self.spark.sparkContext._jvm
            return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write_bytes(self, uri: str, data: bytes) -> None:
        path, fs = self._resolve(uri)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()


def atomic_rename(uri: str) -> bool:
    """Whether a rename at ``uri`` is atomic (local disk and HDFS; not object stores)."""
    return storage.is_local(uri) or uri.split("://", 1)[0] in ATOMIC_RENAME_SCHEMES


class Publisher:
    """One run's staging folders and publications.

    ``spark`` (optional) routes non-local URIs through Hadoop; without it they go through
    Arrow. ``run_id`` names this run's staging folders.
    """

    def __init__(self, spark=None):
        self.attempt = current_attempt()
        self.run_id = self.attempt.run_id if self.attempt else uuid.uuid4().hex[:8]
        self.prefix = self.attempt.prefix if self.attempt else STAGING_PREFIX
        self._local = LocalFilesystem()
        self._remote: Filesystem = HadoopFilesystem(spark) if spark is not None \
            else ArrowFilesystem()
        self._staging_folders: set[str] = set()

    def filesystem(self, uri: str) -> Filesystem:
        return self._local if storage.is_local(uri) else self._remote

    # The filesystem operations, routed by URI.
    def exists(self, uri: str) -> bool:
        return self.filesystem(uri).exists(uri)

    def mkdirs(self, uri: str) -> None:
        self.filesystem(uri).mkdirs(uri)

    def rename(self, source: str, target: str) -> None:
        self.filesystem(source).rename(source, target)

    def delete(self, uri: str) -> None:
        self.filesystem(uri).delete(uri)

    def list_files(self, uri: str) -> list[tuple[str, int]] | None:
        """(name, size) of the files directly in folder ``uri``; None when it does not exist."""
        return self.filesystem(uri).list_files(uri)

    def list_folders(self, uri: str) -> list[str]:
        """Names of the folders directly in ``uri`` (none when it does not exist)."""
        return self.filesystem(uri).list_folders(uri)

    def read_text(self, uri: str) -> str | None:
        """The text of file ``uri``; None when it does not exist."""
        data = self.filesystem(uri).read_bytes(uri)
        return None if data is None else data.decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.filesystem(uri).write_bytes(uri, text.encode("utf-8"))

    # Staging and publishing.
    def staging(self, uri: str) -> str:
        """A staging location for ``uri``: inside a hidden sibling folder of this run.

        The folder's name hides it from readers of the parent; the staged dataset itself
        keeps a plain name, so Spark can read it back before it is published.
        """
        parent, name = uri.rstrip("/").rsplit("/", 1)
        if self.attempt is not None and parent not in self.attempt.seen_parents:
            sweep(self, parent, self.attempt)
        folder = f"{parent}/{self.prefix}{self.run_id}"
        self._staging_folders.add(folder)
        return f"{folder}/{name}"

    def cleanup(self) -> None:
        """Remove this run's staging folders (empty after a successful publish)."""
        for folder in sorted(self._staging_folders):
            self.delete(folder)
        self._staging_folders.clear()

    def publish(self, staging: str, final: str) -> None:
        """Replace ``final`` by ``staging``, which gets ``_SUCCESS``."""
        crash_point("staged")
        if self.attempt is not None:
            self.attempt.fence()
        self.mkdirs(final.rstrip("/").rsplit("/", 1)[0])
        if not atomic_rename(final):  # object stores: remove, move, then mark
            self.delete(final)
            crash_point("swapped")
            self.rename(staging, final)
            self.write_text(f"{final}/{SUCCESS}", completion_record(self, final))
            crash_point("published")
            return
        self.write_text(f"{staging}/{SUCCESS}", completion_record(self, staging))
        retired = None
        if self.exists(final):
            retired = self.staging(final) + RETIRED_SUFFIX
            self.rename(final, retired)
            crash_point("swapped")
        self.rename(staging, final)
        if retired is not None:
            self.delete(retired)
        crash_point("published")

    @contextlib.contextmanager
    def staged(self, uri: str) -> Iterator[str]:
        """Yield a staging location for ``uri``; publish it there when the block succeeds.

        On failure the staging is removed and ``uri`` keeps its old content.
        """
        staging = self.staging(uri)
        self.mkdirs(staging)
        try:
            yield staging
            self.publish(staging, uri)
        finally:
            self.cleanup()

    def replace_file(self, uri: str, data: bytes) -> None:
        """Replace the single file ``uri`` whole (a pointer, a manifest)."""
        if not atomic_rename(uri):  # object stores replace one object atomically
            self.filesystem(uri).write_bytes(uri, data)
            return
        staging = self.staging(uri)
        try:
            self.filesystem(staging).write_bytes(staging, data)
            self.mkdirs(uri.rstrip("/").rsplit("/", 1)[0])
            crash_point("staged")
            if self.attempt is not None:
                self.attempt.fence()
            if storage.is_local(uri):
                os.replace(storage.local_path(staging), storage.local_path(uri))
            else:  # HDFS: rename does not overwrite
                self.delete(uri)
                self.rename(staging, uri)
            crash_point("published")
        finally:
            self.cleanup()


def dataset_files(publisher: Publisher, uri: str, prefix: str = "") -> dict[str, int]:
    """``{relative path: bytes}`` of every file under folder ``uri``, but ``_SUCCESS``."""
    files = {f"{prefix}{name}": size for name, size in publisher.list_files(uri) or ()
             if f"{prefix}{name}" != SUCCESS}
    for folder in publisher.list_folders(uri):
        files.update(dataset_files(publisher, f"{uri}/{folder}", f"{prefix}{folder}/"))
    return files


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def completion_record(publisher: Publisher, uri: str) -> str:
    """The text of a dataset's ``_SUCCESS``: each file's size, and on local disk its SHA-256
    (object stores keep their own checksums; reading every object back would double the
    cost of a publish there)."""
    files: dict[str, dict] = {}
    for name, size in sorted(dataset_files(publisher, uri).items()):
        files[name] = {"bytes": size}
        if storage.is_local(uri):
            files[name]["sha256"] = _sha256(storage.local_path(f"{uri}/{name}"))
    return json.dumps({"files": files}, indent=1) + "\n"


def verify(publisher: Publisher, uri: str) -> list[str]:
    """What is wrong with the published dataset at ``uri`` (nothing: an empty list).

    Checks its ``_SUCCESS`` record against the files: none missing, none of another size or
    checksum, none unlisted. A ``_SUCCESS`` without a record (written before records) only
    says the dataset was published.
    """
    text = publisher.read_text(f"{uri}/{SUCCESS}")
    if text is None:
        return [f"{uri}: no {SUCCESS}: not published (a killed or running attempt?)"]
    if not text.strip():
        return []
    try:
        listed = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        return [f"{uri}/{SUCCESS}: not a completion record"]
    present = dataset_files(publisher, uri)
    problems = [f"{uri}/{name}: listed in {SUCCESS} but missing"
                for name in sorted(set(listed) - set(present))]
    problems += [f"{uri}/{name}: not listed in {SUCCESS}"
                 for name in sorted(set(present) - set(listed))]
    for name in sorted(set(listed) & set(present)):
        expected = listed[name]
        if present[name] != expected.get("bytes"):
            problems.append(f"{uri}/{name}: {present[name]} bytes, {SUCCESS} says "
                            f"{expected.get('bytes')}")
        elif "sha256" in expected and storage.is_local(uri) and \
                _sha256(storage.local_path(f"{uri}/{name}")) != expected["sha256"]:
            problems.append(f"{uri}/{name}: checksum differs from {SUCCESS}'s")
    return problems


def is_staging_of(name: str, scope: AttemptScope) -> bool:
    """Whether folder ``name`` is a staging folder of an attempt of ``scope``'s job and date."""
    return name.startswith(scope.prefix) and SCOPE_SEPARATOR not in name[len(scope.prefix):]


def sweep(publisher: Publisher, parent: str, scope: AttemptScope) -> None:
    """Remove the staging folders that killed attempts of ``scope`` left in ``parent``.

    Only safe under the scope's lock: no other live attempt of the same job and date can own
    them. A dataset that a killed publish had moved aside (``<name>.replaced``) and not yet
    replaced is moved back first, so nothing that was published is lost.
    """
    scope.seen_parents.add(parent)
    ours = f"{scope.prefix}{scope.run_id}"
    for name in publisher.list_folders(parent):
        if name == ours or not is_staging_of(name, scope):
            continue
        folder = f"{parent}/{name}"
        for entry in publisher.list_folders(folder):
            if entry.endswith(RETIRED_SUFFIX):
                original = f"{parent}/{entry[:-len(RETIRED_SUFFIX)]}"
                if not publisher.exists(original):
                    publisher.rename(f"{folder}/{entry}", original)
                    scope.restored.append(original)
        publisher.delete(folder)
        scope.swept.append(folder)
