#!/usr/bin/env bash
# Sourced by scripts/test.sh: installs (if missing) and starts a throwaway PostgreSQL server and
# moto's S3 server on free loopback ports, exporting OPENFT_TEST_DATABASE_URL and
# OPENFT_TEST_S3_ENDPOINT. stop_test_services stops both and removes their data.
# A service that cannot start ends the run with scripts/test.sh's summary line.

services_fail() { # services_fail MESSAGE
  echo "test: $1" >&2
  echo "0 passed, 1 failed"
  exit 1
}

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

find_pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0; }
  return 1
}

ensure_postgres_installed() {
  if ! find_pg_bin >/dev/null; then
    echo "test: installing PostgreSQL (apt)"
    [ "$(id -u)" = 0 ] || services_fail "PostgreSQL is missing and this user cannot apt-get install it"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || services_fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || services_fail "apt-get install postgresql failed"
  fi
}

ensure_chromium() { # the dashboard test drives Debian's chromium (puppeteer-core, no browser download)
  command -v chromium >/dev/null 2>&1 && return 0
  echo "test: installing Chromium (apt)"
  if [ "$(id -u)" != 0 ]; then echo "test: Chromium is missing and this user cannot apt-get install it" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

as_pg() { # runs a command as the user that owns the cluster (postgres refuses root)
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

start_postgres() {
  ensure_postgres_installed
  local bin; bin=$(find_pg_bin) || services_fail "no pg_ctl found after installing PostgreSQL"
  PG_USER=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    PG_USER=postgres
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  fi
  PG_DIR=$(mktemp -d /tmp/openft-pg.XXXXXX)
  chown "$PG_USER" "$PG_DIR"
  PG_PORT=$(free_port)
  PG_BIN=$bin
  as_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 >/dev/null || services_fail "initdb failed"
  as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null \
    || { cat "$PG_DIR/log" >&2; services_fail "PostgreSQL did not start"; }
  export OPENFT_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "test: PostgreSQL on port $PG_PORT"
}

start_moto() {
  MOTO_PORT=$(free_port)
  MOTO_LOG=$(mktemp /tmp/openft-moto.XXXXXX)
  .venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MOTO_PORT/moto-api/')" 2>/dev/null; then
      export OPENFT_TEST_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
      echo "test: moto S3 server on port $MOTO_PORT"
      return 0
    fi
    sleep 0.2
  done
  cat "$MOTO_LOG" >&2
  services_fail "moto did not start"
}

stop_test_services() {
  if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  if [ -n "${PG_DIR:-}" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
  rm -f "${MOTO_LOG:-}"
}
