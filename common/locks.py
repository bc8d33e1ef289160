"""One attempt at a time: an exclusive lock file per ``(job, ds)``, with a fencing token.

The lock is an advisory ``flock`` on ``<locks>/<scope>.lock``. The kernel drops it when the
holder dies, however it dies (SIGKILL included), so a killed attempt never leaves a stale
lock and its retry need not guess whether the holder is alive. The file itself stays; its
content names the current holder (host, pid, start time, token) for the error message of
an attempt that finds it held.

The token is the holder's run id, written into the file once the lock is taken.
:meth:`Lock.check` (called by every publish) re-reads it: if someone removed or replaced the
lock file, so that a second attempt could take a lock of its own on a new file, the first
attempt stops before it publishes instead of publishing a mix.

``flock`` works between processes of one machine (and on NFS v4 between machines). For
storage on an object store, see ``docs/reliability.md``: the same token is held in a lease
object created with a conditional write and checked the same way before each publish.
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass

from common.errors import PipelineError


def add_lock_argument(parser) -> None:
    """``--wait-for-lock SECONDS``, for every command that runs as an attempt."""
    parser.add_argument("--wait-for-lock", type=float, default=0.0, metavar="SECONDS",
                        help="when another attempt of this job and date is running, wait up "
                             "to SECONDS for it instead of failing at once (default: 0)")


class LockHeldError(PipelineError):
    """Another attempt of the same job and date holds the lock."""


class LockLostError(PipelineError):
    """The lock file changed under a running attempt: it must not publish."""


@dataclass
class Lock:
    path: str
    token: str
    fd: int
    waited_s: float

    def check(self) -> None:
        """Raise :class:`LockLostError` unless the lock file is still ours."""
        try:
            same_file = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
            holder = _read_holder(self.path)
        except FileNotFoundError:
            same_file, holder = False, {}
        if not same_file or holder.get("token") != self.token:
            raise LockLostError(
                f"lock {self.path} was removed or taken over (now held by "
                f"{_describe(holder)}); this attempt stops without publishing. Do not "
                f"delete lock files of running jobs.")

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def acquire(path: str, token: str, scope: str, wait_s: float = 0.0,
            poll_s: float = 0.2) -> Lock:
    """Take the lock at ``path``, waiting up to ``wait_s`` seconds for its holder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    started = time.monotonic()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() - started >= wait_s:
                holder = _read_holder(path)
                raise LockHeldError(
                    f"another attempt of {scope} is running ({_describe(holder)}; lock "
                    f"{path}). Wait for it to finish, stop it, or pass --wait-for-lock "
                    f"SECONDS to wait for it.")
            time.sleep(poll_s)
        holder = {"token": token, "scope": scope, "host": socket.gethostname(),
                  "pid": os.getpid(),
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return Lock(path, token, fd, time.monotonic() - started)


def _read_holder(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        holder = json.loads(text) if text.strip() else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')}, token {holder.get('token')}")
