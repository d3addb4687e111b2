#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite: lint (one entry), the Node suites
# (official `openai` npm client) and the Python suites (official `openai` package), each twice: on
# a PostgreSQL server plus moto's S3 server, and on the embedded defaults (PGlite, a local folder);
# then schemathesis against the real server (one entry, scripts/fuzz.sh).
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
# shellcheck source=scripts/test-services.sh
. scripts/test-services.sh
trap stop_test_services EXIT
start_postgres
start_moto
ensure_chromium
start_vllm

PASSED=0
FAILED=0
LOG=$(mktemp /tmp/openft-test.XXXXXX)

count() { # count LABEL PASS FAIL
  echo "test: $1: $2 passed, $3 failed"
  PASSED=$((PASSED + $2)); FAILED=$((FAILED + $3))
}

run_node() { # run_node BACKEND
  echo "=== node suites on $1"
  # The kill soak (test/kill-soak.test.ts) runs 10 rounds on each backend: 20 a run.
  # The vLLM routing suite (test/vllm-serving.test.ts, ~3 minutes) runs on postgres-s3 only: the
  # route does not touch the database, and adapters come from S3 there (the local store's adapter
  # path is the in-process chat suites'). The Python vLLM suite runs on both.
  local files=${OPENFT_TEST_FILES:-dist/test/*.test.js}
  [ "$1" = embedded ] && [ -z "${OPENFT_TEST_FILES:-}" ] && files=$(ls dist/test/*.test.js | grep -v '/vllm-serving\.test\.js$')
  # shellcheck disable=SC2086
  OPENFT_SOAK_ROUNDS=${OPENFT_SOAK_ROUNDS:-10} OPENFT_TEST_BACKEND=$1 node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec $files 2>&1 | tee "$LOG"
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -E '^ℹ pass [0-9]+' "$LOG" | tail -1 | awk '{print $3}')
  f=$(grep -E '^ℹ fail [0-9]+' "$LOG" | tail -1 | awk '{print $3}')
  p=${p:-0}; f=${f:-0}
  [ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
  count "node/$1" "$p" "$f"
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

run_step lint npm run --silent lint
[ -z "${OPENFT_TEST_SKIP_TRAINER:-}" ] && run_trainer
for backend in ${OPENFT_TEST_BACKENDS:-postgres-s3 embedded}; do
  run_node "$backend"
  run_python "$backend"
done
# Schemathesis from openapi.yaml against the real server on the embedded backend (scripts/fuzz.sh).
[ -z "${OPENFT_TEST_SKIP_FUZZ:-}" ] && run_step schemathesis bash scripts/fuzz.sh
rm -f "$LOG"
echo "${PASSED} passed, ${FAILED} failed"
[ "$FAILED" = 0 ]
