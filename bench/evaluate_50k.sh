#!/usr/bin/env bash
# The primary evaluation (the learning issue): the synthetic world at USERS (default 50,000)
# users, a model meta-trained on it, and `metaprofile evaluate` on Table 3 and the PU seed
# sweep, 3 repeats of the 8 target tasks, with 95 % intervals. Prints each stage's wall time
# and the targets; the report lands in $R/eval-$VERSION (copy it to docs/evaluation/).
#
# Budgets (2 cores, 30 min for the evaluation): the trained methods are left out. Training
# from scratch scores each task's ~23,500 test users with a network of its own, 24 times
# (about 4 min each on 2 cores, over 90 min in all), so its targets (AUROC >= 0.55, and
# zero-training above it) are measured on the 3,000-user world and The Complete Journey;
# SCRATCH=1 adds it, adapting on at most TRAINED_MAX (default 1,000) support users for at
# most 10 epochs (--trained-max-users, --fine-tune-epochs). Every other method sees the
# whole adaptation set (about 23,000 users a task) or the PU seeds with 1,000 unlabelled
# users.
#
# Run after `./run setup`:   bash bench/evaluate_50k.sh
# (data 3 min, training 2,000 steps about 35 min, evaluation about 30 min, alone on 2 cores)
# Extra arguments go to `metaprofile train` (e.g. --set tasks.behaviour.enabled=true).
set -euo pipefail
cd "$(dirname "$0")/.."
M=.work/venv-jobs/bin/metaprofile
USERS=${USERS:-50000}; STEPS=${STEPS:-2000}; REPEATS=${REPEATS:-3}
VERSION=${VERSION:-syn50k}; TRAINED_MAX=${TRAINED_MAX:-1000}; SCRATCH=${SCRATCH:-0}
METHODS=${METHODS:-meta_profile,meta_profile_probe,meta_profile_tasks,auto_head,logreg,hgb,cosine}
TABLE3=$METHODS
[[ "$SCRATCH" == 1 ]] && TABLE3="$TABLE3,scratch"
R="$PWD/.work/bench/synthetic-$USERS"
O=(--config conf/synthetic.yaml --set "storage.root=$R")
clock() { date +%s; }
if [[ ! -f "$R/heatmaps/ds=2026-06-30/_SUCCESS" ]]; then
  rm -rf "$R"; t0=$(clock)
  $M generate --users "$USERS" "${O[@]}" | tail -1
  $M encode --full --master 'local[2]' "${O[@]}" > /dev/null
  $M heatmaps "${O[@]}" > /dev/null
  echo "== data: $USERS users generated, encoded and turned into heatmaps in $(( $(clock) - t0 )) s"
fi
t0=$(clock)
if [[ ! -f "$R/models/$VERSION/_SUCCESS" ]]; then
  $M train "${O[@]}" "$@" --version "$VERSION" --work-dir "$R/train-$VERSION" --width 0.25 \
    --embedding-dim 128 --k-shot 5 --steps "$STEPS" --validate-every 200 --val-batches 30 \
    --patience 0 2>&1 | grep -E "best|artifact" | tail -2
fi
t1=$(clock)
$M evaluate "${O[@]}" --model "$R/models/$VERSION" --out "$R/eval-$VERSION" \
  --repeats "$REPEATS" --experiments table3,seeds_pu \
  --methods "$TABLE3" \
  --seed-sweep-methods "$METHODS" --pu-seed-counts "${PU:-10,20,50,100,300,1000}" \
  --trained-max-users "$TRAINED_MAX" --fine-tune-epochs 10 > "$R/eval-$VERSION.log" 2>&1
t2=$(clock)
echo "== $VERSION: training $((t1 - t0)) s, evaluation $((t2 - t1)) s; report $R/eval-$VERSION"
sed -n '/^## Targets/,/^## /p' "$R/eval-$VERSION/report.md" | grep '^|' | tail -n +3
sed -n '/95 % intervals$/,/^## /p' "$R/eval-$VERSION/report.md" | grep '^|'
