"""Benchmark: what one attempt's lock, staging sweep and fencing checks cost.

    .work/venv-jobs/bin/python bench/bench_lock.py
    .work/venv-jobs/bin/python bench/bench_lock.py --attempts 2000 --publishes 50

On the synthetic config's layout (every storage folder and its ``ds=`` partition listed by
the sweep), under ``.work/bench/lock``, it times in one run:

* an attempt's enter and exit (take the flock, write the holder, sweep every dataset folder
  of the config, release), against the same loop doing nothing;
* one fencing check (``Lock.check``: a stat and a read of the lock file), which every
  publish makes;

and prints each per attempt, and as a share of the shortest stage of a tiny nightly run
(``export``, about 1 s; ``--stage-seconds``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.workdir import PROJECT_ROOT, configure_environment, work_dir  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--stage-seconds", type=float, default=1.0,
                        help="the stage to compare with (default: export on the tiny world)")
    args = parser.parse_args(argv)
    configure_environment()
    from common import attempts
    from schemas.config import load_config

    root = work_dir() / "bench" / "lock"
    shutil.rmtree(root, ignore_errors=True)
    config = load_config(PROJECT_ROOT / "conf" / "synthetic.yaml",
                         overrides=[f"storage.root={root / 'data'}"])
    ds = dt.date(2026, 6, 30)
    for uri in config.storage.paths.values():
        os.makedirs(f"{uri}/ds={ds}", exist_ok=True)

    started = time.perf_counter()
    for _ in range(args.attempts):
        pass
    empty = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.attempts):
        with attempts.attempt(config, "export", ds):
            pass
    locked = time.perf_counter() - started
    with attempts.attempt(config, "export", ds) as run:
        started = time.perf_counter()
        for _ in range(args.checks):
            run.lock.check()
        check = (time.perf_counter() - started) / args.checks
    per_attempt = (locked - empty) / args.attempts
    folders = 2 * len(config.storage.paths)
    print(f"attempt enter+exit (lock, sweep of {folders} folders, release): "
          f"{per_attempt * 1e3:.3f} ms")
    print(f"fencing check per publish: {check * 1e6:.1f} us")
    print(f"share of a {args.stage_seconds:g} s stage: "
          f"{per_attempt / args.stage_seconds:.2%} (one attempt, plus one check per publish)")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
