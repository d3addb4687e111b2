#!/usr/bin/env bash
# Schemathesis against the real server (embedded backend: PGlite and a local folder), from
# openapi.yaml: every /v1 operation with an API key, then every /internal/v1 operation with a
# worker token, all checks, a fixed seed and a bounded number of cases per operation. NUL is not
# generated (openapi.yaml's "Text" rule forbids it everywhere; test/hostile-input.test.ts sends it
# to every kind of field) and the claim long poll may take its documented 60 s.
# Usage: bash scripts/fuzz.sh   (after `npm run build`; scripts/test.sh runs it). Exit 0 = no finding.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SEED=${OPENFT_FUZZ_SEED:-20261204}
EXAMPLES=${OPENFT_FUZZ_EXAMPLES:-10}
TMP=$(mktemp -d /tmp/openft-fuzz.XXXXXX)
KEY="sk-fuzz-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export OPENFT_DATA_DIR=$TMP/data OPENFT_MODELS_DIR=$TMP/models OPENFT_API_KEY=$KEY OPENFT_EMBEDDED_WORKER=false \
  OPENFT_LOG_LEVEL=warn HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap "exit 1" INT TERM

# A tiny random-weight model (the trainer suite's fixture, built offline), so that chat
# completions and job creation reach the engine, plus a folder that is not a complete model.
OMP_NUM_THREADS=1 .venv/bin/python -c "import sys; from pathlib import Path; sys.path.insert(0, 'test/trainer'); from tiny_models import build; build('llama', Path(sys.argv[1]))" \
  "$OPENFT_MODELS_DIR/tiny-llama" >"$TMP/model.log" 2>&1 || { echo "fuzz: building the tiny model failed"; cat "$TMP/model.log"; exit 1; }
mkdir -p "$OPENFT_MODELS_DIR/half-model" && echo '{}' >"$OPENFT_MODELS_DIR/half-model/config.json"
WORKER=$(node bin/openft.js workers create --name fuzz) || exit 1

PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
node bin/openft.js serve --host 127.0.0.1 --port "$PORT" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "fuzz: the server did not start"; cat "$TMP/server.log"; exit 1; }

st() { # st LABEL TOKEN FILTER...
  local label=$1 token=$2; shift 2
  echo "=== schemathesis: $label"
  PYTHONPATH=scripts SCHEMATHESIS_HOOKS=fuzz_hooks .venv/bin/schemathesis --config-file scripts/schemathesis.toml run openapi.yaml --url "http://127.0.0.1:$PORT" -H "Authorization: Bearer $token" \
    --checks all --seed "$SEED" --max-examples "$EXAMPLES" --workers 1 --no-shrink --request-timeout 70 \
    --suppress-health-check all --warnings off \
    --generation-allow-x00 false --generation-database none --max-response-time 65 "$@"
}
rc=0
st "/v1 with an API key" "$KEY" --include-path-regex '^/(v1|healthz|readyz)' || rc=1
st "/internal/v1 with a worker token" "$WORKER" --include-path-regex '^/internal/' || rc=1
if grep -q '"level":50' "$TMP/server.log"; then
  echo "fuzz: the server logged errors:"; grep '"level":50' "$TMP/server.log" | head -20; rc=1
fi
exit $rc
