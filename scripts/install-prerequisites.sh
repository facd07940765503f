#!/usr/bin/env bash
# Installs what ferry's tests, demo and benchmarks need on Debian 12: the PostgreSQL server
# binaries (initdb, pg_ctl, postgres) and client tools (psql, pg_dump, pgbench).
# Does nothing when they are present. Keeps Debian from starting its own cluster on 5432.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v pgbench >/dev/null && command -v psql >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "PostgreSQL is missing: run as root, or: sudo apt-get install -y postgresql postgresql-contrib" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
apt-get update -qq
apt-get install -y -qq postgresql postgresql-contrib >/dev/null
[ "$created_policy" = 1 ] && rm -f "$policy"
echo "installed: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
