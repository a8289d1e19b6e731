#!/usr/bin/env bash
# Installs what is missing, builds nammkit (Release), fetches SmolLM2-135M-Instruct (scripts/fetch_models.sh)
# and runs the default job: evolve a NAMM on the shipped model (configs/default.json), then evaluate it
# on held-out text against full cache, H2O, L2, StreamingLLM and random eviction at the same mean cache
# size. Ends with one SmolLM2 chat answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/fetch_models.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
rm -rf runs/default
./build/bin/nammkit evolve configs/default.json
./build/bin/nammkit plot runs/default
./build/bin/nammkit eval --model ../shared/models/stories260K/stories260K.bin --tasks configs/default_eval_tasks.json \
  --max-context 512 --policy runs/default/policy.nammp \
  --baseline h2o --baseline l2 --baseline streaming --baseline random --json runs/default/eval.json
./build/bin/nammkit run --model "${NAMMKIT_MODELS_DIR:-models}/SmolLM2-135M-Instruct.Q4_1.gguf" --chat \
  --prompt "What is the capital of Japan?"
