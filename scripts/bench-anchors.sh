#!/usr/bin/env bash
# ferry next to every speed anchor, in one run: the copies (scripts/bench-copy-anchors.sh) and
# the change apply of both engines against their native replication
# (scripts/bench-postgres-apply.sh, scripts/bench-mysql-apply.sh), each measured ROUNDS times,
# medians reported, then one table of ferry / anchor ratios (below 1: ferry is faster).
#
#   scripts/bench-anchors.sh [ROUNDS]     (default: 3; about 30 minutes on 2 cores)
#
# Writes bench/copy-anchors.json, bench/postgres-apply.json, bench/mysql-apply.json and
# bench/anchors.md. Needs FERRY_BENCH=1 scripts/install-prerequisites.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
export FERRY="${FERRY:-${CARGO_TARGET_DIR:-target}/release/ferry}"
cargo build --release -p ferry --locked
scripts/bench-copy-anchors.sh 2000000 "$ROUNDS"
scripts/bench-postgres-apply.sh 10 60 "$ROUNDS" 1000
scripts/bench-mysql-apply.sh 1000000 60 "$ROUNDS" 500
python3 - "$ROUNDS" <<'PYTHON' | tee bench/anchors.md
import json, sys
copy = json.load(open("bench/copy-anchors.json"))
pg = json.load(open("bench/postgres-apply.json"))
my = json.load(open("bench/mysql-apply.json"))
c, p, m = copy["medians"], pg["medians"], my["medians"]
print(f"| anchor (medians of {sys.argv[1]} runs, 2 cores, every server on this machine) | ferry | anchor | ferry / anchor | ferry peak memory |")
print("|---|---|---|---|---|")
def row(what, ferry, anchor, anchor_name, peak):
    print(f"| {what} | {ferry:.2f} s | {anchor_name}: {anchor:.2f} s | {ferry / anchor:.2f} | {peak:.0f} MiB |")
row("copy PostgreSQL to PostgreSQL, 2M rows, --parallel 2", c["pg_ferry"], c["pg_pipe"], "COPY \\| COPY pipe", c["pg_ferry_peak_mib"])
for threads in (1, 2, 4):
    for logged, ferry_says, anchor_says in (("off", ", copy-binlog=off", " (default: binary log off)"), ("on", "", " --enable-binlog")):
        row(f"copy MariaDB to MariaDB, 2M rows, --parallel {threads}{ferry_says}", c[f"my_ferry_{threads}_{logged}"], c[f"my_mydumper_{threads}_{logged}"], f"mydumper \\| myloader{anchor_says}, {threads} threads", c[f"my_ferry_{threads}_{logged}_peak_mib"])
row("copy MariaDB to PostgreSQL, 2M rows, --parallel 2", c["mp_ferry"], c["mp_pipe"], "mariadb --batch \\| COPY, then the index", c["mp_ferry_peak_mib"])
row(f"apply PostgreSQL, one UPDATE of {pg['rows']:,} rows", p["big_ferry"], p["big_native"], "subscription", p["big_ferry_peak_mib"])
row(f"apply PostgreSQL, backlog of pgbench -c 4 for {pg['pgbench_seconds']} s", p["mixed_ferry"], p["mixed_native"], "subscription", p["mixed_ferry_peak_mib"])
row(f"apply MariaDB, one UPDATE of {my['rows']:,} rows", m["big_ferry"], m["big_replica"], "replica", m["big_ferry_peak_mib"])
row(f"apply MariaDB, one UPDATE of {my['rows']:,} rows", m["big_ferry"], m["big_logging"], "replica with log_slave_updates", m["big_ferry_peak_mib"])
row(f"apply MariaDB, backlog of sysbench oltp_write_only for {my['write_seconds']} s", m["mixed_ferry"], m["mixed_replica"], "replica", m["mixed_ferry_peak_mib"])
row(f"apply MariaDB, backlog of sysbench oltp_write_only for {my['write_seconds']} s", m["mixed_ferry"], m["mixed_logging"], "replica with log_slave_updates", m["mixed_ferry_peak_mib"])
print(f"| lag, PostgreSQL, pgbench at {pg['live_tps']:.0f} tps for 60 s | p99 {pg['lag_p99']:.2f} s (p50 {pg['lag_p50']:.2f}, max {pg['lag_max']:.2f}) | goal: p99 under 1 s | | {pg['live_peak_mib']} MiB |")
print(f"| lag, MariaDB, sysbench at {my['live_tps']:.0f} tps for 60 s | p99 {my['lag_p99']:.2f} s (p50 {my['lag_p50']:.2f}, max {my['lag_max']:.2f}) | goal: p99 under 1 s | | {my['live_peak_mib']} MiB |")
PYTHON
