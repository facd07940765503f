#!/usr/bin/env bash
# The copy anchors, each timed ROUNDS times in one run on the same throwaway servers (two
# PostgreSQL, two MariaDB, all on this machine), medians reported:
#   1. PostgreSQL to PostgreSQL: `ferry copy --parallel 2` of pgbench_accounts next to
#      `psql COPY TO STDOUT | psql COPY FROM STDIN` into a table with its primary key;
#   2. MariaDB to MariaDB: `ferry copy --parallel N` of a sysbench table next to
#      `mydumper -t N -r 100000 | myloader -t N` (dump, then load), for N = 1, 2 and 4, twice:
#      myloader's default (its sessions write no binary log) next to ferry with
#      `copy-binlog=off`, and myloader `--enable-binlog` next to ferry's default;
#   3. MariaDB to PostgreSQL: `ferry copy --parallel 2` of the sysbench table next to
#      `mariadb --batch --quick | psql COPY FROM STDIN` into the table ferry creates (with its
#      primary key), then the same secondary index ferry builds.
# Every copy is checked (CHECKSUM TABLE on MariaDB, row counts on PostgreSQL).
#
#   scripts/bench-copy-anchors.sh [ROWS] [ROUNDS]     (defaults: 2000000, 3)
#
# Prints a Markdown table and writes bench/copy-anchors.json. Needs PostgreSQL, MariaDB, sysbench
# and mydumper (FERRY_BENCH=1 scripts/install-prerequisites.sh); builds ferry in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${1:-2000000}"
ROUNDS="${2:-3}"
FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/measure.sh
source scripts/lib/mariadb.sh
start_mariadb_pair
my_s() { my msource "$@"; }
my_t() { my mtarget "$@"; }

echo "== sysbench table of $SIZE rows on MariaDB; pgbench_accounts of $SIZE rows on PostgreSQL"
my_s -e "CREATE DATABASE sbtest"
sysbench oltp_read_write --db-driver=mysql --mysql-socket="$WORK/msource/mysqld.sock" --mysql-user=root \
  --mysql-db=sbtest --tables=1 --table-size="$SIZE" prepare >/dev/null
my_s sbtest -e "ANALYZE TABLE sbtest1" >/dev/null
SUM=$(my_s sbtest -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)
psql_s -d postgres -c "CREATE DATABASE bench"
pgbench -q -i -s "$(( (SIZE + 99999) / 100000 ))" -h 127.0.0.1 -p "$SP" -U postgres bench >/dev/null 2>&1
ROWS=$(psql_s -d bench -Atc "SELECT count(*) FROM pgbench_accounts")
psql_s -d bench -c "VACUUM ANALYZE pgbench_accounts" >/dev/null
MSRC="mysql://root@127.0.0.1:$MSP/sbtest"
PSRC="postgres://postgres@127.0.0.1:$SP/bench"

fresh_pg() { psql_t -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null; }
fresh_my() { my_t -e "DROP DATABASE IF EXISTS $1"; }
ferry_copy() { # LABEL SOURCE TARGET PARALLEL NAME
  local start end
  start=$(now)
  run_measured "$FERRY" copy --source "$2" --target "$3" --parallel "$4" --name "$5" >"$WORK/$5.log" 2>&1 \
    || { cat "$WORK/$5.log"; exit 1; }
  end=$(now)
  add "$1" "$(elapsed "$start" "$end")"
  add "$1_peak_mib" $((PEAK_KB / 1024))
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  fresh_pg pipe
  psql_t -d pipe -c "CREATE TABLE pgbench_accounts (aid integer NOT NULL PRIMARY KEY, bid integer, abalance integer, filler character(84))"
  start=$(now)
  psql_s -d bench -c "COPY pgbench_accounts TO STDOUT" | psql_t -d pipe -c "COPY pgbench_accounts FROM STDIN"
  end=$(now)
  add pg_pipe "$(elapsed "$start" "$end")"
  fresh_pg pgcopy
  ferry_copy pg_ferry "$PSRC" "postgres://postgres@127.0.0.1:$TP/pgcopy" 2 "pgcopy_$round"
  [ "$(psql_t -d pgcopy -Atc 'SELECT count(*) FROM pgbench_accounts')" = "$ROWS" ] || { echo "PostgreSQL copy lacks rows" >&2; exit 1; }
  echo "   PostgreSQL: pipe $(last pg_pipe) s, ferry $(last pg_ferry) s"

  for threads in 1 2 4; do
    # Twice: myloader's default (it turns the binary log off for its sessions) against ferry
    # with copy-binlog=off, and both writing the target's binary log.
    for logged in off on; do
      rm -rf "$WORK/dump"
      fresh_my loaded
      start=$(now)
      # Their output is kept and shown only when one fails (set -e would end the run silently).
      mydumper -S "$WORK/msource/mysqld.sock" -u root -B sbtest -t "$threads" -r 100000 -o "$WORK/dump" >"$WORK/mydumper.log" 2>&1 \
        || { echo "mydumper failed:" >&2; tail -20 "$WORK/mydumper.log" >&2; exit 1; }
      myloader -S "$WORK/mtarget/mysqld.sock" -u root -d "$WORK/dump" -t "$threads" -B loaded -o $([ $logged = on ] && echo --enable-binlog) >"$WORK/myloader.log" 2>&1 \
        || { echo "myloader failed:" >&2; tail -20 "$WORK/myloader.log" >&2; exit 1; }
      end=$(now)
      add "my_mydumper_${threads}_$logged" "$(elapsed "$start" "$end")"
      [ "$(my_t loaded -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" = "$SUM" ] || { echo "myloader's table differs" >&2; exit 1; }
      fresh_my copied
      ferry_copy "my_ferry_${threads}_$logged" "$MSRC" "mysql://root@127.0.0.1:$MTP/copied?copy-binlog=$logged" "$threads" "mycopy_${threads}_${logged}_$round"
      [ "$(my_t copied -Nse 'CHECKSUM TABLE sbtest1' | cut -f2)" = "$SUM" ] || { echo "ferry's table differs" >&2; exit 1; }
      echo "   MariaDB, $threads threads, binary log $logged: mydumper | myloader $(last "my_mydumper_${threads}_$logged") s, ferry $(last "my_ferry_${threads}_$logged") s"
    done
  done

  fresh_pg mpipe
  psql_t -d mpipe -c "CREATE TABLE sbtest1 (id integer PRIMARY KEY, k integer NOT NULL DEFAULT 0, c character varying(120) NOT NULL DEFAULT '', pad character varying(60) NOT NULL DEFAULT '')"
  start=$(now)
  my_s sbtest --batch --skip-column-names --quick -e "SELECT id, k, c, pad FROM sbtest1" | psql_t -d mpipe -c "COPY sbtest1 FROM STDIN"
  psql_t -d mpipe -c "CREATE INDEX k_1 ON sbtest1 (k)"
  end=$(now)
  add mp_pipe "$(elapsed "$start" "$end")"
  [ "$(psql_t -d mpipe -Atc 'SELECT count(*) FROM sbtest1')" = "$SIZE" ] || { echo "the pipe lacks rows" >&2; exit 1; }
  fresh_pg mpcopy
  ferry_copy mp_ferry "$MSRC" "postgres://postgres@127.0.0.1:$TP/mpcopy" 2 "mpcopy_$round"
  [ "$(psql_t -d mpcopy -Atc 'SELECT count(*) FROM sbtest.sbtest1')" = "$SIZE" ] || { echo "ferry's PostgreSQL copy lacks rows" >&2; exit 1; }
  echo "   MariaDB to PostgreSQL: pipe $(last mp_pipe) s, ferry $(last mp_ferry) s"
done

mkdir -p bench
write_samples bench/copy-anchors.json "\"rows\": $SIZE, \"rounds\": $ROUNDS"
row() { # WHAT FERRY ANCHOR ANCHOR_NAME
  echo "| $1 | ${MEDIAN[$2]} s (peak ${MEDIAN[$2_peak_mib]} MiB) | $4 ${MEDIAN[$3]} s | $(ratio "${MEDIAN[$2]}" "${MEDIAN[$3]}") |"
}
echo
echo "| copy, $SIZE rows, median of $ROUNDS | ferry | anchor | ferry / anchor |"
echo "|---|---|---|---|"
row "PostgreSQL to PostgreSQL, --parallel 2" pg_ferry pg_pipe 'COPY TO STDOUT \| COPY FROM STDIN'
for threads in 1 2 4; do
  row "MariaDB to MariaDB, --parallel $threads, copy not in the target's binary log (copy-binlog=off)" "my_ferry_${threads}_off" "my_mydumper_${threads}_off" "mydumper \| myloader, $threads threads (its default):"
  row "MariaDB to MariaDB, --parallel $threads, copy in the target's binary log" "my_ferry_${threads}_on" "my_mydumper_${threads}_on" "mydumper \| myloader --enable-binlog, $threads threads:"
done
row "MariaDB to PostgreSQL, --parallel 2" mp_ferry mp_pipe 'mariadb --batch \| COPY FROM STDIN, then the index'
