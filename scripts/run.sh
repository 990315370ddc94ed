#!/usr/bin/env bash
# Set up, then run the main job: edit the embedded MiniLM model and show before/after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/melo run "$@"
