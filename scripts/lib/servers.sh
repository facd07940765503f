# Throwaway PostgreSQL servers for the benchmark scripts (sourced from the repository root):
# starts a source and a target server on free loopback ports (SP, TP), stops them and removes
# their data on exit. psql_s / psql_t talk to them; now / elapsed time things.
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
WORK="$(mktemp -d /tmp/ferry-bench.XXXXXX)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
start_server() { # name port
  local dir="$WORK/$1"
  as_pg mkdir -p "$dir"
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
full_page_writes = off
shared_buffers = 512MB
max_wal_size = 4GB
synchronous_commit = on
CONF
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}
stop_servers() {
  for name in source target; do as_pg "$PGBIN/pg_ctl" -D "$WORK/$name/data" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap stop_servers EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SP=$(free_port); start_server source "$SP"
TP=$(free_port); start_server target "$TP"
psql_s() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$SP" -U postgres "$@"; }
psql_t() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$TP" -U postgres "$@"; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# pg_marker_is PSQL_FUNCTION DATABASE TABLE VALUE: returns once TABLE's row 1 holds VALUE in
# its column `value`. One psql session reads it every 50 ms (a psql process per reading took
# about 14% of the two cores from whatever was being timed).
pg_marker_is() {
  until ( set +o pipefail; printf 'SELECT value FROM %s WHERE id = 1 \\watch 0.05\n' "$3" | "$1" -d "$2" -At 2>/dev/null | grep -qx -- "$4" ); do sleep 0.05; done
}
