#!/usr/bin/env python3
"""Reference logits for SmolLM2-135M-Instruct Q4_1 from Hugging Face transformers (independent of nammkit).

transformers loads the same GGUF file (models/SmolLM2-135M-Instruct.Q4_1.gguf; it dequantises with the
`gguf` package and undoes llama.cpp's Q/K permutation itself) and runs its own Llama forward in
float64, so the only differences to nammkit are nammkit's arithmetic: f32 accumulation and 8-bit
activation quantisation inside the quantised products.

Writes tests/fixtures/smollm2_logits.json (small, deterministic):

  {"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "model_sha256": ...,
   "prompts": [{"name", "tokens": [ids fed from position 0, no BOS: the model has add_bos_token false],
                "argmax": [top-1 id at every position],
                "margin": [top-1 minus top-2 logit at every position, 4 decimals],
                "rows": [{"position", "logsumexp", "top_ids": [40 ids], "top_logits": [40 values]}]}],
   "greedy": [{"name", "prompt": [ids], "continuation": [64 ids], "margins": [top-2 gap at each step]}]}

Run with the tools venv (tools/train_testbed/setup.sh --reference) after scripts/fetch_models.sh:
    tools/train_testbed/.venv/bin/python tools/reference/smollm2_logits.py       # ~2 minutes on 2 cores
"""
import hashlib
import json
import math
import os
import pathlib
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = pathlib.Path(os.environ.get("NAMMKIT_MODELS_DIR", ROOT / "models"))
SHARED = pathlib.Path(os.environ.get("NAMMKIT_SHARED", ROOT.parent / "shared"))
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests" / "fixtures" / "smollm2_logits.json"
TOP = 40


def shared_text(rel: str, start: int, chars: int) -> str:
    path = SHARED / rel
    if not path.exists():
        sys.exit(f"smollm2_logits.py: {path} missing (the shared data folder; set NAMMKIT_SHARED)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # the Project Gutenberg books in shared/ are Windows-1252
        text = raw.decode("cp1252")
    return text[start:start + chars]


def main() -> int:
    gguf = MODELS / NAME
    if not gguf.exists():
        sys.exit(f"smollm2_logits.py: {gguf} missing: run bash scripts/fetch_models.sh")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=NAME)
    model = AutoModelForCausalLM.from_pretrained(str(MODELS), gguf_file=NAME, dtype=torch.float32)
    model = model.double().eval()

    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    prompts = {
        "france": "The capital of France is",
        "chat": chat,
        "code": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n",
        "essay": shared_text("data/pg_essays/apple.txt", 0, 1500),
        "book_4k": shared_text("data/books/pg1342.txt", 20000, 19000),  # Pride and Prejudice, > 4,000 tokens
    }
    out = {"model": NAME, "model_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
           "generator": "tools/reference/smollm2_logits.py: transformers GGUF loader, float64 forward",
           "prompts": [], "greedy": []}
    for name, text in prompts.items():
        # The chat prompt holds special tokens as text; the tokenizer maps them to their ids.
        ids = tok(text, add_special_tokens=False).input_ids
        t0 = time.time()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]  # [T, V] float64
        top2 = torch.topk(logits, 2, dim=-1)
        rows = []
        for pos in sorted({0, len(ids) // 2, len(ids) - 2, len(ids) - 1}):
            top = torch.topk(logits[pos], TOP)
            rows.append({"position": pos, "logsumexp": round(float(torch.logsumexp(logits[pos], 0)), 6),
                         "top_ids": top.indices.tolist(), "top_logits": [round(float(v), 6) for v in top.values]})
        out["prompts"].append({
            "name": name, "tokens": ids, "argmax": top2.indices[:, 0].tolist(),
            "margin": [round(float(m), 4) for m in (top2.values[:, 0] - top2.values[:, 1])], "rows": rows})
        print(f"{name}: {len(ids)} tokens, forward {time.time() - t0:.1f} s", file=sys.stderr)
    # Greedy continuations: 64 tokens from 3 prompts, with the reference's smallest top-2 margin along
    # the way (a near-tie there is where 8-bit activations, in nammkit as in llama.cpp, may take the
    # other branch; nammkit's f32-activation mode must follow the reference exactly).
    candidates = {"france": prompts["france"], "chat": prompts["chat"], "code": prompts["code"]}
    for name, text in candidates.items():
        ids = tok(text, add_special_tokens=False).input_ids
        # A plain greedy loop on the raw logits (generate() would apply processors, e.g. EOS suppression).
        cont, margins = [], []
        with torch.no_grad():
            step = model(torch.tensor([ids]), use_cache=True)
            for _ in range(64):
                top2 = torch.topk(step.logits[0, -1], 2)
                cont.append(int(top2.indices[0]))
                margins.append(float(top2.values[0] - top2.values[1]))
                step = model(torch.tensor([[cont[-1]]]), past_key_values=step.past_key_values, use_cache=True)
        print(f"  greedy {name}: min margin {min(margins):.3f}: {tok.decode(cont)!r}", file=sys.stderr)
        out["greedy"].append({"name": name, "prompt": ids, "continuation": cont,
                              "margins": [round(m, 4) for m in margins]})
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
