"""Benchmark: synthetic generator throughput and peak memory.

    .work/venv-jobs/bin/python bench/bench_generate.py --users 100000
    .work/venv-jobs/bin/python bench/bench_generate.py --users 1000000   # ~120 M rows

Prints rows/s (purchases + points, bad rows included) and the process's peak resident
memory, which stays flat in the number of days because one day is held at a time.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import configure_environment  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args, _ = parser.parse_known_args(argv)
    work = configure_environment()
    from metaprofile.datasets.synthetic import GeneratorOptions, generate
    from schemas.config import load_config

    root = work / "bench" / f"generate-{args.users}-{args.format}"
    config = load_config(Path(__file__).resolve().parent.parent / "conf" / "synthetic.yaml",
                         overrides=[f"storage.root={root}"])
    started = time.perf_counter()
    report = generate(config, GeneratorOptions(users=args.users, format=args.format),
                      progress=lambda message: print(f"  {message}", flush=True))
    seconds = time.perf_counter() - started
    rows = sum(c["rows_written"] for c in report["sources"].values())
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"generator: {args.users:,} users, {rows:,} raw rows ({args.format}) in {seconds:.1f} s"
          f" = {rows / seconds:,.0f} rows/s (incl. labels and ground truth); "
          f"{size / 2**20:,.0f} MiB on disk; peak RSS {peak:,.0f} MiB; cpus {os.cpu_count()}")
    if not args.keep:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
