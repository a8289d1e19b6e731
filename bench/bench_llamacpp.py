#!/usr/bin/env python3
"""nammkit beside llama.cpp on the same GGUF, the same token ids, the same thread counts.

For each model (SmolLM2-135M-Instruct Q4_1 as shipped, and Q8_0 made by `nammkit convert --type q8_0`)
and 1 and 2 threads, each engine runs in a process of its own and reports:
  - prefill tok/s on a 512-token prompt (second of two runs: the first pages the weights in);
  - decode tok/s over 64 greedy steps after a 512-token and after a 4,096-token context;
  - peak RSS of its process (llama.cpp's also without the Python interpreter's own start-up RSS).
Prints one JSON line per (engine, model, threads, context) and one per comparison with the ratios
(nammkit / llama.cpp; higher is better for speed, lower for RSS), and writes them all to --out.

Only extra dependency: llama-cpp-python from PyPI (it builds llama.cpp from source), in the tools venv:
    tools/train_testbed/setup.sh --reference --bench
    tools/train_testbed/.venv/bin/python bench/bench_llamacpp.py [--threads 1 2] [--out FILE]
Needs build/bench/bench_generate and build/bin/nammkit (cmake --build build) and scripts/fetch_models.sh.
Not part of CI (minutes of run time, and the llama.cpp build).
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = pathlib.Path(os.environ.get("NAMMKIT_MODELS_DIR", ROOT / "models"))
SHARED = pathlib.Path(os.environ.get("NAMMKIT_SHARED", ROOT.parent / "shared"))
PROMPT, DECODE, CONTEXTS = 512, 64, (512, 4096)


def llamacpp_child(model: str, threads: int, ids: list[int], context: int) -> dict:
    """Runs inside a fresh interpreter: one llama.cpp measurement."""
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import numpy as np
    from llama_cpp import Llama
    llm = Llama(model_path=model, n_ctx=max(PROMPT, context) + DECODE + 16, n_threads=threads,
                n_threads_batch=threads, n_batch=512, n_ubatch=512, logits_all=False, verbose=False)
    prefill_s = 0.0
    for _ in range(2):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids[:PROMPT])
        prefill_s = time.perf_counter() - t0
    llm.reset()
    llm.eval(ids[:context])
    n_vocab = llm.n_vocab()
    last_logits = lambda: np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))  # the last token's
    t0 = time.perf_counter()
    for _ in range(DECODE):
        token = int(np.argmax(last_logits()))
        llm.eval([token])
    decode_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"engine": "llama.cpp", "model": pathlib.Path(model).stem, "threads": threads,
            "prefill_tokens": PROMPT, "prefill_tok_s": PROMPT / prefill_s, "context": context,
            "decode_tokens": DECODE, "decode_tok_s": DECODE / decode_s, "peak_rss_mib": peak,
            "peak_rss_mib_without_python": peak - base_rss}


def token_ids(model: str, n: int) -> list[int]:
    from llama_cpp import Llama
    vocab = Llama(model_path=model, vocab_only=True, verbose=False)
    text = (SHARED / "data/books/pg1342.txt").read_bytes().decode("cp1252")
    ids = vocab.tokenize(text[:60000].encode(), add_bos=False, special=False)
    if len(ids) < n:
        sys.exit(f"bench_llamacpp.py: only {len(ids)} ids from the book, need {n}")
    return ids[:n]


def run(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_llamacpp.py: {' '.join(cmd[:3])} ... failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / f"llamacpp_{time.strftime('%Y-%m-%d')}.jsonl"))
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "THREADS", "IDS", "CONTEXT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, threads, ids_file, context = args.child
        ids = [int(t) for t in pathlib.Path(ids_file).read_text().split()]
        print(json.dumps(llamacpp_child(model, int(threads), ids, int(context))))
        return 0

    bench_bin, nammkit_bin = ROOT / "build/bench/bench_generate", ROOT / "build/bin/nammkit"
    q4 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
    for f in (bench_bin, nammkit_bin, q4):
        if not f.exists():
            sys.exit(f"bench_llamacpp.py: {f} missing (cmake --build build; bash scripts/fetch_models.sh)")
    q8 = MODELS / "SmolLM2-135M-Instruct.Q8_0.gguf"
    if not q8.exists():
        subprocess.run([str(nammkit_bin), "convert", "--model", str(q4), "--out", str(q8), "--type", "q8_0"],
                       check=True)
    ids_file = ROOT / "build" / "bench_llamacpp_ids.txt"
    ids_file.write_text(" ".join(map(str, token_ids(str(q4), max(CONTEXTS) + DECODE))))
    lines = []
    with open(args.out, "w") as out:
        def emit(obj):
            lines.append(obj)
            out.write(json.dumps(obj) + "\n")
            out.flush()
            print(json.dumps(obj), flush=True)

        for model in (q4, q8):
            for threads in args.threads:
                for context in CONTEXTS:
                    ours = run([str(bench_bin), "--model", str(model), "--threads", str(threads), "--prompt-tokens",
                                str(PROMPT), "--context", str(context), "--decode", str(DECODE), "--ids",
                                str(ids_file)])
                    theirs = run([sys.executable, __file__, "--child", str(model), str(threads), str(ids_file),
                                  str(context)])
                    emit(ours)
                    emit(theirs)
                    emit({"compare": "nammkit/llama.cpp", "model": model.stem, "threads": threads,
                          "context": context,
                          "prefill_ratio": ours["prefill_tok_s"] / theirs["prefill_tok_s"],
                          "decode_ratio": ours["decode_tok_s"] / theirs["decode_tok_s"],
                          "rss_ratio": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
                          "rss_ratio_vs_without_python": ours["peak_rss_mib"] / theirs["peak_rss_mib_without_python"]})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
