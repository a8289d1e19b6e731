#!/usr/bin/env bash
# Installs what is missing, builds nammkit (Release) and runs the default job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
./build/bin/nammkit run --model ../shared/models/stories260K/stories260K.bin --prompt "Once upon a time" --max-new-tokens 48
