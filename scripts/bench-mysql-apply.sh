#!/usr/bin/env bash
# Change apply, MariaDB to MariaDB: ferry next to native MariaDB replicas of the same source,
# each catching up on the same binary log backlog, one after the other on the same machine.
# Two replicas: a plain one (log_slave_updates off: it writes no binary log of what it
# applies) and one with log_slave_updates on, which, like ferry's target, logs every row it
# applies (what a replica that may be promoted, or that has replicas of its own, does).
#   1. one UPDATE of every row of a sysbench table in one transaction;
#   2. single-row updates in transactions of 1,000.
#
#   scripts/bench-mysql-apply.sh [TABLE_SIZE] [UPDATES]     (defaults: 1000000, 200000)
#
# Each backlog is written while ferry and the replica are stopped; the time runs from starting
# one of them until it has applied the source's last event (ferry's stored position; the
# replica's Exec_Master_Log_Pos). The tables are compared with CHECKSUM TABLE after each step.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${1:-1000000}"
UPDATES="${2:-200000}"
FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
stop_all() { stop_mariadb msource mtarget mreplica mlogging; rm -rf "$WORK"; }
trap stop_all EXIT
OPTIONS=(--innodb-buffer-pool-size=1G --innodb-doublewrite=0 --innodb-log-file-size=512M --max-allowed-packet=64M)
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
SRC="mysql://root@127.0.0.1:$MSP/sbtest"
TGT="mysql://root@127.0.0.1:$MTP/streamed"
"$FERRY" run --source "$SRC" --target "$TGT" --name apply --parallel 2 >"$WORK/run.log" 2>&1 &
RUN=$!
until my_t -Nse "SELECT COUNT(*) FROM _ferry.tables WHERE migration = 'apply' AND state = 'copied'" 2>/dev/null | grep -q 1; do sleep 0.5; done
replica_reached() { # END [REPLICA]
  my "${2:-mreplica}" -e "SHOW SLAVE STATUS\G" | python3 -c "
import sys; status = dict((part.strip() for part in line.split(':', 1)) for line in sys.stdin if ':' in line)
f = int(status['Relay_Master_Log_File'].rsplit('.', 1)[1]); o = int(status['Exec_Master_Log_Pos']); ef, eo = map(int, '$1'.split('/'))
sys.exit(0 if (f, o) >= (ef, eo) else 1)"
}
until ferry_reached mtarget apply "$(binlog_end msource)"; do sleep 0.2; done
until replica_reached "$(binlog_end msource)"; do sleep 0.2; done
until replica_reached "$(binlog_end msource)" mlogging; do sleep 0.2; done
kill -TERM "$RUN"; wait "$RUN" || true
my_r -e "STOP SLAVE"
my_l -e "STOP SLAVE"

# Runs ferry, then the replica, over the backlog just written; checks the three tables.
catch_up() { # LABEL
  local end; end=$(binlog_end msource)
  local start; start=$(now)
  "$FERRY" run --source "$SRC" --target "$TGT" --name apply >>"$WORK/run.log" 2>&1 &
  RUN=$!
  until ferry_reached mtarget apply "$end"; do sleep 0.05; done
  local done_at; done_at=$(now)
  # ferry's own CPU time (user + system) while it caught up: how much of the time is ferry's.
  RESULT[$1_ferry_cpu]=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$RUN/stat")
  kill -TERM "$RUN"; wait "$RUN" || true
  RESULT[$1_ferry]=$(elapsed "$start" "$done_at")
  start=$(now)
  my_r -e "START SLAVE"
  until replica_reached "$end"; do sleep 0.05; done
  done_at=$(now)
  my_r -e "STOP SLAVE"
  RESULT[$1_replica]=$(elapsed "$start" "$done_at")
  start=$(now)
  my_l -e "START SLAVE"
  until replica_reached "$end" mlogging; do sleep 0.05; done
  done_at=$(now)
  my_l -e "STOP SLAVE"
  RESULT[$1_logging]=$(elapsed "$start" "$done_at")
  local sum; sum=$(my_s sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)
  [ "$sum" = "$(my_t streamed -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "ferry's table differs" >&2; exit 1; }
  [ "$sum" = "$(my_r sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "the replica's table differs" >&2; exit 1; }
  [ "$sum" = "$(my_l sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" ] || { echo "the logging replica's table differs" >&2; exit 1; }
  echo "   ferry ${RESULT[$1_ferry]} s (${RESULT[$1_ferry_cpu]} s of CPU in ferry), native replica ${RESULT[$1_replica]} s, logging its updates ${RESULT[$1_logging]} s"
}

echo "== one UPDATE of $SIZE rows in one transaction"
my_s sbtest -e "UPDATE sbtest1 SET k = k + 1, c = REVERSE(c)"
catch_up big

echo "== $UPDATES single-row updates in transactions of 1,000"
single_row_updates msource "$SIZE" "$UPDATES"
catch_up small

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo
echo "| backlog (MariaDB to MariaDB, sysbench table of $SIZE rows) | ferry (CPU in ferry) | native replica | ferry / replica | replica with log_slave_updates | ferry / it |"
echo "|---|---|---|---|---|---|"
echo "| one UPDATE of $SIZE rows, one transaction | ${RESULT[big_ferry]} s (${RESULT[big_ferry_cpu]} s) | ${RESULT[big_replica]} s | $(ratio "${RESULT[big_ferry]}" "${RESULT[big_replica]}")x | ${RESULT[big_logging]} s | $(ratio "${RESULT[big_ferry]}" "${RESULT[big_logging]}")x |"
echo "| $UPDATES single-row updates, 1,000 per transaction | ${RESULT[small_ferry]} s (${RESULT[small_ferry_cpu]} s) | ${RESULT[small_replica]} s | $(ratio "${RESULT[small_ferry]}" "${RESULT[small_replica]}")x | ${RESULT[small_logging]} s | $(ratio "${RESULT[small_ferry]}" "${RESULT[small_logging]}")x |"
