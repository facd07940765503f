#!/usr/bin/env bash
# Cutover under load: pgbench writes to the old database, ferry cuts over (fence, drain, sequences,
# reverse stream), pgbench writes to the new one, ferry rolls back; ROUNDS times. Reports the
# write downtime ferry measured for each switch, the dry run's prediction, and checks at the end
# that both databases are equal (ferry verify and row counts).
#
#   scripts/bench-cutover.sh [SCALE] [ROUNDS]      (defaults: 10 -> 1M rows, 3 rounds)
#
# Writes bench/cutover.json. Needs what scripts/bench.sh needs.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-10}"
ROUNDS="${2:-3}"
FERRY="${FERRY:-target/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh

echo "== preparing pgbench scale $SCALE on the old database"
psql_s -d postgres -c "CREATE DATABASE shop"
psql_t -d postgres -c "CREATE DATABASE shop"
pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$SP" -U postgres shop >/dev/null 2>&1
psql_s -d shop -c "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY"
OLD="postgres://postgres@127.0.0.1:$SP/shop"
NEW="postgres://postgres@127.0.0.1:$TP/shop"
API=$(free_port)
"$FERRY" run --source "$OLD" --target "$NEW" --name shop --parallel 2 --listen "127.0.0.1:$API" >"$WORK/run.log" 2>&1 &
FERRY_PID=$!
api() { python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$API$1'))$2)" 2>/dev/null || echo none; }
until [ "$(api /api/status "['forward']['stage']")" = streaming ]; do kill -0 "$FERRY_PID" || { cat "$WORK/run.log"; exit 1; }; sleep 0.5; done
echo "== copied; verifying"
"$FERRY" verify --source "$OLD" --target "$NEW" --name shop --while-streaming >"$WORK/verify.log" 2>&1
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
load() { # url -> pgbench in the background until the fence ends its sessions
  pgbench -n -c 4 -j 2 -T 300 "$1" >"$WORK/pgbench.$2.log" 2>&1 &
  LOAD_PID=$!
}
tps() { grep -oE "tps = [0-9.]+" "$WORK/pgbench.$1.log" | head -1 | cut -d' ' -f3; }

load "$OLD" dry
sleep 5
"$FERRY" cutover --source "$OLD" --target "$NEW" --name shop --dry-run --json --max-lag 1s --stable-for 3s >"$WORK/dry.json"
PREDICTED=$(field "$WORK/dry.json" predicted_downtime_millis)
kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true
echo "   dry run predicted ${PREDICTED} ms"

CUTOVERS=() ROLLBACKS=()
for round in $(seq 1 "$ROUNDS"); do
  load "$OLD" "old$round"
  sleep 10
  "$FERRY" cutover --source "$OLD" --target "$NEW" --name shop --json --max-lag 1s --stable-for 3s >"$WORK/cutover$round.json"
  wait "$LOAD_PID" 2>/dev/null || true
  CUTOVERS+=("$(field "$WORK/cutover$round.json" write_downtime_millis)")
  until [ "$(api /api/status "['reverse']['stage']")" = streaming ]; do sleep 0.2; done
  load "$NEW" "new$round"
  sleep 10
  "$FERRY" rollback --source "$OLD" --target "$NEW" --name shop --json >"$WORK/rollback$round.json"
  wait "$LOAD_PID" 2>/dev/null || true
  ROLLBACKS+=("$(field "$WORK/rollback$round.json" write_downtime_millis)")
  echo "   round $round: cutover ${CUTOVERS[-1]} ms under $(tps "old$round") tps; rollback ${ROLLBACKS[-1]} ms under $(tps "new$round") tps"
done

echo "== after the last rollback: verify"
sleep 2
VERIFY_EXIT=0
"$FERRY" verify --source "$OLD" --target "$NEW" --name shop --while-streaming >"$WORK/verify-end.log" 2>&1 || VERIFY_EXIT=$?
COUNTS=""
for table in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
  COUNTS+="$table $(psql_s -d shop -Atc "SELECT count(*) FROM $table")/$(psql_t -d shop -Atc "SELECT count(*) FROM $table"); "
done
kill "$FERRY_PID"; wait "$FERRY_PID" || true
join() { local IFS=,; echo "$*"; }
cat > bench/cutover.json <<JSON
{"scale": $SCALE, "rounds": $ROUNDS, "predicted_ms": $PREDICTED, "cutover_ms": [$(join "${CUTOVERS[@]}")], "rollback_ms": [$(join "${ROLLBACKS[@]}")], "verify_exit": $VERIFY_EXIT, "rows_old_new": "$COUNTS"}
JSON
cat bench/cutover.json
echo "rows (old/new): $COUNTS"
[ "$VERIFY_EXIT" = 0 ] || { echo "verify found differences"; cat "$WORK/verify-end.log"; exit 1; }
