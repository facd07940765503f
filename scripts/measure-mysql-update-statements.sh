#!/usr/bin/env bash
# The cost on one MariaDB server of applying 1M full-row updates of a sysbench table in
# 10,000-row transactions, by the statements a SQL applier could send: LOAD DATA ... REPLACE
# (ferry's), an InnoDB or MEMORY staging table with UPDATE ... JOIN, and MEMORY staging with
# INSERT ... ON DUPLICATE KEY UPDATE. Each approach applies real changes (two files, applied in
# turn). Prints wall time and the server's CPU.
#
#   scripts/measure-mysql-update-statements.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
stop_all() { stop_mariadb mt; stop_servers; }
trap stop_all EXIT
OPTIONS=(--innodb-buffer-pool-size=1G --innodb-doublewrite=0 --innodb-log-file-size=512M --max-allowed-packet=64M --secure-file-priv=)
P=$(free_port); start_mariadb mt "$P" 2 "${OPTIONS[@]}"
my mt -e "CREATE DATABASE sbtest"
sysbench oltp_read_write --db-driver=mysql --mysql-socket="$WORK/mt/mysqld.sock" --mysql-user=root --mysql-db=sbtest --tables=1 --table-size=1000000 prepare >/dev/null
F="$WORK/mt/tmp/rows.txt"
my mt sbtest -e "SELECT id, k + 1, REVERSE(c), pad INTO OUTFILE '$F' FROM sbtest1"
my mt sbtest -e "SELECT id, k, c, pad INTO OUTFILE '$WORK/mt/tmp/orig.txt' FROM sbtest1"
mkdir -p "$WORK/mt/tmp/a" "$WORK/mt/tmp/b"
split -l 10000 -d -a 3 "$F" "$WORK/mt/tmp/a/part."
split -l 10000 -d -a 3 "$WORK/mt/tmp/orig.txt" "$WORK/mt/tmp/b/part."
[ "$(id -u)" = 0 ] && chown -R mysql: "$WORK/mt/tmp"
TPID=$(cat "$WORK/mt/mysqld.pid")
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
run() { # label sql-per-part
  local label=$1 sql=$2 start end c0 c1
  c0=$(cpu "$TPID"); start=$(now)
  { for part in "$WORK"/mt/tmp/$SIDE/part.*; do echo "START TRANSACTION; ${sql//PART/$part} COMMIT;"; done; } | my mt sbtest
  end=$(now); c1=$(cpu "$TPID")
  echo "$label: $(elapsed "$start" "$end") s, server CPU $(python3 -c "print(round($c1-$c0,2))") s"
}
my mt sbtest -e "CREATE TABLE staging (id INT NOT NULL PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL) ENGINE=InnoDB"
my mt sbtest -e "CREATE TEMPORARY TABLE x (id INT) ENGINE=MEMORY" || true
for approach in 1 2 3 4; do
for SIDE in a b; do
case $approach in
1) run "LOAD REPLACE (10k per txn) $SIDE" "LOAD DATA INFILE 'PART' REPLACE INTO TABLE sbtest1 (id, k, c, pad);" ;;
2) run "staging InnoDB + UPDATE JOIN $SIDE" "DELETE FROM staging; LOAD DATA INFILE 'PART' INTO TABLE staging (id, k, c, pad); UPDATE sbtest1 t JOIN staging s USING (id) SET t.k = s.k, t.c = s.c, t.pad = s.pad;" ;;
3) run "temp MEMORY staging + UPDATE JOIN $SIDE" "CREATE TEMPORARY TABLE IF NOT EXISTS tstage (id INT NOT NULL PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL) ENGINE=MEMORY; DELETE FROM tstage; LOAD DATA INFILE 'PART' INTO TABLE tstage (id, k, c, pad); UPDATE sbtest1 t JOIN tstage s USING (id) SET t.k = s.k, t.c = s.c, t.pad = s.pad;" ;;
4) run "temp MEMORY staging + INSERT ODKU $SIDE" "CREATE TEMPORARY TABLE IF NOT EXISTS tstage (id INT NOT NULL PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL) ENGINE=MEMORY; DELETE FROM tstage; LOAD DATA INFILE 'PART' INTO TABLE tstage (id, k, c, pad); INSERT INTO sbtest1 (id, k, c, pad) SELECT id, k, c, pad FROM tstage ON DUPLICATE KEY UPDATE k = VALUES(k), c = VALUES(c), pad = VALUES(pad);" ;;
esac
done
done
