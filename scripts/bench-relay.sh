#!/usr/bin/env bash
# The relay's benchmark: Kafka (tansu) to a local HTTP endpoint with every attempt logged, next
# to bare consume-and-POST loops without a log, same broker and endpoint, same run; then the
# latency under a steady rate. Release build.
# Usage: scripts/bench-relay.sh [MESSAGES]   (default 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-prerequisites.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
export FERRY_RELAY_BENCH_MESSAGES="${1:-50000}"
cargo test --release --locked -p ferry --test integration relay_benchmark -- --ignored --nocapture 2>&1 \
  | grep -E "^(relay benchmark|  [a-z])|panicked|timed out" 
