#!/usr/bin/env bash
# Change apply, MariaDB to MariaDB: ferry next to native MariaDB replicas of the same source,
# each catching up on the same binary log backlog, one after the other on the same machine.
# Two replicas: a plain one (log_slave_updates off: it writes no binary log of what it
# applies) and one with log_slave_updates on, which, like ferry's target, logs every row it
# applies (what a replica that may be promoted, or that has replicas of its own, does).
#   1. one UPDATE of every row of a sysbench table in one transaction;
#   2. sysbench oltp_write_only (4 threads: updates, a delete and an insert per transaction)
#      for WRITE_SECONDS;
# both ROUNDS times, medians reported; then
#   3. lag while ferry streams sysbench oltp_write_only at LIVE_RATE transactions/s for 60 s.
#
#   scripts/bench-mysql-apply.sh [TABLE_SIZE] [WRITE_SECONDS] [ROUNDS] [LIVE_RATE]
#                                (defaults: 1000000, 60, 3, 500)
#
# Each backlog is written while ferry and the replica are stopped; the time runs from starting
# one of them until it has applied the source's last event (ferry's stored position; the
# replica's Exec_Master_Log_Pos). The tables are compared with CHECKSUM TABLE after each step.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${1:-1000000}"
WRITE_SECONDS="${2:-60}"
ROUNDS="${3:-3}"
LIVE_SECONDS="${LIVE_SECONDS:-60}"
LIVE_RATE="${4:-500}"
FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
stop_all() { stop_mariadb msource mtarget mreplica mlogging; rm -rf "$WORK"; }
trap stop_all EXIT
MSP=$(free_port); start_mariadb msource "$MSP" 1 "${OPTIONS[@]}"
MTP=$(free_port); start_mariadb mtarget "$MTP" 2 "${OPTIONS[@]}"
MRP=$(free_port); start_mariadb mreplica "$MRP" 3 "${OPTIONS[@]}"
MLP=$(free_port); start_mariadb mlogging "$MLP" 4 "${OPTIONS[@]}" --log-slave-updates
my_s() { my msource "$@"; }
my_t() { my mtarget "$@"; }
my_r() { my mreplica "$@"; }
my_l() { my mlogging "$@"; }

# The replica follows the source from its first event.
FIRST=$(my_s -Nse "SHOW BINARY LOGS" | head -1 | cut -f1)
for replica in mreplica mlogging; do
  my "$replica" -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MSP, MASTER_USER='root', MASTER_LOG_FILE='$FIRST', MASTER_LOG_POS=4, MASTER_USE_GTID=no; START SLAVE;"
done
echo "== sysbench prepare, $SIZE rows"
my_s -e "CREATE DATABASE sbtest"
sysbench oltp_read_write --db-driver=mysql --mysql-socket="$WORK/msource/mysqld.sock" --mysql-user=root \
  --mysql-db=sbtest --tables=1 --table-size="$SIZE" prepare >/dev/null
my_s sbtest -e "CREATE TABLE marker (id INT PRIMARY KEY, value BIGINT NOT NULL); INSERT INTO marker VALUES (1, 0)"
SRC="mysql://root@127.0.0.1:$MSP/sbtest"
TGT="mysql://root@127.0.0.1:$MTP/streamed"
"$FERRY" run --source "$SRC" --target "$TGT" --name apply --parallel 2 >"$WORK/run.log" 2>&1 &
RUN=$!
until my_t -Nse "SELECT COUNT(*) FROM _ferry.tables WHERE migration = 'apply' AND state = 'copied'" 2>/dev/null | grep -qx 2; do sleep 0.5; done
wait_ferry_reached mtarget apply "$(binlog_end msource)"
wait_replica_reached mreplica "$(binlog_end msource)"
wait_replica_reached mlogging "$(binlog_end msource)"
kill -TERM "$RUN"; wait "$RUN" || true
my_r -e "STOP SLAVE"
my_l -e "STOP SLAVE"

# Runs ferry, then the replica, over the backlog just written; checks the three tables.
catch_up() { # LABEL
  local end; end=$(binlog_end msource)
  local start; start=$(now)
  "$FERRY" run --source "$SRC" --target "$TGT" --name apply >>"$WORK/run.log" 2>&1 &
  RUN=$!
  wait_ferry_reached mtarget apply "$end"
  local done_at; done_at=$(now)
  # ferry's own CPU time (user + system) while it caught up: how much of the time is ferry's.
  add "$1_ferry_cpu" "$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$RUN/stat")"
  add "$1_ferry_peak_mib" "$(peak_mib "$RUN")"
  kill -TERM "$RUN"; wait "$RUN" || true
  add "$1_ferry" "$(elapsed "$start" "$done_at")"
  start=$(now)
  my_r -e "START SLAVE"
  wait_replica_reached mreplica "$end"
  done_at=$(now)
  my_r -e "STOP SLAVE"
  add "$1_replica" "$(elapsed "$start" "$done_at")"
  start=$(now)
  my_l -e "START SLAVE"
  wait_replica_reached mlogging "$end"
  done_at=$(now)
  my_l -e "STOP SLAVE"
  add "$1_logging" "$(elapsed "$start" "$done_at")"
  local sum; sum=$(my_s sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)
  [ "$sum" = "$(my_t streamed -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "ferry's table differs" >&2; exit 1; }
  [ "$sum" = "$(my_r sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "the replica's table differs" >&2; exit 1; }
  [ "$sum" = "$(my_l sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "the logging replica's table differs" >&2; exit 1; }
  echo "   ferry $(last "$1_ferry") s ($(last "$1_ferry_cpu") s of CPU in ferry, peak $(last "$1_ferry_peak_mib") MiB), native replica $(last "$1_replica") s, logging its updates $(last "$1_logging") s"
}

SYSBENCH=(--db-driver=mysql --mysql-socket="$WORK/msource/mysqld.sock" --mysql-user=root --mysql-db=sbtest --tables=1 --table-size="$SIZE")
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS: one UPDATE of $SIZE rows in one transaction"
  my_s sbtest -e "UPDATE sbtest1 SET k = k + 1, c = REVERSE(c)"
  catch_up big
  echo "== round $round of $ROUNDS: sysbench oltp_write_only, 4 threads, $WRITE_SECONDS s"
  sysbench oltp_write_only "${SYSBENCH[@]}" --threads=4 --time="$WRITE_SECONDS" run | grep -E "transactions:" || true
  catch_up mixed
done

echo "== lag while ferry streams sysbench oltp_write_only at $LIVE_RATE transactions/s for $LIVE_SECONDS s"
"$FERRY" run --source "$SRC" --target "$TGT" --name apply >>"$WORK/run.log" 2>&1 &
RUN=$!
wait_ferry_reached mtarget apply "$(binlog_end msource)"
heartbeat_command() { my_s sbtest -e "UPDATE marker SET value = CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED) WHERE id = 1"; }
sample_command() { my_t streamed -Nse "SELECT value, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED) FROM marker WHERE id = 1" | tr '\t' ' '; }
sysbench oltp_write_only "${SYSBENCH[@]}" --threads=4 --rate="$LIVE_RATE" --time=$((LIVE_SECONDS + 2)) run >"$WORK/live.log" 2>&1 &
LOAD=$!
lag_run "$LIVE_SECONDS"
LIVE_PEAK=$(peak_mib "$RUN")
wait "$LOAD" || true
LIVE_TPS=$(grep -oE "transactions: +[0-9]+ +\([0-9.]+" "$WORK/live.log" | grep -oE "[0-9.]+$" | xargs printf "%.0f" || echo 0)
kill -TERM "$RUN"; wait "$RUN" || true

write_samples bench/mysql-apply.json "\"rows\": $SIZE, \"rounds\": $ROUNDS, \"write_seconds\": $WRITE_SECONDS, \"live_rate\": $LIVE_RATE, \"live_tps\": ${LIVE_TPS:-0}, \"lag_p50\": $LAG_P50, \"lag_p99\": $LAG_P99, \"lag_max\": $LAG_MAX, \"live_peak_mib\": $LIVE_PEAK"
echo
echo "| backlog (MariaDB to MariaDB, sysbench table of $SIZE rows), median of $ROUNDS | ferry (CPU in ferry; peak memory) | native replica | ferry / replica | replica with log_slave_updates | ferry / it |"
echo "|---|---|---|---|---|---|"
echo "| one UPDATE of $SIZE rows, one transaction | ${MEDIAN[big_ferry]} s (${MEDIAN[big_ferry_cpu]} s; ${MEDIAN[big_ferry_peak_mib]} MiB) | ${MEDIAN[big_replica]} s | $(ratio "${MEDIAN[big_ferry]}" "${MEDIAN[big_replica]}") | ${MEDIAN[big_logging]} s | $(ratio "${MEDIAN[big_ferry]}" "${MEDIAN[big_logging]}") |"
echo "| sysbench oltp_write_only, 4 threads, $WRITE_SECONDS s | ${MEDIAN[mixed_ferry]} s (${MEDIAN[mixed_ferry_cpu]} s; ${MEDIAN[mixed_ferry_peak_mib]} MiB) | ${MEDIAN[mixed_replica]} s | $(ratio "${MEDIAN[mixed_ferry]}" "${MEDIAN[mixed_replica]}") | ${MEDIAN[mixed_logging]} s | $(ratio "${MEDIAN[mixed_ferry]}" "${MEDIAN[mixed_logging]}") |"
echo "| lag streaming sysbench oltp_write_only at ${LIVE_TPS:-?} tps for $LIVE_SECONDS s | p50 $LAG_P50 s, p99 $LAG_P99 s, max $LAG_MAX s (peak $LIVE_PEAK MiB) | | | | |"
