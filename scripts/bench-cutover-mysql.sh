#!/usr/bin/env bash
# Cutover under load for the pairs with MySQL/MariaDB: MariaDB to MariaDB, MariaDB to PostgreSQL
# and PostgreSQL to MariaDB. For each pair, sysbench oltp_write_only (4 threads; on MariaDB as a
# non-admin account, which the fence stops) writes to the old database; ferry cuts over, the
# load moves to the new database, ferry rolls back; ROUNDS times. Reports the write downtime
# ferry measured for every switch and the dry run's prediction, and checks at the end that both
# databases are equal (ferry verify).
#
#   scripts/bench-cutover-mysql.sh [TABLE_SIZE] [ROUNDS]     (defaults: 100000 rows, 2 rounds)
#
# Writes bench/cutover-mysql.json. Needs MariaDB, sysbench and PostgreSQL
# (FERRY_BENCH=1 scripts/install-prerequisites.sh) and builds ferry in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${1:-100000}"
ROUNDS="${2:-2}"
FERRY="${FERRY:-target/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry
source scripts/lib/servers.sh
source scripts/lib/mariadb.sh
stop_all() { stop_mariadb m1 m2 m3 m4; stop_servers; }
trap stop_all EXIT
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
join() { local IFS=,; echo "$*"; }

# sysbench against one database: "mysql PORT" or "pgsql PORT"
sysbench_args() {
  case "$1" in
    mysql) echo "--db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$2 --mysql-user=app --mysql-password=app --mysql-db=sbtest" ;;
    pgsql) echo "--db-driver=pgsql --pgsql-host=127.0.0.1 --pgsql-port=$2 --pgsql-user=postgres --pgsql-db=sbtest" ;;
  esac
}
app_user() { # MariaDB server name: the application's non-admin account
  my "$1" -e "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT, UPDATE, DELETE ON sbtest.* TO 'app'@'%';"
}

RESULTS=()
bench_pair() { # label old_kind old_port old_url new_kind new_port new_url
  local label=$1 old_kind=$2 old_port=$3 OLD=$4 new_kind=$5 new_port=$6 NEW=$7
  echo "== $label: sysbench oltp_write_only, $SIZE rows"
  # shellcheck disable=SC2046
  sysbench oltp_write_only $(sysbench_args "$old_kind" "$old_port" | sed 's/--mysql-user=app --mysql-password=app/--mysql-user=root/') \
    --tables=1 --table-size="$SIZE" prepare >/dev/null
  local api; api=$(free_port)
  "$FERRY" run --source "$OLD" --target "$NEW" --name "$label" --parallel 2 --listen "127.0.0.1:$api" >"$WORK/$label.run.log" 2>&1 &
  local ferry_pid=$!
  status() { python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$api/api/status'))$1)" 2>/dev/null || echo none; }
  until [ "$(status "['forward']['stage']")" = streaming ]; do kill -0 "$ferry_pid" || { tail -30 "$WORK/$label.run.log"; exit 1; }; sleep 0.5; done
  [ "$new_kind" = pgsql ] && psql_t -d sbtest -c "ALTER DATABASE sbtest SET search_path = sbtest, public" >/dev/null
  "$FERRY" verify --source "$OLD" --target "$NEW" --name "$label" --while-streaming >"$WORK/$label.verify.log" 2>&1
  load() { # kind port tag: sysbench until the fence stops it
    # shellcheck disable=SC2046
    sysbench oltp_write_only $(sysbench_args "$1" "$2") --tables=1 --table-size="$SIZE" --threads=4 --time=300 \
      --report-interval=1 run >"$WORK/$label.$3.sysbench.log" 2>&1 &
    LOAD_PID=$!
  }
  # The fence ends sysbench's sessions before its summary: the mean of its per-second reports.
  tps() { grep -oE "tps: [0-9.]+" "$WORK/$label.$1.sysbench.log" | awk '{ sum += $2; n++ } END { if (n) printf "%.0f", sum / n; else print "?" }'; }
  load "$old_kind" "$old_port" dry
  sleep 5
  "$FERRY" cutover --source "$OLD" --target "$NEW" --name "$label" --dry-run --json --max-lag 1s --stable-for 3s >"$WORK/$label.dry.json"
  local predicted; predicted=$(field "$WORK/$label.dry.json" predicted_downtime_millis)
  kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true
  echo "   dry run predicted $predicted ms"
  local cutovers=() rollbacks=() old_tps=() new_tps=()
  for round in $(seq 1 "$ROUNDS"); do
    load "$old_kind" "$old_port" "old$round"
    sleep 10
    "$FERRY" cutover --source "$OLD" --target "$NEW" --name "$label" --json --max-lag 1s --stable-for 3s >"$WORK/$label.cutover$round.json"
    wait "$LOAD_PID" 2>/dev/null || true
    cutovers+=("$(field "$WORK/$label.cutover$round.json" write_downtime_millis)")
    until [ "$(status "['reverse']['stage']")" = streaming ]; do sleep 0.2; done
    load "$new_kind" "$new_port" "new$round"
    sleep 10
    "$FERRY" rollback --source "$OLD" --target "$NEW" --name "$label" --json >"$WORK/$label.rollback$round.json"
    wait "$LOAD_PID" 2>/dev/null || true
    rollbacks+=("$(field "$WORK/$label.rollback$round.json" write_downtime_millis)")
    old_tps+=("$(tps "old$round")"); new_tps+=("$(tps "new$round")")
    echo "   round $round: cutover ${cutovers[-1]} ms under ${old_tps[-1]} tps; rollback ${rollbacks[-1]} ms under ${new_tps[-1]} tps"
  done
  sleep 2
  local verify_exit=0
  "$FERRY" verify --source "$OLD" --target "$NEW" --name "$label" --while-streaming >"$WORK/$label.verify-end.log" 2>&1 || verify_exit=$?
  kill "$ferry_pid"; wait "$ferry_pid" || true
  [ "$verify_exit" = 0 ] || { echo "verify found differences"; cat "$WORK/$label.verify-end.log"; exit 1; }
  echo "   verify after the last rollback: equal"
  RESULTS+=("\"$label\": {\"predicted_ms\": $predicted, \"cutover_ms\": [$(join "${cutovers[@]}")], \"rollback_ms\": [$(join "${rollbacks[@]}")], \"tps_before_cutover\": [$(join "${old_tps[@]}")], \"tps_before_rollback\": [$(join "${new_tps[@]}")], \"verify_exit\": $verify_exit}")
}

P1=$(free_port); start_mariadb m1 "$P1" 1 --innodb-buffer-pool-size=512M --max-connections=500
P2=$(free_port); start_mariadb m2 "$P2" 2 --innodb-buffer-pool-size=512M --max-connections=500
P3=$(free_port); start_mariadb m3 "$P3" 3 --innodb-buffer-pool-size=512M --max-connections=500
P4=$(free_port); start_mariadb m4 "$P4" 4 --innodb-buffer-pool-size=512M --max-connections=500
for name in m1 m2 m3 m4; do app_user "$name"; done
my m1 -e "CREATE DATABASE sbtest"
my m3 -e "CREATE DATABASE sbtest"
psql_s -d postgres -c "CREATE DATABASE sbtest" >/dev/null
psql_t -d postgres -c "CREATE DATABASE sbtest" >/dev/null

bench_pair mariadb_to_mariadb mysql "$P1" "mysql://root@127.0.0.1:$P1/sbtest" mysql "$P2" "mysql://root@127.0.0.1:$P2/sbtest"
bench_pair mariadb_to_postgres mysql "$P3" "mysql://root@127.0.0.1:$P3/sbtest" pgsql "$TP" "postgres://postgres@127.0.0.1:$TP/sbtest"
bench_pair postgres_to_mariadb pgsql "$SP" "postgres://postgres@127.0.0.1:$SP/sbtest" mysql "$P4" "mysql://root@127.0.0.1:$P4/sbtest"

echo "{\"table_size\": $SIZE, \"rounds\": $ROUNDS, $(join "${RESULTS[@]}")}" | python3 -m json.tool > bench/cutover-mysql.json
cat bench/cutover-mysql.json
