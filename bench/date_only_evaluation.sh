#!/usr/bin/env bash
# Does the whole training side run on date-only logs? The synthetic data set (300 users),
# every raw event time cut to its date, then check, encode, heatmaps, a short training run
# and `evaluate --quick` with raw.event_time_precision: day. Prints each step's last lines,
# the encoder's rejects by reason, and the wall time. Run after `./run setup`:
#   bash bench/date_only_evaluation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
M=.work/venv-jobs/bin/metaprofile
PY=.work/venv-jobs/bin/python
R="$PWD/.work/bench/date-only"; rm -rf "$R"
O=(--config conf/synthetic.yaml --set "storage.root=$R" --set raw.event_time_precision=day
   --set raw.day_hour=12 --set raw.max_reject_ratio=0.5)
t0=$(date +%s)
$M generate --users 300 "${O[@]}" | tail -1
$PY - "$R" <<'PY'
import glob, sys
import pyarrow.compute as pc
import pyarrow.parquet as pq
files = glob.glob(f"{sys.argv[1]}/raw_*/dt=*/*.parquet")
for f in files:
    t = pq.read_table(f)
    i = t.schema.get_field_index("event_time")
    pq.write_table(t.set_column(i, "event_time", pc.utf8_slice_codeunits(t["event_time"], 0, 10)), f)
print(f"event times cut to their dates in {len(files)} files")
PY
$M check "${O[@]}" | tail -1
$M encode --full "${O[@]}" > /dev/null
$M heatmaps "${O[@]}" > /dev/null
$M train --steps 20 --batch-size 16 --validate-every 0 --width 0.125 --embedding-dim 16 \
  --version d1 --work-dir "$R/train" "${O[@]}" 2>&1 | tail -1
$M evaluate --model "$R/models/d1" --out "$R/eval" --quick "${O[@]}" 2>&1 | tail -1
$PY - "$R" <<'PY'
import collections, glob, json, sys
rejected = collections.Counter()
for f in glob.glob(f"{sys.argv[1]}/events/dt=*/_manifest.json"):
    for source, counts in json.load(open(f))["sources"].items():
        for reason, n in counts["rows_rejected"].items():
            rejected[f"{source}:{reason}"] += n
print("rejected by reason:", dict(sorted(rejected.items())))
PY
echo "date-only chain: $(( $(date +%s) - t0 )) s"
