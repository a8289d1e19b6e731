#!/bin/bash
# Evaluate a training run in progress: export the latest checkpoint to a GGUF in a scratch folder and run
# the held-out passkey episodes (512 and 2,048 tokens, full cache) with the C++ runtime on one thread.
#   tools/train_testbed/snapshot_eval.sh [CHECKPOINT] [SCRATCH_DIR] [TASKS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CKPT=${1:-$ROOT/models/testbed/checkpoint.pt}
DIR=${2:-/tmp/testbed_snapshot}
TASKS=${3:-$HERE/tasks_progress.json}
PY=$HERE/.venv/bin/python; [ -x "$PY" ] || PY=python3
NAMMKIT=${NAMMKIT:-$ROOT/build/bin/nammkit}
mkdir -p "$DIR"
cp "$CKPT" "$DIR/checkpoint.pt"   # a consistent copy (the trainer replaces the file atomically)
nice -n 10 "$PY" "$HERE/train.py" --threads 1 --export-checkpoint "$DIR/checkpoint.pt" --out "$DIR/testbed.gguf" 2>&1 | grep -v '^\[export\] float64' || true
STEP=$("$PY" -c "import sys,torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['step'])" "$DIR/checkpoint.pt")
for i in $(seq 1 30); do [ -x "$NAMMKIT" ] && break; echo "waiting for $NAMMKIT" >&2; sleep 20; done
nice -n 10 "$NAMMKIT" eval --model "$DIR/testbed.gguf" --tasks "$TASKS" --baseline full --threads 1 \
  --json "$DIR/eval_step$STEP.json" > "$DIR/eval_step$STEP.txt" 2>&1 || { tail -5 "$DIR/eval_step$STEP.txt"; exit 1; }
echo "step $STEP:"; tail -n 15 "$DIR/eval_step$STEP.txt"
