#!/usr/bin/env bash
# ferry's benchmark: copy and streaming throughput against baselines measured in the same run,
# on the same two throwaway PostgreSQL servers.
#
#   scripts/bench.sh [SCALE] [PGBENCH_SECONDS]      (defaults: 50 -> 5M rows, 60 s)
#
# Prints a Markdown table and writes bench/results.json. Needs: PostgreSQL server binaries,
# psql, pg_dump, pgbench (scripts/install-prerequisites.sh) and a release build of ferry.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-50}"
PGBENCH_SECONDS="${2:-60}"
FERRY="${FERRY:-target/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
SRC="postgres://postgres@127.0.0.1:$SP/bench"

echo "== preparing pgbench scale $SCALE on the source"
psql_s -d postgres -c "CREATE DATABASE bench"
pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$SP" -U postgres bench >/dev/null 2>&1
ROWS=$(psql_s -d bench -Atc "SELECT count(*) FROM pgbench_accounts")
BYTES=$(psql_s -d bench -Atc "SELECT pg_table_size('pgbench_accounts')")
echo "   $ROWS rows, $((BYTES / 1024 / 1024)) MiB"
ACCOUNTS_DDL="CREATE TABLE pgbench_accounts (aid integer NOT NULL PRIMARY KEY, bid integer, abalance integer, filler character(84))"

echo "== baseline: psql COPY TO STDOUT | psql COPY FROM STDIN (into a table with its primary key)"
psql_t -d postgres -c "CREATE DATABASE pipe"
psql_t -d pipe -c "$ACCOUNTS_DDL"
start=$(now)
psql_s -d bench -c "COPY pgbench_accounts TO STDOUT" | psql_t -d pipe -c "COPY pgbench_accounts FROM STDIN"
end=$(now)
RESULT[pipe_seconds]=$(elapsed "$start" "$end"); RESULT[pipe_rows_per_second]=$(rate "$ROWS" "$start" "$end")
echo "   ${RESULT[pipe_seconds]} s, ${RESULT[pipe_rows_per_second]} rows/s"

echo "== baseline: pg_dump -t pgbench_accounts | psql"
psql_t -d postgres -c "CREATE DATABASE dump"
start=$(now)
pg_dump -h 127.0.0.1 -p "$SP" -U postgres -t pgbench_accounts bench | psql_t -d dump >/dev/null
end=$(now)
RESULT[dump_seconds]=$(elapsed "$start" "$end"); RESULT[dump_rows_per_second]=$(rate "$ROWS" "$start" "$end")
echo "   ${RESULT[dump_seconds]} s, ${RESULT[dump_rows_per_second]} rows/s"

for parallel in 1 2 4; do
  echo "== ferry copy --tables public.pgbench_accounts --parallel $parallel"
  psql_t -d postgres -c "CREATE DATABASE copy_$parallel"
  start=$(now)
  run_measured "$FERRY" copy --source "$SRC" --target "postgres://postgres@127.0.0.1:$TP/copy_$parallel" --tables public.pgbench_accounts --parallel "$parallel" --name "copy_$parallel" >"$WORK/copy_$parallel.log" 2>&1
  end=$(now)
  COPIED=$(psql_t -d "copy_$parallel" -Atc "SELECT count(*) FROM pgbench_accounts")
  [ "$COPIED" = "$ROWS" ] || { echo "ferry copied $COPIED of $ROWS rows"; cat "$WORK/copy_$parallel.log"; exit 1; }
  RESULT[copy_${parallel}_seconds]=$(elapsed "$start" "$end"); RESULT[copy_${parallel}_rows_per_second]=$(rate "$ROWS" "$start" "$end"); RESULT[copy_${parallel}_peak_mb]=$((PEAK_KB / 1024))
  echo "   ${RESULT[copy_${parallel}_seconds]} s, ${RESULT[copy_${parallel}_rows_per_second]} rows/s, peak RSS ${RESULT[copy_${parallel}_peak_mb]} MiB"
  [ "$parallel" = 4 ] || psql_t -d postgres -c "DROP DATABASE copy_$parallel" >/dev/null
done

echo "== baseline: SELECT md5(string_agg(row text ORDER BY aid)) on both servers at once"
start=$(now)
psql_s -d bench -Atc "SELECT md5(string_agg(t::text, '' ORDER BY aid)) FROM pgbench_accounts t" > "$WORK/md5_source" &
psql_t -d copy_4 -Atc "SELECT md5(string_agg(t::text, '' ORDER BY aid)) FROM pgbench_accounts t" > "$WORK/md5_target"
wait
end=$(now)
cmp -s "$WORK/md5_source" "$WORK/md5_target" || { echo "baseline digests differ"; exit 1; }
RESULT[md5_seconds]=$(elapsed "$start" "$end"); RESULT[md5_rows_per_second]=$(rate "$ROWS" "$start" "$end")
echo "   ${RESULT[md5_seconds]} s, ${RESULT[md5_rows_per_second]} rows/s"

echo "== ferry verify --tables public.pgbench_accounts (equal copy)"
start=$(now)
run_measured "$FERRY" verify --source "$SRC" --target "postgres://postgres@127.0.0.1:$TP/copy_4" --tables public.pgbench_accounts >"$WORK/verify.log" 2>&1
end=$(now)
grep -q "^EQUAL" "$WORK/verify.log" || { cat "$WORK/verify.log"; exit 1; }
RESULT[verify_seconds]=$(elapsed "$start" "$end"); RESULT[verify_rows_per_second]=$(rate "$ROWS" "$start" "$end"); RESULT[verify_peak_mb]=$((PEAK_KB / 1024))
echo "   ${RESULT[verify_seconds]} s, ${RESULT[verify_rows_per_second]} rows/s, peak RSS ${RESULT[verify_peak_mb]} MiB"

echo "== ferry verify after changing 100 scattered rows on the target (finds them all)"
psql_t -d copy_4 -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % (GREATEST($ROWS / 100, 1)) = 0"
start=$(now)
run_measured "$FERRY" verify --source "$SRC" --target "postgres://postgres@127.0.0.1:$TP/copy_4" --tables public.pgbench_accounts --json >"$WORK/verify.json" 2>"$WORK/verify.err" || true
end=$(now)
FOUND=$(python3 -c "import json; d=json.load(open('$WORK/verify.json')); print(len(d['tables'][0]['differences']))")
RESULT[verify_dirty_seconds]=$(elapsed "$start" "$end"); RESULT[verify_dirty_found]=$FOUND
echo "   ${RESULT[verify_dirty_seconds]} s, found $FOUND differing rows"
psql_t -d postgres -c "DROP DATABASE copy_4" >/dev/null

echo "== streaming: ferry run, then UPDATE of 1,000,000 rows in one transaction"
# pgbench_history has no key; give it one so every pgbench table can stream.
psql_s -d bench -c "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY"
psql_t -d postgres -c "CREATE DATABASE live"
DST="postgres://postgres@127.0.0.1:$TP/live"
"$FERRY" run --source "$SRC" --target "$DST" --name live --parallel 2 >"$WORK/run.log" 2>&1 &
FERRY_PID=$!
PEAK_KB=0
sample_peak() { local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$FERRY_PID/status" 2>/dev/null || echo 0); [ -n "$hwm" ] && [ "$hwm" -gt "$PEAK_KB" ] && PEAK_KB=$hwm; true; }
caught_up() { # source LSN -> waits until ferry's checkpoint passes it
  local target_lsn=$1
  while true; do
    sample_peak
    local done
    done=$(psql_t -d live -Atc "SELECT coalesce((SELECT pg_lsn(split_part(position, ':', 2)) >= '$target_lsn'::pg_lsn FROM _ferry.stream WHERE migration = 'live'), false)" 2>/dev/null || echo f)
    [ "$done" = t ] && return 0
    kill -0 "$FERRY_PID" || { cat "$WORK/run.log"; exit 1; }
    sleep 0.05
  done
}
until [ "$(psql_t -d live -Atc "SELECT count(*) FROM _ferry.table_state WHERE state = 'copied'" 2>/dev/null || echo 0)" = 4 ]; do sample_peak; sleep 0.2; done
caught_up "$(psql_s -d bench -Atc "SELECT pg_current_wal_lsn()")"
start=$(now)
psql_s -d bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 1000000"
committed=$(now)
caught_up "$(psql_s -d bench -Atc "SELECT pg_current_wal_lsn()")"
end=$(now)
RESULT[update_source_seconds]=$(elapsed "$start" "$committed")
RESULT[update_applied_seconds]=$(elapsed "$start" "$end")
UPDATED=$(( ROWS < 1000000 ? ROWS : 1000000 ))
RESULT[update_rows]=$UPDATED
RESULT[update_changes_per_second]=$(rate "$UPDATED" "$start" "$end")
RESULT[update_lag_after_commit_seconds]=$(elapsed "$committed" "$end")
echo "   source UPDATE took ${RESULT[update_source_seconds]} s; target caught up ${RESULT[update_lag_after_commit_seconds]} s after commit; ${RESULT[update_changes_per_second]} changes/s overall"

echo "== streaming under pgbench -c 4 for $PGBENCH_SECONDS s"
pgbench -n -c 4 -j 2 -T "$PGBENCH_SECONDS" -h 127.0.0.1 -p "$SP" -U postgres bench >"$WORK/pgbench.log" 2>&1 &
PGBENCH_PID=$!
max_lag_bytes=0; max_lag_seconds=0; samples=0; sum_lag_bytes=0
while kill -0 "$PGBENCH_PID" 2>/dev/null; do
  sample_peak
  status=$("$FERRY" status --json --name live --source "$SRC" --target "$DST" 2>/dev/null || true)
  read -r lag_bytes lag_seconds < <(python3 -c "import json,sys; d=json.loads(sys.argv[1] or '{}'); print(d.get('lag_bytes') or 0, d.get('lag_seconds') or 0)" "$status")
  samples=$((samples + 1)); sum_lag_bytes=$((sum_lag_bytes + lag_bytes))
  [ "$lag_bytes" -gt "$max_lag_bytes" ] && max_lag_bytes=$lag_bytes
  max_lag_seconds=$(python3 -c "print(max($max_lag_seconds, $lag_seconds))")
  sleep 1
done
wait "$PGBENCH_PID" || true
TPS=$(grep -oE "tps = [0-9.]+" "$WORK/pgbench.log" | head -1 | cut -d' ' -f3)
committed=$(now)
caught_up "$(psql_s -d bench -Atc "SELECT pg_current_wal_lsn()")"
end=$(now)
RESULT[pgbench_tps]=${TPS:-0}
RESULT[pgbench_max_lag_bytes]=$max_lag_bytes
RESULT[pgbench_avg_lag_bytes]=$((sum_lag_bytes / (samples > 0 ? samples : 1)))
RESULT[pgbench_max_lag_seconds]=$max_lag_seconds
RESULT[pgbench_drain_seconds]=$(elapsed "$committed" "$end")
kill -TERM "$FERRY_PID"; wait "$FERRY_PID" || true
RESULT[stream_peak_mb]=$((PEAK_KB / 1024))
echo "   pgbench ${RESULT[pgbench_tps]} tps; lag max ${RESULT[pgbench_max_lag_bytes]} bytes / ${RESULT[pgbench_max_lag_seconds]} s, avg ${RESULT[pgbench_avg_lag_bytes]} bytes; drained ${RESULT[pgbench_drain_seconds]} s after pgbench ended; peak RSS ${RESULT[stream_peak_mb]} MiB"

echo "== verifying the streamed target equals the source"
for table in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
  key=$(psql_s -d bench -Atc "SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '$table'::regclass AND i.indisprimary")
  left=$(psql_s -d bench -Atc "COPY (SELECT * FROM $table ORDER BY $key) TO STDOUT" | md5sum)
  right=$(psql_t -d live -Atc "COPY (SELECT * FROM $table ORDER BY $key) TO STDOUT" | md5sum)
  [ "$left" = "$right" ] || { echo "   $table DIFFERS"; exit 1; }
  echo "   $table equal"
done

mkdir -p bench
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"scale\": $SCALE, \"rows\": $ROWS, \"cores\": $(nproc),"
  first=1
  for key in $(printf '%s\n' "${!RESULT[@]}" | sort); do
    [ $first = 1 ] || echo ","
    first=0
    printf '  "%s": %s' "$key" "${RESULT[$key]}"
  done
  echo; echo "}"
} > bench/results.json

best=$(for p in 1 2 4; do echo "${RESULT[copy_${p}_rows_per_second]} $p"; done | sort -n | tail -1)
cat <<TABLE

| measurement ($ROWS rows of pgbench_accounts, $(nproc) cores, both servers on this machine) | result |
|---|---|
| psql COPY TO STDOUT \| psql COPY FROM STDIN | ${RESULT[pipe_seconds]} s, ${RESULT[pipe_rows_per_second]} rows/s |
| pg_dump -t pgbench_accounts \| psql | ${RESULT[dump_seconds]} s, ${RESULT[dump_rows_per_second]} rows/s |
| ferry copy --parallel 1 | ${RESULT[copy_1_seconds]} s, ${RESULT[copy_1_rows_per_second]} rows/s, peak RSS ${RESULT[copy_1_peak_mb]} MiB |
| ferry copy --parallel 2 | ${RESULT[copy_2_seconds]} s, ${RESULT[copy_2_rows_per_second]} rows/s, peak RSS ${RESULT[copy_2_peak_mb]} MiB |
| ferry copy --parallel 4 | ${RESULT[copy_4_seconds]} s, ${RESULT[copy_4_rows_per_second]} rows/s, peak RSS ${RESULT[copy_4_peak_mb]} MiB |
| best ferry copy / raw pipe | $(python3 -c "print(f'{${best% *} / ${RESULT[pipe_rows_per_second]}:.2f}x')") (parallel ${best#* }) |
| SELECT md5(string_agg(row ORDER BY aid)) on source and target at once | ${RESULT[md5_seconds]} s, ${RESULT[md5_rows_per_second]} rows/s |
| ferry verify (equal copy) | ${RESULT[verify_seconds]} s, ${RESULT[verify_rows_per_second]} rows/s, peak RSS ${RESULT[verify_peak_mb]} MiB |
| ferry verify with 100 rows changed on the target | ${RESULT[verify_dirty_seconds]} s, found ${RESULT[verify_dirty_found]} differing rows |
| ${RESULT[update_rows]}-row UPDATE streamed (from UPDATE start to applied on target) | ${RESULT[update_applied_seconds]} s, ${RESULT[update_changes_per_second]} changes/s; target caught up ${RESULT[update_lag_after_commit_seconds]} s after the source commit (source UPDATE took ${RESULT[update_source_seconds]} s) |
| lag under pgbench -c 4 for ${PGBENCH_SECONDS} s (${RESULT[pgbench_tps]} tps) | max ${RESULT[pgbench_max_lag_bytes]} bytes / ${RESULT[pgbench_max_lag_seconds]} s, average ${RESULT[pgbench_avg_lag_bytes]} bytes; drained ${RESULT[pgbench_drain_seconds]} s after pgbench stopped |
| ferry peak RSS while streaming | ${RESULT[stream_peak_mb]} MiB |
TABLE
