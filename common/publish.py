"""Staged, atomic publication of datasets: stage beside the destination, then rename.

One :class:`Publisher` per run. Everything it writes goes to a hidden staging folder
``.staging-<run>`` beside the destination and is renamed into place with ``_SUCCESS``, so a
reader sees the old dataset or the new one, never a mix.
"""
from __future__ import annotations

import os
import shutil
import uuid

from common import storage
from common.errors import PipelineError


class PublishError(PipelineError):
    """A rename that the filesystem refused."""


class Publisher:
    """Stage directories beside their destination and rename them into place.

    Local paths use the operating system directly; other URIs (HDFS, object stores) go
    through Hadoop's FileSystem, one instance per URI root. On HDFS and local disk the final
    rename is atomic; on object stores readers must wait for ``_SUCCESS``. Staging names
    start with '.', which Spark's partition discovery ignores.
    """

    def __init__(self, spark):
        self.spark = spark
        self.run_id = uuid.uuid4().hex[:8]
        self._filesystems: dict = {}
        self._staging_folders: set[str] = set()

    is_local = staticmethod(storage.is_local)
    local = staticmethod(storage.local_path)

    def _hadoop(self, uri: str):
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(uri)
        root = uri.split("/", 3)[:3]
        key = "/".join(root)
        if key not in self._filesystems:
            conf = self.spark.sparkContext._jsc.hadoopConfiguration()
            self._filesystems[key] = path.getFileSystem(conf)
        return path, self._filesystems[key]

    def exists(self, uri: str) -> bool:
        if self.is_local(uri):
            return os.path.exists(self.local(uri))
        path, fs = self._hadoop(uri)
        return bool(fs.exists(path))

    def mkdirs(self, uri: str) -> None:
        if self.is_local(uri):
            os.makedirs(self.local(uri), exist_ok=True)
        else:
            path, fs = self._hadoop(uri)
            fs.mkdirs(path)

    def rename(self, source: str, target: str) -> None:
        if self.is_local(source):
            os.rename(self.local(source), self.local(target))
            return
        src, fs = self._hadoop(source)
        dst, _ = self._hadoop(target)
        if not fs.rename(src, dst):
            raise PublishError(f"cannot rename {source} to {target}")

    def delete(self, uri: str) -> None:
        if self.is_local(uri):
            shutil.rmtree(self.local(uri), ignore_errors=True)
        else:
            path, fs = self._hadoop(uri)
            fs.delete(path, True)

    def list_files(self, uri: str) -> list[tuple[str, int]] | None:
        """(name, size) of the files directly in folder ``uri``; None when it does not exist."""
        if self.is_local(uri):
            folder = self.local(uri)
            if not os.path.isdir(folder):
                return None
            with os.scandir(folder) as entries:
                return [(e.name, e.stat().st_size) for e in entries if e.is_file()]
        path, fs = self._hadoop(uri)
        if not fs.exists(path):
            return None
        return [(s.getPath().getName(), int(s.getLen())) for s in fs.listStatus(path)
                if s.isFile()]

    def list_folders(self, uri: str) -> list[str]:
        """Names of the folders directly in ``uri`` (none when it does not exist)."""
        if self.is_local(uri):
            folder = self.local(uri)
            if not os.path.isdir(folder):
                return []
            with os.scandir(folder) as entries:
                return [e.name for e in entries if e.is_dir()]
        path, fs = self._hadoop(uri)
        if not fs.exists(path):
            return []
        return [s.getPath().getName() for s in fs.listStatus(path) if s.isDirectory()]

    def read_text(self, uri: str) -> str | None:
        """The text of file ``uri``; None when it does not exist."""
        if self.is_local(uri):
            try:
                with open(self.local(uri), encoding="utf-8") as fh:
                    return fh.read()
            except FileNotFoundError:
                return None
        path, fs = self._hadoop(uri)
        if not fs.exists(path):
            return None
        stream = fs.open(path)
        try:
            jvm = self.spark.sparkContext._jvm
            return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write_text(self, uri: str, text: str) -> None:
        if self.is_local(uri):
            with open(self.local(uri), "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        path, fs = self._hadoop(uri)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(text.encode()))
        finally:
            stream.close()

    def staging(self, uri: str) -> str:
        """A staging location for ``uri``: inside a hidden sibling folder of this run.

        The folder's name hides it from readers of the parent; the staged dataset itself
        keeps a plain name, so Spark can read it back before it is published.
        """
        parent, name = uri.rstrip("/").rsplit("/", 1)
        folder = f"{parent}/.staging-{self.run_id}"
        self._staging_folders.add(folder)
        return f"{folder}/{name}"

    def cleanup(self) -> None:
        """Remove this run's staging folders (empty after a successful publish)."""
        for folder in sorted(self._staging_folders):
            self.delete(folder)
        self._staging_folders.clear()

    def publish(self, staging: str, final: str) -> None:
        """Replace ``final`` by ``staging`` (which gets ``_SUCCESS`` first)."""
        self.write_text(f"{staging}/_SUCCESS", "")
        self.mkdirs(final.rstrip("/").rsplit("/", 1)[0])
        retired = None
        if self.exists(final):
            retired = self.staging(final) + ".replaced"
            self.rename(final, retired)
        self.rename(staging, final)
        if retired is not None:
            self.delete(retired)
