#!/usr/bin/env python3
"""bench_mpi: generations per second of an evolve config as a single process and on N MPI ranks, each
with 1 thread (issue #15), and the bytes rank 0 exchanged. One JSON line per case, then one with the
speed-up of every N over the single process.

    python3 bench/bench_mpi.py [--config configs/default.json] [--generations 6] [--ranks 1 2] [--build build]

The config's stages and prompts are kept; `threads` becomes 1 and `output_dir` a temporary folder. The
time per generation is the trainer's elapsed time at the last logged generation divided by the
generations (it starts after the model, tasks, references and normalisation statistics are ready, which
the runs compute alike). Every N must give the single process's fitness values: the script checks it.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode not in (0, 130):
        sys.exit(f"bench_mpi: {' '.join(cmd)} failed (status {p.returncode}): {p.stderr.strip()[-600:]}")
    return p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "configs/default.json"))
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    args = ap.parse_args()
    nammkit = os.path.join(args.build, "bin", "nammkit")
    env = dict(os.environ)
    env.setdefault("NAMMKIT_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
    with open(args.config) as f:
        base = json.load(f)
    tmp = tempfile.mkdtemp(prefix="bench_mpi_")
    results = {}
    try:
        for ranks in [0] + args.ranks:  # 0: a plain process, no MPI
            name = "single" if ranks == 0 else f"np{ranks}"
            cfg = dict(base, threads=1, output_dir=os.path.join(tmp, name))
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            cmd = [nammkit, "evolve", path, "--stop-after", str(args.generations), "--device", "cpu"]
            if ranks:
                cmd = [args.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(ranks)] + cmd
            err = run(cmd, env)
            with open(os.path.join(tmp, name, "log.jsonl")) as f:
                log = [json.loads(line) for line in f]
            seconds = log[-1]["elapsed_seconds"]
            traffic = re.search(r"rank 0 sent (\d+) bytes in (\d+) messages and received (\d+) bytes", err)
            row = {"bench": "mpi_evolve", "config": os.path.relpath(args.config, ROOT), "ranks": ranks or 1,
                   "mpi": bool(ranks), "threads_per_rank": 1, "generations": len(log),
                   "evaluations_per_generation": log[-1]["evaluations"], "seconds": round(seconds, 3),
                   "generations_per_second": round(len(log) / seconds, 4)}
            if traffic:
                row["rank0_bytes_sent_per_generation"] = int(traffic.group(1)) // len(log)
                row["rank0_bytes_received_per_generation"] = int(traffic.group(3)) // len(log)
            results[name] = (row, [(l["best_fitness"], l["mean_fitness"], l["sigma"]) for l in log])
            print(json.dumps(row), flush=True)
        single_row, single_fitness = results["single"]
        summary = {"bench": "mpi_evolve_speedup", "config": single_row["config"]}
        for name, (row, fitness) in results.items():
            if fitness != single_fitness:
                sys.exit(f"bench_mpi: {name} gave other fitness values than the single process")
            if name != "single":
                summary[f"speedup_{name}"] = round(single_row["seconds"] / row["seconds"], 3)
        summary["same_fitness_values"] = True
        print(json.dumps(summary), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
