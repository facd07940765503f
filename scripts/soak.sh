#!/usr/bin/env bash
# Soak scenario (not a CI test): a live PostgreSQL migration under steady writes while a random
# fault hits every few seconds (cut or black-holed connections, slow network, fast or immediate
# restarts of either server); then it checks the target equals the source row for row.
#
#   scripts/soak.sh [SECONDS] [FAULT_EVERY_SECONDS]      (defaults: 300, 10)
#
# Prints one line `SOAK {json}`: faults survived by kind, acknowledged writes, rows, and how long
# the target took to equal the source after the writes stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-prerequisites.sh
export SOAK_SECONDS="${1:-300}" SOAK_FAULT_EVERY="${2:-10}"
cargo test --release -p ferry --test integration -- --ignored --nocapture --exact faults::soak 2>&1 | tee /tmp/ferry-soak.log | grep -E "^SOAK|^soak:|test result"
