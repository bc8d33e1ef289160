#!/usr/bin/env bash
# Do backtest cuts help? The synthetic data set (USERS, default 3,000 users), then two
# meta-trainings with the same flags and behaviour source tasks ("new buyer of a channel in
# the next 90 days"): A at one cut (the window's end), B at three cuts (0, 90 and 180 days
# before it, one drawn per batch). Each model is evaluated on Table 3 and the PU seed sweep
# against the DMP baselines, with the auto head and 95 % intervals (no trained baselines,
# to keep it short). Prints each model's training time, evaluation time and targets.
# K = 2 shots (23 tasks x 2 classes x K supports a step; K = 5 is 3 s a step on 2 cores).
# Run after `./run setup`:   bash bench/learning_cuts.sh      (about 40 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
M=.work/venv-jobs/bin/metaprofile
USERS=${USERS:-3000}; STEPS=${STEPS:-1000}; REPEATS=${REPEATS:-3}; KSHOT=${KSHOT:-2}
R="$PWD/.work/bench/learning-cuts-$USERS"
O=(--config conf/synthetic.yaml --set "storage.root=$R")
if [[ ! -f "$R/heatmaps/ds=2026-06-30/_SUCCESS" ]]; then
  rm -rf "$R"
  $M generate --users "$USERS" "${O[@]}" | tail -1
  $M encode --full --master 'local[2]' "${O[@]}" > /dev/null
  $M heatmaps "${O[@]}" > /dev/null
fi
for variant in "one:[0]" "three:[0,90,180]"; do
  name=${variant%%:*}; cuts=${variant#*:}
  B=(--set tasks.behaviour.horizon_days=90 --set "tasks.behaviour.cut_days=$cuts")
  t0=$(date +%s)
  if [[ ! -f "$R/models/cuts-$name/_SUCCESS" ]]; then
    $M train "${O[@]}" "${B[@]}" --version "cuts-$name" --work-dir "$R/train-$name" \
      --width 0.25 --embedding-dim 128 --k-shot "$KSHOT" --steps "$STEPS" --validate-every 100 \
      --val-batches 20 2>&1 | grep -E "behaviour tasks|best|artifact" | tail -3
  fi
  t1=$(date +%s)
  $M evaluate "${O[@]}" "${B[@]}" --model "$R/models/cuts-$name" --out "$R/eval-$name" \
    --repeats "$REPEATS" --experiments table3,seeds_pu \
    --methods meta_profile,meta_profile_probe,auto_head,logreg,hgb,cosine \
    --seed-sweep-methods meta_profile,meta_profile_probe,auto_head,logreg,hgb,cosine \
    > "$R/eval-$name.log" 2>&1
  t2=$(date +%s)
  echo "== cuts $cuts: training $((t1 - t0)) s, evaluation $((t2 - t1)) s"
  sed -n '/^## Targets/,/^## /p' "$R/eval-$name/report.md" | grep '^|' | tail -n +3
  sed -n '/95 % intervals$/,/^## /p' "$R/eval-$name/report.md" | grep '^|'
done
