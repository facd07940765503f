#!/usr/bin/env bash
# Soak: kill -9 ferry at random moments, hundreds of times, for every engine pair (PostgreSQL
# and MariaDB, both ways, and each to itself), under concurrent writes, and check row-for-row
# equality after each round. Usage: scripts/kill-soak.sh [rounds] [kills per pair and round]
# (defaults 20 and 10: 800 kills). A failing round prints its FERRY_KILL_SEED; replay it with
# FERRY_KILL_SEED=<seed> cargo test -p ferry --test integration kill_matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
points="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
scripts/install-prerequisites.sh
cargo test --locked -p ferry --test integration --no-run
for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds: $points kills per pair"
  FERRY_KILL_POINTS="$points" cargo test --locked -p ferry --test integration kill_matrix -- --nocapture 2>&1 \
    | grep -E 'FERRY_KILL_SEED|^test |test result|panicked' || { echo "round $round failed"; exit 1; }
done
echo "soak passed: $rounds rounds, $((rounds * points * 4)) kills"
