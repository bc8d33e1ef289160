"""Does the Complete Journey mapping land what the bespoke converter it replaced landed?

The converter (794 lines of pandas) was removed after commit 8fb4017. Fetch it from git and
compare, on the full data set or a slice::

    git show 8fb4017:metaprofile/datasets/completejourney.py > /tmp/old_completejourney.py
    .work/venv-jobs/bin/python bench/cj_equivalence.py --old-converter /tmp/old_completejourney.py
    .work/venv-jobs/bin/python bench/cj_equivalence.py --old-converter ... --households 25

Both write to their own storage root under .work/bench/cj-equivalence/. The script prints,
per dataset (labels, seeds, registry, demographics), the rows and a digest of the sorted
rows of each side, then the same for the events each side's raw logs encode to over the
whole window, and the wall time of each side. It exits 1 when anything differs.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.config import load_config  # noqa: E402

DATASETS = ("source_labels", "target_labels", "campaign_seeds", "campaign_registry",
            "demographics")


def digest(rows) -> tuple[int, str]:
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("old_completejourney", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up here
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-converter", required=True,
                        help="the removed metaprofile/datasets/completejourney.py (git show)")
    parser.add_argument("--households", type=int, default=None, help="a slice (default: all)")
    args = parser.parse_args()
    import pyarrow.parquet as pq

    from jobs import encode
    from jobs.spark import build_session
    from metaprofile.datasets.completejourney import land

    old = load_module(args.old_converter)
    spark = build_session("cj-equivalence", "local[2]")
    base = ROOT / ".work" / "bench" / "cj-equivalence"
    results, differs = {}, False
    for side in ("converter", "mapping"):
        config = load_config(ROOT / "conf" / "completejourney.yaml",
                             overrides=[f"storage.root={base / side}"])
        started = time.perf_counter()
        if side == "converter":
            old.convert(config, households=args.households, progress=lambda _: None)
        else:
            land(config, households=args.households, spark=spark, progress=lambda _: None)
        seconds = time.perf_counter() - started
        out = {key: digest(pq.read_table(config.storage.uri(key)).to_pylist())
               for key in DATASETS}
        encode.run(spark, config, config.window.end, full=True, snapshot=False)
        events = spark.read.parquet(config.storage.uri("events")).select(
            "user_id", "modality", "date", "hour", "channel", "value").collect()
        out["events"] = digest([list(r) for r in events])
        results[side] = out
        print(f"{side}: landed in {seconds:.1f} s", flush=True)
    for key in (*DATASETS, "events"):
        same = results["converter"][key] == results["mapping"][key]
        differs |= not same
        print(f"{key:<18} converter {results['converter'][key][0]:>8,} "
              f"{results['converter'][key][1]}  mapping {results['mapping'][key][0]:>8,} "
              f"{results['mapping'][key][1]}  {'equal' if same else 'DIFFERENT'}")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
