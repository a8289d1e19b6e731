#!/usr/bin/env bash
# The experiment of README "The long-context testbed model": evolve a NAMM on the shipped testbed model
# (configs/testbed.json: passkey, then + needle, then + LM on books, train split), then compare it on
# held-out episodes (tools/train_testbed/tasks_targets_2k.json) with the full cache, H2O, L2, StreamingLLM
# and random eviction: at the NAMM's own mean cache, and with every policy (the NAMM ranked by its
# scores) at fixed budgets of 25 % and 50 % of the tokens seen. Writes runs/testbed/eval_*.json,
# runs/testbed/fitness.svg and runs/testbed/tradeoff.svg. About an hour on 2 cores.
#   --skip-evolve   reuse runs/testbed/policy.nammp
set -euo pipefail
cd "$(dirname "$0")/.."
nammkit=./build/bin/nammkit
model=models/testbed/testbed.gguf
tasks=tools/train_testbed/tasks_targets_2k.json
run=runs/testbed
if [ "${1:-}" != "--skip-evolve" ]; then
  rm -rf "$run"
  "$nammkit" evolve configs/testbed.json
fi
"$nammkit" plot "$run"
"$nammkit" eval --model "$model" --tasks "$tasks" --policy "$run/policy.nammp" \
  --baseline h2o --baseline l2 --baseline streaming --baseline random --json "$run/eval_matched.json"
for budget in 0.25 0.5; do
  "$nammkit" eval --model "$model" --tasks "$tasks" --policy "$run/policy.nammp:$budget" \
    --baseline "h2o:$budget" --baseline "l2:$budget" --baseline "streaming:$budget" --baseline "random:$budget" \
    --json "$run/eval_$budget.json"
done
"$nammkit" plot --evals "$run/eval_matched.json" "$run/eval_0.25.json" "$run/eval_0.5.json" \
  --out "$run/tradeoff.svg" --title "testbed model, held-out 2K episodes: score against cache size"
