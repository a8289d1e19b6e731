#!/usr/bin/env python3
"""bench_startup: what a CPU run of the nammkit executable costs around the model itself, on stories260K
with 1 thread: the process up to its first prefill (a BOS-only prompt and one generated token, so nearly
all of it is start-up: the binary and its libraries, the model, the tokenizer), and a 512-token
generation as a whole process, each with its peak RSS. Median of N runs; one JSON line per case.

    python3 bench/bench_startup.py [--build build] [--runs 15] [--nammkit PATH]... [--runc PATH]...

Several --nammkit binaries are measured side by side, interleaved run by run (the machine is noisy).
--runc adds llama2.c's run.c (a binary you compiled yourself, e.g. `gcc -Ofast -march=native -o run run.c -lm`
from github.com/karpathy/llama2.c; its source is not part of nammkit) to the 512-token case: the same
model, tokenizer, prompt and 512 positions (both print the same story), greedy, 1 thread. Besides the whole-process time, the
decode loop's own rate is read from each program's report (run.c: "achieved tok/s"; nammkit: the
"decode: ... tok/s" line), and one JSON line gives the ratios nammkit / run.c.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(cmd):
    """Wall seconds of one run, and the decode rate the program reported (None if it printed none)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench_startup: {' '.join(cmd)} failed (status {p.returncode}): {p.stderr.strip()[-300:]}")
    m = re.search(r"decode: \d+ tokens in [0-9.]+ s \(([0-9.]+) tok/s\)", p.stderr) or \
        re.search(r"achieved tok/s: ([0-9.]+)", p.stderr)
    return wall, float(m.group(1)) if m else None


def peak_rss_mib(cmd):
    """Peak RSS of one run, by GNU time (a child's ru_maxrss here could include the forking Python)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, check=True).stderr.strip().splitlines()[-1]
    return int(out) / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--nammkit", action="append", help="binaries to compare (default: BUILD/bin/nammkit)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--runc", action="append", default=[], help="llama2.c run binaries to compare (512-token case)")
    a = ap.parse_args()
    shared = os.environ.get("NAMMKIT_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
    model = os.path.join(shared, "models", "stories260K", "stories260K.bin")
    tokenizer = os.path.join(shared, "models", "stories260K", "tok512.bin")
    if not os.path.exists(model):
        sys.exit(f"bench_startup: {model} missing (set NAMMKIT_SHARED_DIR)")
    binaries = a.nammkit or [os.path.join(a.build, "bin", "nammkit")]
    # 512 positions in all, as run.c's -n 512: BOS + 8 prompt tokens + 503 generated. The prompt is one
    # whose greedy story does not end (run.c stops at a generated BOS) before the context is full.
    prompt = "Tim had a big red ball"
    cases = {"first_prefill": ["--prompt", "", "--max-new-tokens", "1"],
             "generate_512": ["--prompt", prompt, "--max-new-tokens", "503", "--ignore-eos"]}
    for case, extra in cases.items():
        commands = {b: [b, "run", "--model", model, "--threads", "1", "--device", "cpu"] + extra for b in binaries}
        if case == "generate_512":
            for r in a.runc:
                commands[r] = [r, model, "-z", tokenizer, "-t", "0", "-n", "512", "-i", prompt]
        samples = {b: [] for b in commands}
        for _ in range(a.runs):
            for b, cmd in commands.items():
                samples[b].append(run_once(cmd))
        medians = {}
        for b, cmd in commands.items():
            walls = [w for w, _ in samples[b]]
            rates = [r for _, r in samples[b] if r is not None]
            medians[b] = (statistics.median(walls), statistics.median(rates) if rates else None)
            print(json.dumps({"bench": "startup", "case": case, "binary": b, "runs": a.runs,
                              "median_ms": round(1000 * medians[b][0], 2), "min_ms": round(1000 * min(walls), 2),
                              "decode_tok_s": round(medians[b][1], 1) if medians[b][1] else None,
                              "peak_rss_mib": round(peak_rss_mib(cmd), 1)}), flush=True)
        for r in (a.runc if case == "generate_512" else []):
            for b in binaries:
                print(json.dumps({"bench": "startup", "case": case, "compare": f"{b} / {r}",
                                  "whole_process_speedup": round(medians[r][0] / medians[b][0], 3),
                                  "decode_loop_speedup": round(medians[b][1] / medians[r][1], 3)}), flush=True)


if __name__ == "__main__":
    main()
