"""An attempt: one run of one job for one date, under that ``(job, ds)``'s lock.

Every stage that writes (the runner's jobs, ``train``, ``publish``, ``forget``) runs inside
:func:`attempt`, which

1. takes the lock ``<locks>/<job>-<ds>[-<key>].lock`` (:mod:`common.locks`), or fails with
   one line naming the holder, so a zombie attempt and its retry never publish a mix;
2. removes the staging folders that killed attempts of the same job and date left beside
   the datasets of the config (and, on first use, beside any other destination), moving
   back a dataset that a killed publish had moved aside (:func:`common.publish.sweep`);
3. names this attempt's staging folders ``.staging-<scope>--<run>`` and makes every
   publish check the lock's fencing token first;
4. arms the crash points of :mod:`common.faults` for this job.

The locks live in ``<storage.root>/_locks`` when the storage root is on local disk, else
in ``$METAPROFILE_WORK_DIR/locks`` (one machine; see ``docs/reliability.md`` for object
stores).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import uuid
from dataclasses import dataclass
from typing import Iterator

from common import faults, locks, storage
from common.publish import AttemptScope, Publisher, enter_attempt, leave_attempt, sweep
from common.workdir import work_dir
from schemas.config import PipelineConfig

log = logging.getLogger(__name__)

LOCKS_FOLDER = "_locks"


@dataclass
class Attempt:
    job: str
    scope: str
    lock: locks.Lock
    publishing: AttemptScope

    def report(self) -> dict:
        """What the attempt recovered and how long it waited, for the job's report."""
        return {"scope": self.scope, "run_id": self.publishing.run_id,
                "lock": self.lock.path, "lock_wait_seconds": round(self.lock.waited_s, 3),
                "stale_stagings_removed": len(self.publishing.swept),
                "datasets_restored": list(self.publishing.restored)}


def scope_name(job: str, ds: dt.date | None, key: str | None = None) -> str:
    """``<job>-<ds>[-<key>]``, in characters that are safe in a file name (no ``--``)."""
    parts = [job, ds.isoformat() if ds else "any"]
    if key:
        parts.append(re.sub(r"[^A-Za-z0-9_.=]", "_", key))
    return "-".join(parts)


def lock_folder(config: PipelineConfig) -> str:
    root = config.storage.root
    if storage.is_local(root):
        return os.path.join(storage.local_path(root), LOCKS_FOLDER)
    return os.path.join(str(work_dir()), "locks")


def dataset_parents(config: PipelineConfig, ds: dt.date | None) -> list[str]:
    """Where this config's stages stage their datasets: each dataset's folder and its
    ``ds=`` partition (per-campaign datasets stage inside the partition)."""
    parents = []
    for uri in config.storage.paths.values():
        parents.append(uri.rstrip("/"))
        if ds is not None:
            parents.append(f"{uri.rstrip('/')}/ds={ds.isoformat()}")
    return parents


@contextlib.contextmanager
def attempt(config: PipelineConfig, job: str, ds: dt.date | None, key: str | None = None,
            wait_s: float = 0.0) -> Iterator[Attempt]:
    """Run the block as the only attempt of ``(job, ds, key)``; see the module docstring."""
    scope = scope_name(job, ds, key)
    run_id = uuid.uuid4().hex[:8]
    lock = locks.acquire(os.path.join(lock_folder(config), f"{scope}.lock"), run_id, scope,
                         wait_s)
    publishing = AttemptScope(scope, run_id, lock.check)
    try:
        faults.arm(job)
        enter_attempt(publishing)
        publisher = Publisher()
        for parent in dataset_parents(config, ds):
            sweep(publisher, parent, publishing)
        if publishing.swept:
            log.warning("%s: removed %d staging folder(s) left by killed attempts%s", scope,
                        len(publishing.swept),
                        f"; restored {', '.join(publishing.restored)}"
                        if publishing.restored else "")
        faults.crash_point("start")
        yield Attempt(job, scope, lock, publishing)
        faults.crash_point("done")
    finally:
        leave_attempt()
        lock.release()
