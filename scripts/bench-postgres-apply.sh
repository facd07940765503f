#!/usr/bin/env bash
# Change apply, PostgreSQL to PostgreSQL: ferry next to PostgreSQL's own logical replication
# (a subscription) of the same source, each catching up on the same backlog, one after the
# other on the same machine.
#   1. one UPDATE of every row of pgbench_accounts in one transaction;
#   2. pgbench's simple-update workload (4 clients) for PGBENCH_SECONDS;
# both ROUNDS times, medians reported; then
#   3. lag while ferry streams pgbench simple-update at LIVE_RATE transactions/s for 60 s.
#
#   scripts/bench-postgres-apply.sh [SCALE] [PGBENCH_SECONDS] [ROUNDS] [LIVE_RATE]
#                                   (defaults: 10 -> 1M rows, 60 s, 3, 1000)
#
# Each backlog is written while ferry and the subscription are stopped, then a marker row is
# written; the time runs from starting one of them until the marker is visible on its side.
# The accounts are compared (md5 of every row) on all three servers after each step. Writes
# bench/postgres-apply.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-10}"
PGBENCH_SECONDS="${2:-60}"
ROUNDS="${3:-3}"
LIVE_SECONDS="${LIVE_SECONDS:-60}"
LIVE_RATE="${4:-1000}"
FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
RP=$(free_port); start_server replica "$RP"
trap 'as_pg "$PGBIN/pg_ctl" -D "$WORK/replica/data" -m immediate stop >/dev/null 2>&1 || true; stop_servers' EXIT
psql_r() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$RP" -U postgres "$@"; }
# A re-enabled subscription whose slot is still held retries after wal_retrieve_retry_interval
# (5 s by default): short here, so the native side is not timed waiting.
psql_r -d postgres -c "ALTER SYSTEM SET wal_retrieve_retry_interval = '100ms'" -c "SELECT pg_reload_conf()" >/dev/null

echo "== pgbench scale $SCALE on the source"
psql_s -d postgres -c "CREATE DATABASE bench"
pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$SP" -U postgres bench >/dev/null 2>&1
psql_s -d bench -c "CREATE TABLE marker (id integer PRIMARY KEY, value bigint NOT NULL); INSERT INTO marker VALUES (1, 0)"
SRC="postgres://postgres@127.0.0.1:$SP/bench"
TGT="postgres://postgres@127.0.0.1:$TP/bench"
TABLES="public.pgbench_accounts,public.marker"

# The native subscription: same tables, copied by PostgreSQL itself first.
psql_r -d postgres -c "CREATE DATABASE bench"
pg_dump -h 127.0.0.1 -p "$SP" -U postgres -s -t pgbench_accounts -t marker bench | psql_r -d bench >/dev/null
psql_s -d bench -c "CREATE PUBLICATION native FOR TABLE pgbench_accounts, marker"
psql_r -d bench -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$SP user=postgres dbname=bench' PUBLICATION native"
psql_t -d postgres -c "CREATE DATABASE bench"
"$FERRY" run --source "$SRC" --target "$TGT" --tables "$TABLES" --name apply --parallel 2 >"$WORK/run.log" 2>&1 &
RUN=$!

# wait_marker PSQL_FUNCTION VALUE: until the marker holds VALUE on that server.
wait_marker() { pg_marker_is "$1" bench marker "$2"; }
MARK=0
next_marker() { MARK=$((MARK + 1)); psql_s -d bench -c "UPDATE marker SET value = $MARK WHERE id = 1"; }
# settle SLOT PSQL_FUNCTION: before a consumer stops, its slot's restart point passes all it
# caught up on, so that neither side re-decodes an earlier backlog on its next start. A logical
# slot restarts decoding at its restart_lsn, which moves only past a running-transactions record
# that the consumer decoded and confirmed (the server logs one every 15 s, and at a checkpoint).
# Without this, whichever consumer ran first after a backlog had no such record behind it and
# re-decoded the 1M-row UPDATE on its next start (2.6 s, seen in ferry's per-batch log).
settle() {
  local lsn; lsn=$(psql_s -d bench -Atc "SELECT pg_current_wal_lsn()")
  psql_s -d bench -c "CHECKPOINT"
  next_marker
  wait_marker "$2" "$MARK"
  local deadline=$((SECONDS + 60)) moved
  until moved=$(psql_s -d bench -Atc "SELECT restart_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$1'") && [ "$moved" = t ]; do
    [ -n "$moved" ] || { echo "there is no slot $1" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "the slot $1 did not move past $lsn in 60 s" >&2; return 1; }
    sleep 0.1
  done
}

# Both tables copied (a marker alone could arrive by the copy of its table), then a marker
# that only the stream can bring.
until [ "$(psql_t -d bench -Atc "SELECT count(*) FROM _ferry.table_state WHERE migration = 'apply' AND state = 'copied'" 2>/dev/null || true)" = 2 ]; do sleep 0.2; done
until [ "$(psql_r -d bench -Atc "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")" = 0 ]; do sleep 0.2; done
next_marker
wait_marker psql_t "$MARK"
wait_marker psql_r "$MARK"
settle ferry_apply psql_t
settle native psql_r
kill -TERM "$RUN"; wait "$RUN" || true
disable_native() {
  psql_r -d bench -c "ALTER SUBSCRIPTION native DISABLE"
  # Until the source's walsender let the slot go: the next start finds it free.
  until [ "$(psql_s -d bench -Atc "SELECT active FROM pg_replication_slots WHERE slot_name = 'native'")" = f ]; do sleep 0.05; done
}
disable_native

accounts_md5() { "$1" -d bench -Atc "SELECT md5(string_agg(t::text, '' ORDER BY aid)) FROM pgbench_accounts t"; }

# Runs ferry, then the subscription, over the backlog just written; checks the three tables.
catch_up() { # LABEL
  next_marker
  local start; start=$(now)
  "$FERRY" run --source "$SRC" --target "$TGT" --tables "$TABLES" --name apply >>"$WORK/run.log" 2>&1 &
  RUN=$!
  wait_marker psql_t "$MARK"
  local done_at; done_at=$(now)
  add "$1_ferry_cpu" "$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$RUN/stat")"
  add "$1_ferry_peak_mib" "$(peak_mib "$RUN")"
  settle ferry_apply psql_t
  kill -TERM "$RUN"; wait "$RUN" || true
  add "$1_ferry" "$(elapsed "$start" "$done_at")"
  start=$(now)
  psql_r -d bench -c "ALTER SUBSCRIPTION native ENABLE"
  wait_marker psql_r "$MARK"
  done_at=$(now)
  settle native psql_r
  disable_native
  add "$1_native" "$(elapsed "$start" "$done_at")"
  local sum; sum=$(accounts_md5 psql_s)
  [ "$sum" = "$(accounts_md5 psql_t)" ] || { echo "ferry's table differs" >&2; exit 1; }
  [ "$sum" = "$(accounts_md5 psql_r)" ] || { echo "the subscriber's table differs" >&2; exit 1; }
  echo "   ferry $(last "$1_ferry") s ($(last "$1_ferry_cpu") s of CPU in ferry, peak $(last "$1_ferry_peak_mib") MiB), native subscription $(last "$1_native") s"
}

ROWS=$(psql_s -d bench -Atc "SELECT count(*) FROM pgbench_accounts")
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS: one UPDATE of $ROWS rows in one transaction"
  psql_s -d bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1"
  catch_up big
  echo "== round $round of $ROUNDS: pgbench simple-update, 4 clients, $PGBENCH_SECONDS s"
  pgbench -n -b simple-update -c 4 -j 2 -T "$PGBENCH_SECONDS" -h 127.0.0.1 -p "$SP" -U postgres bench 2>/dev/null | grep -E '^number of transactions actually processed' || true
  catch_up mixed
done

echo "== lag while ferry streams pgbench simple-update at $LIVE_RATE transactions/s for $LIVE_SECONDS s"
"$FERRY" run --source "$SRC" --target "$TGT" --tables "$TABLES" --name apply >>"$WORK/run.log" 2>&1 &
RUN=$!
next_marker
wait_marker psql_t "$MARK"
heartbeat_command() { psql_s -d bench -c "UPDATE marker SET value = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint WHERE id = 1"; }
sample_command() { psql_t -d bench -AtF ' ' -c "SELECT value, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM marker WHERE id = 1"; }
pgbench -n -b simple-update -c 4 -j 2 -R "$LIVE_RATE" -T $((LIVE_SECONDS + 2)) -h 127.0.0.1 -p "$SP" -U postgres bench >"$WORK/live.log" 2>&1 &
LOAD=$!
lag_run "$LIVE_SECONDS"
LIVE_PEAK=$(peak_mib "$RUN")
wait "$LOAD" || true
LIVE_TPS=$(grep -oE "tps = [0-9.]+" "$WORK/live.log" | head -1 | cut -d' ' -f3 | xargs printf "%.0f")
kill -TERM "$RUN"; wait "$RUN" || true

write_samples bench/postgres-apply.json "\"rows\": $ROWS, \"rounds\": $ROUNDS, \"pgbench_seconds\": $PGBENCH_SECONDS, \"live_rate\": $LIVE_RATE, \"live_tps\": ${LIVE_TPS:-0}, \"lag_p50\": $LAG_P50, \"lag_p99\": $LAG_P99, \"lag_max\": $LAG_MAX, \"live_peak_mib\": $LIVE_PEAK"
echo
echo "| backlog (PostgreSQL to PostgreSQL, pgbench scale $SCALE), median of $ROUNDS | ferry (CPU in ferry; peak memory) | native subscription | ferry / native |"
echo "|---|---|---|---|"
echo "| one UPDATE of $ROWS rows, one transaction | ${MEDIAN[big_ferry]} s (${MEDIAN[big_ferry_cpu]} s; ${MEDIAN[big_ferry_peak_mib]} MiB) | ${MEDIAN[big_native]} s | $(ratio "${MEDIAN[big_ferry]}" "${MEDIAN[big_native]}") |"
echo "| pgbench simple-update, 4 clients, $PGBENCH_SECONDS s | ${MEDIAN[mixed_ferry]} s (${MEDIAN[mixed_ferry_cpu]} s; ${MEDIAN[mixed_ferry_peak_mib]} MiB) | ${MEDIAN[mixed_native]} s | $(ratio "${MEDIAN[mixed_ferry]}" "${MEDIAN[mixed_native]}") |"
echo "| lag streaming pgbench at ${LIVE_TPS:-?} tps for $LIVE_SECONDS s | p50 $LAG_P50 s, p99 $LAG_P99 s, max $LAG_MAX s (peak $LIVE_PEAK MiB) | | |"
