#!/usr/bin/env bash
# The Complete Journey with its genre family of source tasks (conf/completejourney.yaml):
# land it, label, encode, heatmaps, meta-train (9-way episodes over ~490 tasks) and
# evaluate on Table 3 and the PU seed sweep, 3 repeats of the 8 target tasks, with 95 %
# intervals. Prints each stage's wall time and the targets.
# Training from scratch adapts on at most 1,000 support users for at most 10 epochs; the
# fine-tuned model is left out (as in bench/evaluate_50k.sh).
# Run after `./run setup`:   bash bench/cj_family.sh      (about 40 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
M=.work/venv-jobs/bin/metaprofile
C=(--config conf/completejourney.yaml)
R="$PWD/.work/data/completejourney"
VERSION=${VERSION:-cj-family}; STEPS=${STEPS:-1000}; REPEATS=${REPEATS:-3}
clock() { date +%s; }
t0=$(clock)
if [[ ! -f "$R/heatmaps/ds=2017-09-30/_SUCCESS" ]]; then
  $M completejourney "${C[@]}" > /dev/null
  $M encode --full --master 'local[2]' "${C[@]}" > /dev/null
  $M heatmaps "${C[@]}" > /dev/null
fi
t1=$(clock)
if [[ ! -f "$R/models/$VERSION/_SUCCESS" ]]; then
  $M train "${C[@]}" --version "$VERSION" --work-dir "$R/train-$VERSION" --width 0.25 \
    --embedding-dim 128 --k-shot 3 --steps "$STEPS" --validate-every 100 --val-batches 20 \
    --patience 0 2>&1 | grep -E "source tasks|best|artifact" | tail -3
fi
t2=$(clock)
$M evaluate "${C[@]}" --model "$R/models/$VERSION" --out "$R/eval-$VERSION" \
  --repeats "$REPEATS" --experiments table3,seeds_pu \
  --methods meta_profile,meta_profile_probe,meta_profile_tasks,auto_head,scratch,logreg,hgb,cosine \
  --seed-sweep-methods meta_profile,meta_profile_probe,meta_profile_tasks,auto_head,logreg,hgb,cosine \
  --trained-max-users 1000 --fine-tune-epochs 10 > "$R/eval-$VERSION.log" 2>&1
t3=$(clock)
echo "== $VERSION: data $((t1 - t0)) s, training $((t2 - t1)) s, evaluation $((t3 - t2)) s"
sed -n '/^## Targets/,/^## /p' "$R/eval-$VERSION/report.md" | grep '^|' | tail -n +3
sed -n '/95 % intervals$/,/^## /p' "$R/eval-$VERSION/report.md" | grep '^|'
