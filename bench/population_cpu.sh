#!/usr/bin/env bash
# The CPU figures of README "Batched population evaluation": one generation, lockstep batches against
# member by member, on stories260K, the testbed model, SmolLM2 (prefill- and decode-heavy) and one
# Llama-3-8B-shaped layer. Writes bench/results/population_cpu.jsonl; about 8 minutes on 2 cores.
# Needs build/bench/bench_population and scripts/fetch_models.sh's SmolLM2.
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/bench/bench_population
O=bench/results/population_cpu.jsonl
: > "$O"
$B --model stories260K --members 16 --prompts 4 --tokens 448 --new-tokens 16 --interval 128 --repeats 2 >> "$O"
$B --model testbed --members 32 --prompts 8 --tokens 4096 --new-tokens 8 --interval 512 >> "$O"
$B --model smollm2 --members 8 --prompts 2 --tokens 1024 --new-tokens 16 --interval 256 >> "$O"
$B --model smollm2 --members 8 --prompts 2 --tokens 64 --new-tokens 64 --interval 64 >> "$O"
$B --model synthetic-8b --layers 1 --members 4 --prompts 2 --tokens 256 --new-tokens 16 --interval 128 >> "$O"
$B --model synthetic-8b --layers 1 --members 8 --prompts 2 --tokens 32 --new-tokens 32 --interval 32 >> "$O"
echo "wrote $O" >&2
