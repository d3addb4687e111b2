#!/usr/bin/env bash
# Installs what is missing and builds: npm packages, the TypeScript build, and the Python venv
# with pinned requirements. Safe to run again: each step is skipped when already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p .cache

need_node() {
  if ! command -v node >/dev/null 2>&1 || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)'; then
    echo "setup: Node.js 20 or newer is required" >&2
    exit 1
  fi
}

stamp_ok() { # stamp_ok NAME FILES... : true when FILES are unchanged since the last success
  local name=$1; shift
  local sum; sum=$(cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ -f ".cache/$name.stamp" ] && [ "$(cat ".cache/$name.stamp")" = "$sum" ]
}
stamp_write() {
  local name=$1; shift
  cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1 > ".cache/$name.stamp"
}

need_node
if [ ! -d node_modules ] || ! stamp_ok npm package-lock.json; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  stamp_write npm package-lock.json
fi

echo "setup: building TypeScript"
npx tsc -p tsconfig.json
npx tsc -p dashboard/tsconfig.json

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the Python venv"
  "$PY" -m venv .venv
fi
# torch is pinned (2.13.0, CPU build on machines without a GPU): an unpinned torch pulls CUDA.
# requirements-bench.txt: bench-only peers (TRL), installed in the same resolve so no pin moves.
PY_REQS="requirements-dev.txt requirements-trainer.txt requirements-bench.txt"
if ! stamp_ok venv $PY_REQS; then
  echo "setup: installing Python requirements (test tools, the trainer's, the benches' peers)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check $(printf -- '-r %s ' $PY_REQS)
  stamp_write venv $PY_REQS
fi
echo "setup: done ($ROOT)"
