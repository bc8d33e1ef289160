"""Named crash points, for the fault-injection suite (``tests/test_faults.py``).

A crash point is a place where a stage may die: before its first write, with its data
staged, between the two renames of a publish, after a publish, after its last write. When
``METAPROFILE_CRASH_AT`` names it, the process ends there at once with ``os._exit(137)``,
the status of a SIGKILL: no ``finally`` block, no atexit handler and no flush runs, as when
the OOM killer or a pre-emption takes the process.

``METAPROFILE_CRASH_AT=<job>:<point>[:<n>]`` dies at the ``n``-th time (default 1) that job
``<job>`` passes ``<point>``, e.g. ``encode:published:2`` after encode's second publish.
The job name keeps a crash in one stage when a whole chain (a DAG run) inherits the
variable. Unset, a crash point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import sys

ENV = "METAPROFILE_CRASH_AT"
EXIT_STATUS = 137  # 128 + SIGKILL, what a shell reports for a killed process

# Where the shared plumbing calls crash_point (stages add their own: train's "checkpoint").
POINTS = ("start",      # the attempt holds its lock; nothing written yet
          "staged",     # a dataset is complete in its staging folder, not yet published
          "swapped",    # a publish has moved the old dataset aside, not the new one in
          "published",  # a publish is done (the n-th of the attempt)
          "done")       # the stage's work is done; only its report is left to print

_passed: dict[tuple[str, str], int] = {}
_job: list[str] = []  # the job whose crash points are armed (set by the attempt)


def arm(job: str) -> None:
    """Name the job whose crash points count from now on (one job per process)."""
    _job[:] = [job]
    _passed.clear()


def target() -> tuple[str, str, int] | None:
    """``(job, point, n)`` from the environment, or None when no crash is asked for."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected <job>:<point>[:<n>], e.g. encode:staged:1")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 1


def crash_point(point: str) -> None:
    """Die here with status 137 if ``METAPROFILE_CRASH_AT`` names this job and point."""
    wanted = target()
    if wanted is None or not _job or wanted[0] != _job[0] or wanted[1] != point:
        return
    key = (_job[0], point)
    _passed[key] = _passed.get(key, 0) + 1
    if _passed[key] == wanted[2]:
        sys.stderr.write(f"crash point {_job[0]}:{point}:{wanted[2]}: exiting with "
                         f"{EXIT_STATUS}\n")
        sys.stderr.flush()
        os._exit(EXIT_STATUS)
