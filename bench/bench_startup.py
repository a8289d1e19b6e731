#!/usr/bin/env python3
"""bench_startup: what a CPU run of the nammkit executable costs around the model itself, on stories260K
with 1 thread: the process up to its first prefill (a BOS-only prompt and one generated token, so nearly
all of it is start-up: the binary and its libraries, the model, the tokenizer), and a 512-token
generation as a whole process, each with its peak RSS. Median of N runs; one JSON line per case.

    python3 bench/bench_startup.py [--build build] [--runs 15] [--nammkit PATH]...

Several --nammkit binaries are measured side by side, interleaved run by run (the machine is noisy).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(cmd):
    """Wall seconds of one run."""
    t0 = time.perf_counter()
    status = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"bench_startup: {' '.join(cmd)} failed (status {status})")
    return wall


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
    a = ap.parse_args()
    shared = os.environ.get("NAMMKIT_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
    model = os.path.join(shared, "models", "stories260K", "stories260K.bin")
    if not os.path.exists(model):
        sys.exit(f"bench_startup: {model} missing (set NAMMKIT_SHARED_DIR)")
    binaries = a.nammkit or [os.path.join(a.build, "bin", "nammkit")]
    cases = {"first_prefill": ["--prompt", "", "--max-new-tokens", "1"],
             "generate_512": ["--prompt", "Once upon a time", "--max-new-tokens", "512", "--ignore-eos"]}
    for case, extra in cases.items():
        cmd = lambda b: [b, "run", "--model", model, "--threads", "1", "--device", "cpu"] + extra
        samples = {b: [] for b in binaries}
        for _ in range(a.runs):
            for b in binaries:
                samples[b].append(run_once(cmd(b)))
        for b in binaries:
            walls = samples[b]
            print(json.dumps({"bench": "startup", "case": case, "binary": b, "runs": a.runs,
                              "median_ms": round(1000 * statistics.median(walls), 2),
                              "min_ms": round(1000 * min(walls), 2),
                              "peak_rss_mib": round(peak_rss_mib(cmd(b)), 1)}), flush=True)


if __name__ == "__main__":
    main()
