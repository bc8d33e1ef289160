#!/usr/bin/env bash
# Benchmark: wall time of the README's two commands from a clean clone of HEAD, with an
# empty pip cache (packages are downloaded as on a fresh machine).
#   bench/time_readme_commands.sh [clone-dir]     (default: .work/bench/clean-clone)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-$PWD/.work/bench/clean-clone}
rm -rf "$dir"
git clone --quiet "$PWD" "$dir"
cd "$dir"
for command in demo test; do
  start=$(date +%s)
  if ./run "$command" > "$dir.$command.log" 2>&1; then status=ok; else status="FAILED (see $dir.$command.log)"; fi
  echo "./run $command: $(( $(date +%s) - start )) s, $status"
done
