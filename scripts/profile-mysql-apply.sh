#!/usr/bin/env bash
# Where the time of a catch-up on one 1M-row UPDATE goes, MariaDB to MariaDB: the apply task's
# per-batch debug log (how long it waited for each batch, how long applying took) and the CPU of
# ferry, the target and the source servers. Two rounds. Release build of ferry.
#
#   scripts/profile-mysql-apply.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
start_mariadb_pair
my msource -e "CREATE DATABASE sbtest"
sysbench oltp_read_write --db-driver=mysql --mysql-socket="$WORK/msource/mysqld.sock" --mysql-user=root --mysql-db=sbtest --tables=1 --table-size=1000000 prepare >/dev/null
SRC="mysql://root@127.0.0.1:$MSP/sbtest"; TGT="mysql://root@127.0.0.1:$MTP/streamed"
"$FERRY" run --source "$SRC" --target "$TGT" --name apply --parallel 2 >"$WORK/run.log" 2>&1 &
RUN=$!
until my mtarget -Nse "SELECT COUNT(*) FROM _ferry.tables WHERE migration = 'apply' AND state = 'copied'" 2>/dev/null | grep -qx 1; do sleep 0.5; done
wait_ferry_reached mtarget apply "$(binlog_end msource)"
kill -TERM "$RUN"; wait "$RUN" || true
for round in 1 2; do
my msource sbtest -e "UPDATE sbtest1 SET k = k + 1, c = REVERSE(c)"
end=$(binlog_end msource)
start=$(now)
FERRY_LOG="warn,ferry_engine=debug" "$FERRY" run --source "$SRC" --target "$TGT" --name apply >"$WORK/profile.log" 2>&1 &
RUN=$!
# CPU of the target server while ferry catches up
TPID=$(cat "$WORK/mtarget/mysqld.pid"); SPID=$(cat "$WORK/msource/mysqld.pid")
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
t0=$(cpu "$TPID"); s0=$(cpu "$SPID")
wait_ferry_reached mtarget apply "$end"
done_at=$(now)
t1=$(cpu "$TPID"); s1=$(cpu "$SPID")
echo "round $round: caught up in $(elapsed "$start" "$done_at") s; ferry CPU $(cpu "$RUN") s; target mysqld CPU $(python3 -c "print(round($t1-$t0,2))") s; source mysqld CPU $(python3 -c "print(round($s1-$s0,2))") s"
kill -TERM "$RUN"; wait "$RUN" || true
grep "batch applied" "$WORK/profile.log" | python3 -c "
import re, sys
rows = [(int(re.search(r'changes=(\d+)', l).group(1)), int(re.search(r'waited_ms=(\d+)', l).group(1)), int(re.search(r'applied_ms=(\d+)', l).group(1))) for l in sys.stdin]
print(f'  batches {len(rows)}, changes {sum(r[0] for r in rows)}, waited {sum(r[1] for r in rows)} ms, applied {sum(r[2] for r in rows)} ms; first waited {rows[0][1] if rows else 0} ms')
print('  applied per batch (ms):', [r[2] for r in rows][:12], '...')
print('  waited per batch (ms):', [r[1] for r in rows][:12], '...')"
done
