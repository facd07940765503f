# Throwaway MariaDB servers for the benchmark scripts (sourced after scripts/lib/servers.sh, whose
# $WORK they live in): start_mariadb NAME PORT SERVER_ID [EXTRA mariadbd OPTIONS...] starts one
# with a row-based binary log on 127.0.0.1:PORT, socket $WORK/NAME/mysqld.sock; stop_mariadb
# NAME... kills them. my NAME [mariadb client arguments] talks to one as root.
RUNAS=$(id -un); [ "$(id -u)" = 0 ] && RUNAS=mysql
chmod 755 "$WORK"
start_mariadb() {
  local name=$1 port=$2 id=$3; shift 3
  local dir="$WORK/$name"
  mkdir -p "$dir/tmp"; [ "$(id -u)" = 0 ] && chown -R mysql: "$dir"
  # Own tmpdir: a starting MariaDB deletes every #sql* file in its tmpdir.
  mariadb-install-db --no-defaults --user="$RUNAS" --datadir="$dir/data" --tmpdir="$dir/tmp" --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
  mariadbd --no-defaults --user="$RUNAS" --datadir="$dir/data" --tmpdir="$dir/tmp" --bind-address=127.0.0.1 --port="$port" \
    --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" --server-id="$id" \
    --log-bin="$dir/data/binlog" --binlog-format=ROW --binlog-row-image=FULL \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --character-set-server=utf8mb4 "$@" >/dev/null 2>&1 &
  for _ in $(seq 1 300); do mariadb-admin --no-defaults -S "$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "MariaDB $name did not start" >&2; exit 1
}
# start_mariadb_pair: a source (msource, port MSP, server id 1) and a target (mtarget, MTP, 2)
# with the benchmarks' settings (OPTIONS), both stopped on exit along with the PostgreSQL pair.
OPTIONS=(--innodb-buffer-pool-size=1G --innodb-doublewrite=0 --innodb-log-file-size=512M --max-allowed-packet=64M)
start_mariadb_pair() {
  trap 'stop_mariadb msource mtarget; stop_servers' EXIT
  MSP=$(free_port); start_mariadb msource "$MSP" 1 "${OPTIONS[@]}"
  MTP=$(free_port); start_mariadb mtarget "$MTP" 2 "${OPTIONS[@]}"
}
stop_mariadb() { for name in "$@"; do [ -f "$WORK/$name/mysqld.pid" ] && kill -9 "$(cat "$WORK/$name/mysqld.pid")" 2>/dev/null || true; done; }
my() { local name=$1; shift; mariadb --no-defaults -S "$WORK/$name/mysqld.sock" -uroot "$@"; }
# binlog_end NAME: the server's current binary log end as FILE_NUMBER/OFFSET.
binlog_end() { my "$1" -Nse "SHOW MASTER STATUS" | awk '{n=$1; sub(/.*\./, "", n); print n+0 "/" $2}'; }
# wait_ferry_reached NAME MIGRATION END: returns once migration MIGRATION's stored position on
# the target server NAME has reached END (FILE_NUMBER/OFFSET; the stored form is
# `mysql:FILE/OFFSET@SERVER#GTID`). One client session; the server itself re-reads the position
# every 50 ms (a client and a python3 process per reading cost a sizeable share of the two
# cores, taken from whatever was being timed). Retried while the table does not exist yet.
wait_ferry_reached() {
  local file=${3%/*} offset=${3#*/}
  until my "$1" -N >/dev/null 2>&1 <<SQL
DELIMITER //
BEGIN NOT ATOMIC
  DECLARE reached BOOLEAN DEFAULT FALSE;
  WHILE NOT reached DO
    SELECT COALESCE(MAX((CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(SUBSTRING_INDEX(position, '@', 1), ':', -1), '/', 1) AS UNSIGNED),
                         CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(position, '@', 1), '/', -1) AS UNSIGNED)) >= ($file, $offset)), FALSE)
      INTO reached FROM _ferry.streams WHERE migration = '$2';
    IF NOT reached THEN DO SLEEP(0.05); END IF;
  END WHILE;
END//
SQL
  do sleep 0.2; done
}
# wait_replica_reached NAME END: returns once the replica NAME has executed the source's binary
# log up to END (FILE_NUMBER/OFFSET): the server's own MASTER_POS_WAIT, no polling. It answers
# NULL while the replica's SQL thread is not running yet (just after START SLAVE): asked again.
# -1 after an hour: the replica is stuck.
wait_replica_reached() {
  local file waited tries=0; file=$(printf 'binlog.%06d' "${2%/*}")
  until waited=$(my "$1" -Nse "SELECT MASTER_POS_WAIT('$file', ${2#*/}, 3600)") && [[ "$waited" =~ ^[0-9]+$ ]]; do
    [ "$waited" != -1 ] || { echo "replica $1 did not reach $2 in an hour" >&2; exit 1; }
    tries=$((tries + 1)); [ "$tries" -lt 200 ] || { echo "replica $1 is not replicating" >&2; exit 1; }
    sleep 0.05
  done
}
# single_row_updates NAME SIZE UPDATES: UPDATES single-row updates of sbtest.sbtest1 (SIZE rows)
# on server NAME, in transactions of 1,000.
single_row_updates() {
  my "$1" sbtest <<SQL
DELIMITER //
CREATE PROCEDURE updates(total INT) BEGIN DECLARE i INT DEFAULT 0;
  WHILE i < total DO
    IF i % 1000 = 0 THEN START TRANSACTION; END IF;
    UPDATE sbtest1 SET k = k + 1 WHERE id = 1 + (i * 7919) % $2;
    SET i = i + 1;
    IF i % 1000 = 0 THEN COMMIT; END IF;
  END WHILE; COMMIT; END//
DELIMITER ;
CALL updates($3);
SQL
}
