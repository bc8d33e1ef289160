#!/usr/bin/env bash
# The GPU run, prepared: meta-train the full-width Table 2 model on a synthetic world of
# USERS users (default 50,000) and evaluate it against the DMP baselines, printing the
# data, training and evaluation times, the training throughput (examples/s) and the
# targets with their 95 % intervals. Everything else in the project stays CPU-only.
#
#   TF_DIST='tensorflow[and-cuda]' ./run setup      # once, on the GPU host
#   bash bench/gpu_run.sh                           # or e.g. USERS=300 STEPS=20 WIDTH=0.125
#
# The data (generate, encode with Spark local[*], heatmaps) is made once under
# .work/bench/gpu-<USERS> and reused. Meta-training uses the source tasks of the target
# family: behaviour tasks "new buyer of a channel in the next 90 days" at three backtest
# cuts (CUTS), beside the survey tasks, with K = KSHOT shots. The evaluation runs Table 3
# and the PU seed sweep (the campaign setting) with REPEATS repeats, every Meta-Profile
# method but fine-tuning, the auto head and the three DMP baselines; training from scratch
# is left out by default (SCRATCH=1 adds it), as it alone would take longer than the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
M=.work/venv-jobs/bin/metaprofile
PY=.work/venv-jobs/bin/python
USERS=${USERS:-50000}; STEPS=${STEPS:-3000}; WIDTH=${WIDTH:-1.0}; EMBEDDING=${EMBEDDING:-128}
KSHOT=${KSHOT:-10}; CUTS=${CUTS:-[0,90,180]}; REPEATS=${REPEATS:-3}; SCRATCH=${SCRATCH:-0}
R="$PWD/.work/bench/gpu-$USERS"
O=(--config conf/synthetic.yaml --set "storage.root=$R" --set tasks.behaviour.horizon_days=90
   --set "tasks.behaviour.cut_days=$CUTS")
$PY -c 'import tensorflow as tf; print("TensorFlow", tf.__version__, "GPUs:",
        [d.name for d in tf.config.list_physical_devices("GPU")] or "none (CPU run)")'
t0=$(date +%s)
if [[ ! -f "$R/heatmaps/ds=2026-06-30/_SUCCESS" ]]; then
  rm -rf "$R"
  $M generate --users "$USERS" "${O[@]}" | tail -1
  $M encode --full "${O[@]}" > "$R.encode.log" 2>&1
  $M heatmaps "${O[@]}" > "$R.heatmaps.log" 2>&1
fi
t1=$(date +%s)
version="gpu-w$WIDTH-s$STEPS"
rm -rf "$R/models/$version" "$R/train-$version"
$M train "${O[@]}" --version "$version" --work-dir "$R/train-$version" --width "$WIDTH" \
  --embedding-dim "$EMBEDDING" --k-shot "$KSHOT" --steps "$STEPS" --validate-every 250 \
  --val-batches 20 > "$R/train-$version.log" 2>&1
t2=$(date +%s)
methods=meta_profile,meta_profile_probe,auto_head,logreg,hgb,cosine
[[ $SCRATCH == 1 ]] && methods="$methods,scratch"
$M evaluate "${O[@]}" --model "$R/models/$version" --out "$R/eval-$version" \
  --repeats "$REPEATS" --experiments table3,seeds_pu --methods "$methods" \
  --seed-sweep-methods meta_profile,meta_profile_probe,auto_head,logreg,hgb,cosine \
  > "$R/eval-$version.log" 2>&1
t3=$(date +%s)
grep -E "examples/s" "$R/train-$version.log" | tail -3
grep -E "behaviour tasks|best" "$R/train-$version.log" | tail -2
echo "users $USERS; data $((t1 - t0)) s, training $((t2 - t1)) s ($STEPS steps, width $WIDTH)," \
     "evaluation $((t3 - t2)) s"
sed -n '/^## Targets/,/^## /p' "$R/eval-$version/report.md" | grep '^|' | tail -n +3
sed -n '/95 % intervals$/,/^## /p' "$R/eval-$version/report.md" | grep '^|'
