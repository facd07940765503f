#!/usr/bin/env bash
# The Kafka move's benchmark: `ferry kafka move` (offset map on) next to a plain
# consume-and-produce loop with the same client library and durability, same brokers (tansu),
# same run; medians of several runs, peak memory. Release build.
# Usage: scripts/bench-kafka.sh [RECORDS] [RUNS]   (defaults 300000 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-prerequisites.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
export FERRY_KAFKA_BENCH_RECORDS="${1:-300000}"
export FERRY_KAFKA_BENCH_RUNS="${2:-3}"
cargo test --release --locked -p ferry --test integration kafka_move_benchmark -- --ignored --nocapture 2>&1 \
  | grep -E "^(kafka move benchmark|  [a-z])|panicked|timed out"
