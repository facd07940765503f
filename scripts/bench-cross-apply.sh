#!/usr/bin/env bash
# Change apply across engines: one UPDATE of every row of a 1M-row table in one transaction,
# caught up by ferry MariaDB -> PostgreSQL and PostgreSQL -> MariaDB. There is no native
# replication across engines to set next to it; the same-engine anchors are in
# scripts/bench-anchors.sh. Each backlog is written while ferry is stopped, then a marker row;
# the time runs from starting ferry until the marker is visible on the target. The tables are
# compared row for row (md5 of every row's text, computed alike on both engines) after each
# catch-up.
#
#   scripts/bench-cross-apply.sh [ROWS] [ROUNDS]      (defaults: 1000000, 3)
#
# Writes bench/cross-apply.json. Needs MariaDB, sysbench and PostgreSQL
# (FERRY_BENCH=1 scripts/install-prerequisites.sh); builds ferry in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
ROUNDS="${2:-3}"
FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
start_mariadb_pair

# The marker on a MariaDB server (name, database): one session polls until it holds VALUE
# (pg_marker_is, in scripts/lib/servers.sh, for PostgreSQL).
my_marker_is() { # NAME DATABASE VALUE
  until my "$1" "$2" -N >/dev/null 2>&1 <<SQL
DELIMITER //
BEGIN NOT ATOMIC
  WHILE COALESCE((SELECT value FROM marker WHERE id = 1), -1) <> $3 DO DO SLEEP(0.05); END WHILE;
END//
SQL
  do sleep 0.2; done
}
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# catch_up LABEL WAIT_COMMAND...: runs ferry (`run` with the RUN_ARGS array) until
# WAIT_COMMAND returns, then stops it; records the time as LABEL, ferry's CPU and peak memory
# (nothing for an empty LABEL: the first run, which copies).
catch_up() {
  local label=$1; shift
  local start; start=$(now)
  "$FERRY" run "${RUN_ARGS[@]}" >>"$WORK/run.log" 2>&1 &
  RUN=$!
  "$@"
  local done_at; done_at=$(now)
  [ -z "$label" ] || { add "${label}_cpu" "$(cpu "$RUN")"; add "${label}_peak_mib" "$(peak_mib "$RUN")"; }
  kill -TERM "$RUN"; wait "$RUN" || true
  [ -z "$label" ] || add "$label" "$(elapsed "$start" "$done_at")"
}

echo "== MariaDB -> PostgreSQL: sysbench table of $ROWS rows"
my msource -e "CREATE DATABASE sbtest"
sysbench oltp_read_write --db-driver=mysql --mysql-socket="$WORK/msource/mysqld.sock" --mysql-user=root \
  --mysql-db=sbtest --tables=1 --table-size="$ROWS" prepare >/dev/null
my msource sbtest -e "CREATE TABLE marker (id INT PRIMARY KEY, value BIGINT NOT NULL); INSERT INTO marker VALUES (1, 0)"
psql_t -d postgres -c "CREATE DATABASE crossed"
RUN_ARGS=(--source "mysql://root@127.0.0.1:$MSP/sbtest" --target "postgres://postgres@127.0.0.1:$TP/crossed" --name to_pg --parallel 2)
MARK=1; my msource sbtest -e "UPDATE marker SET value = $MARK"
catch_up "" pg_marker_is psql_t crossed sbtest.marker "$MARK"
# (A blank-padded CHAR is compared as text: without its padding, as MariaDB returns it.)
# md5 per 10,000 keys (a group's text stays far below max_allowed_packet, which would cut a
# GROUP_CONCAT of the whole table short), one line per group, on each engine alike.
my msource -e "SET GLOBAL group_concat_max_len = 1073741824"
my mtarget -e "SET GLOBAL group_concat_max_len = 1073741824"
my_sums() { # NAME DATABASE TABLE KEY COLUMNS...
  local name=$1 database=$2 table=$3 key=$4; shift 4
  my "$name" "$database" -Nse "SELECT $key DIV 10000, MD5(GROUP_CONCAT(CONCAT_WS('|', $(IFS=,; echo "$*")) ORDER BY $key SEPARATOR '')) FROM $table GROUP BY 1 ORDER BY 1"
}
pg_sums() { # PSQL_FUNCTION DATABASE TABLE KEY COLUMNS...
  local run=$1 database=$2 table=$3 key=$4; shift 4
  "$run" -d "$database" -AtF $'\t' -c "SELECT $key / 10000, md5(string_agg(concat_ws('|', $(IFS=,; echo "$*")), '' ORDER BY $key)) FROM $table GROUP BY 1 ORDER BY 1"
}
for round in $(seq 1 "$ROUNDS"); do
  my msource sbtest -e "UPDATE sbtest1 SET k = k + 1, c = REVERSE(c)"
  MARK=$((MARK + 1)); my msource sbtest -e "UPDATE marker SET value = $MARK"
  catch_up to_pg pg_marker_is psql_t crossed sbtest.marker "$MARK"
  [ "$(my_sums msource sbtest sbtest1 id id k c pad)" = "$(pg_sums psql_t crossed sbtest.sbtest1 id id k c pad)" ] \
    || { echo "PostgreSQL's table differs from MariaDB's" >&2; exit 1; }
  echo "   round $round: caught up in $(last to_pg) s ($(last to_pg_cpu) s of CPU in ferry, peak $(last to_pg_peak_mib) MiB)"
done

echo "== PostgreSQL -> MariaDB: pgbench_accounts of $ROWS rows"
psql_s -d postgres -c "CREATE DATABASE bench"
pgbench -q -i -s $((ROWS / 100000)) -h 127.0.0.1 -p "$SP" -U postgres bench >/dev/null 2>&1
psql_s -d bench -c "CREATE TABLE marker (id integer PRIMARY KEY, value bigint NOT NULL); INSERT INTO marker VALUES (1, 0)"
RUN_ARGS=(--source "postgres://postgres@127.0.0.1:$SP/bench" --target "mysql://root@127.0.0.1:$MTP/crossed"
  --tables "public.pgbench_accounts,public.marker" --name to_my --parallel 2)
MARK=$((MARK + 1)); psql_s -d bench -c "UPDATE marker SET value = $MARK"
catch_up "" my_marker_is mtarget crossed "$MARK"
for round in $(seq 1 "$ROUNDS"); do
  psql_s -d bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1"
  MARK=$((MARK + 1)); psql_s -d bench -c "UPDATE marker SET value = $MARK"
  catch_up to_my my_marker_is mtarget crossed "$MARK"
  [ "$(pg_sums psql_s bench pgbench_accounts aid aid bid abalance filler::text)" = "$(my_sums mtarget crossed pgbench_accounts aid aid bid abalance filler)" ] \
    || { echo "MariaDB's table differs from PostgreSQL's" >&2; exit 1; }
  echo "   round $round: caught up in $(last to_my) s ($(last to_my_cpu) s of CPU in ferry, peak $(last to_my_peak_mib) MiB)"
done

write_samples bench/cross-apply.json "\"rows\": $ROWS, \"rounds\": $ROUNDS"
echo
echo "| one UPDATE of $ROWS rows, one transaction (median of $ROUNDS) | ferry caught up in | changes/s | CPU in ferry | peak memory |"
echo "|---|---|---|---|---|"
echo "| MariaDB to PostgreSQL | ${MEDIAN[to_pg]} s | $(python3 -c "print(int($ROWS / ${MEDIAN[to_pg]}))") | ${MEDIAN[to_pg_cpu]} s | ${MEDIAN[to_pg_peak_mib]} MiB |"
echo "| PostgreSQL to MariaDB | ${MEDIAN[to_my]} s | $(python3 -c "print(int($ROWS / ${MEDIAN[to_my]}))") | ${MEDIAN[to_my_cpu]} s | ${MEDIAN[to_my_peak_mib]} MiB |"
