#!/usr/bin/env bash
# ferry's MySQL benchmark, against baselines measured in the same run on the same throwaway
# servers (two MariaDB, one PostgreSQL target):
#   1. MariaDB to MariaDB copy of a sysbench table, next to `mariadb-dump | mariadb`;
#   2. binary log apply rate for 1M single-row updates (in 1,000-row transactions);
#   3. MariaDB to PostgreSQL copy rate.
#
#   scripts/bench-mysql.sh [TABLE_SIZE] [UPDATES]     (defaults: 2000000, 1000000)
#
# Prints a Markdown table and writes bench/mysql.json. Needs MariaDB, sysbench and PostgreSQL
# (FERRY_BENCH=1 scripts/install-prerequisites.sh) and builds ferry in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${1:-2000000}"
UPDATES="${2:-1000000}"
FERRY="${FERRY:-target/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
start_mariadb_pair
my_s() { my msource "$@"; }
my_t() { my mtarget "$@"; }

echo "== sysbench oltp_read_write --tables=1 --table-size=$SIZE prepare"
my_s -e "CREATE DATABASE sbtest"
sysbench oltp_read_write --db-driver=mysql --mysql-socket="$WORK/msource/mysqld.sock" --mysql-user=root \
  --mysql-db=sbtest --tables=1 --table-size="$SIZE" prepare >/dev/null
my_s sbtest -e "ANALYZE TABLE sbtest1" >/dev/null

echo "== baseline: mariadb-dump --single-transaction | mariadb"
my_t -e "CREATE DATABASE dumped"
start=$(now)
mariadb-dump --no-defaults -S "$WORK/msource/mysqld.sock" -uroot --single-transaction sbtest | my_t dumped
end=$(now)
RESULT[dump_seconds]=$(elapsed "$start" "$end")
echo "   ${RESULT[dump_seconds]} s"

SRC="mysql://root@127.0.0.1:$MSP/sbtest"
echo "== ferry copy MariaDB -> MariaDB"
start=$(now)
run_measured "$FERRY" copy --source "$SRC" --target "mysql://root@127.0.0.1:$MTP/copied" --name bench --parallel 2 >/dev/null 2>"$WORK/copy.log"
end=$(now)
RESULT[copy_seconds]=$(elapsed "$start" "$end"); RESULT[copy_peak_mib]=$((PEAK_KB / 1024))
echo "   ${RESULT[copy_seconds]} s, peak ${RESULT[copy_peak_mib]} MiB"
[ "$(my_s sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" = "$(my_t copied -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "copy differs" >&2; exit 1; }

echo "== ferry copy MariaDB -> PostgreSQL"
psql_t -d postgres -c "CREATE DATABASE pgcopy"
start=$(now)
run_measured "$FERRY" copy --source "$SRC" --target "postgres://postgres@127.0.0.1:$TP/pgcopy" --name bench --parallel 2 >/dev/null 2>"$WORK/pgcopy.log"
end=$(now)
RESULT[pg_copy_seconds]=$(elapsed "$start" "$end"); RESULT[pg_copy_peak_mib]=$((PEAK_KB / 1024))
echo "   ${RESULT[pg_copy_seconds]} s, peak ${RESULT[pg_copy_peak_mib]} MiB"
[ "$(psql_t -d pgcopy -Atc 'SELECT count(*) FROM sbtest.sbtest1')" = "$SIZE" ] || { echo "PostgreSQL copy lacks rows" >&2; exit 1; }

echo "== binary log apply: $UPDATES single-row updates in transactions of 1,000"
"$FERRY" run --source "$SRC" --target "mysql://root@127.0.0.1:$MTP/streamed" --name stream --parallel 2 >"$WORK/run.log" 2>&1 &
RUN=$!
until my_t -Nse "SELECT COUNT(*) FROM _ferry.tables WHERE migration = 'stream' AND state = 'copied'" 2>/dev/null | grep -q 1; do sleep 0.5; done
kill -TERM "$RUN"; wait "$RUN" || true
single_row_updates msource "$SIZE" "$UPDATES"
END_POSITION=$(binlog_end msource)
start=$(now)
"$FERRY" run --source "$SRC" --target "mysql://root@127.0.0.1:$MTP/streamed" --name stream >>"$WORK/run.log" 2>&1 &
RUN=$!
wait_ferry_reached mtarget stream "$END_POSITION"
end=$(now)
kill -TERM "$RUN"; wait "$RUN" || true
RESULT[apply_seconds]=$(elapsed "$start" "$end")
RESULT[apply_rate]=$(rate "$UPDATES" "$start" "$end")
echo "   caught up in ${RESULT[apply_seconds]} s: ${RESULT[apply_rate]} updates/s (including start-up)"
[ "$(my_s sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" = "$(my_t streamed -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "stream differs" >&2; exit 1; }

mkdir -p bench
ROWS_PER_S=$(python3 -c "print(int($SIZE / ${RESULT[copy_seconds]}))")
PG_ROWS_PER_S=$(python3 -c "print(int($SIZE / ${RESULT[pg_copy_seconds]}))")
RATIO=$(python3 -c "print(f'{${RESULT[dump_seconds]} / ${RESULT[copy_seconds]}:.2f}')")
cat > bench/mysql.json <<JSON
{"table_size": $SIZE, "updates": $UPDATES,
 "dump_pipe_seconds": ${RESULT[dump_seconds]},
 "copy_seconds": ${RESULT[copy_seconds]}, "copy_rows_per_second": $ROWS_PER_S, "copy_peak_mib": ${RESULT[copy_peak_mib]},
 "speedup_vs_dump_pipe": $RATIO,
 "postgres_copy_seconds": ${RESULT[pg_copy_seconds]}, "postgres_copy_rows_per_second": $PG_ROWS_PER_S, "postgres_copy_peak_mib": ${RESULT[pg_copy_peak_mib]},
 "apply_seconds": ${RESULT[apply_seconds]}, "apply_updates_per_second": ${RESULT[apply_rate]}}
JSON
echo
echo "| measurement | result |"
echo "|---|---|"
echo "| MariaDB -> MariaDB copy, sysbench $SIZE rows | ${RESULT[copy_seconds]} s ($ROWS_PER_S rows/s, peak ${RESULT[copy_peak_mib]} MiB) |"
echo "| mariadb-dump --single-transaction \| mariadb | ${RESULT[dump_seconds]} s (ferry is ${RATIO}x as fast) |"
echo "| MariaDB -> PostgreSQL copy | ${RESULT[pg_copy_seconds]} s ($PG_ROWS_PER_S rows/s, peak ${RESULT[pg_copy_peak_mib]} MiB) |"
echo "| binary log apply, $UPDATES updates | ${RESULT[apply_seconds]} s (${RESULT[apply_rate]} updates/s) |"
