"""Benchmark: ``metaprofile import`` of a line-item export, in rows per second.

    .work/venv-jobs/bin/python bench/bench_import.py                  # 1,000,000 lines
    .work/venv-jobs/bin/python bench/bench_import.py --rows 200000

Writes a CSV in the layout of ``conf/examples/online_retail.yaml`` (five lines per invoice,
2 % cancellations, 20 % of lines without a customer, descriptions for the genre rules) under
``.work/bench/import``, then runs ``jobs/ingest.py`` with that config on Spark
``local[2]``: the genre rules, the drop condition, line-item merging and the write.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402

WORDS = ("MUG", "CUP", "TEAPOT", "CHRISTMAS BALL", "XMAS TREE", "FRAME", "LIGHTS", "BAG",
         "BOWL", "CANDLE")


def write_export(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    start = dt.datetime(2010, 10, 1, 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate",
                      "Price", "Customer ID", "Country"])
        for i in range(rows):
            invoice = i // 5
            customer = "" if rng.random() < 0.2 else str(12000 + invoice % 5000)
            when = start + dt.timedelta(minutes=(invoice * 7) % (300 * 24 * 60))
            quantity = rng.randint(1, 24)
            cancel = rng.random() < 0.02
            out.writerow([("C" if cancel else "") + str(500000 + invoice),
                          str(20000 + rng.randint(0, 3000)),
                          f"{rng.choice(WORDS)} {rng.randint(1, 50)}",
                          -quantity if cancel else quantity, when.strftime("%Y-%m-%d %H:%M:%S"),
                          f"{rng.uniform(0.3, 20):.2f}", customer, "United Kingdom"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    configure_environment()
    from jobs import ingest
    from jobs.spark import build_session
    from schemas.config import load_config

    work = PROJECT_ROOT / ".work" / "bench" / "import"
    started = time.perf_counter()
    write_export(work / "exports" / "online_retail.csv", args.rows)
    print(f"export: {args.rows:,} lines in {time.perf_counter() - started:.1f} s")
    config = load_config(PROJECT_ROOT / "conf" / "examples" / "online_retail.yaml", base_dir=work,
                         overrides=[f"storage.root={work / 'data'}"])
    spark = build_session("bench-import", args.master)
    started = time.perf_counter()
    report = ingest.run(spark, config, only=["purchases"])["purchases"]
    seconds = time.perf_counter() - started
    print(f"import: {report['rows_in']:,} lines in {seconds:.1f} s = "
          f"{report['rows_in'] / seconds:,.0f} lines/s on {args.master}; {report['rows_out']:,} "
          f"rows out, {report['rows_merged']:,} merged, dropped {report['rows_dropped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
