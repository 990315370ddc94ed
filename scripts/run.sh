#!/usr/bin/env bash
# Set up, then run the main job: counterfactual edits of SmolLM2-135M-Instruct, before/after (`melo run --world`: the
# fictional-world demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/melo run "$@"
