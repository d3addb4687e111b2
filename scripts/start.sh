#!/usr/bin/env bash
# Quick start: install what is missing, then run the service with its embedded defaults
# (PGlite and a local blob folder under ./data, models from ./models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node bin/openft.js serve "$@"
