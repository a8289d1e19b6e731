#!/usr/bin/env python3
"""rl_comparison: CMA-ES against REINFORCE and PPO on one experiment (issue #19).

A comparison is a set of three configs, configs/<set>_<trainer>.json for trainer = cmaes, reinforce, ppo:
the same model, tasks, initial policy and held-out set, each with its trainer's settings. Two sets ship:
compare_stories260k (stories260K, TinyStories LM) and compare_testbed (the testbed model, passkey and
needle at 1K). For every trainer and seed, runs `nammkit evolve` on that config with that seed and its own
output folder, then reads the held-out evaluations each run appended to heldout.jsonl (the CMA-ES mean /
the RL greedy parameters, every `heldout.every` generations or iterations), and writes

  * one JSON line per (trainer, seed, held-out point) to bench/results/<set>_<date>.jsonl,
  * a Markdown table to stdout (mean +- std over seeds of the final held-out point),
  * an SVG plot, docs/<set>.svg: held-out normalised score and cache fraction against the model runs
    spent on training (thin lines: seeds; thick lines: the mean over seeds).

    python3 bench/rl_comparison.py [--set compare_stories260k] [--nammkit build/bin/nammkit]
                                   [--out runs/<set>] [--seeds 1 2 3] [--trainers cmaes reinforce ppo]
                                   [--force] [--smoke]

A run whose folder already holds a completed run is not run again (unless --force); one with a checkpoint
but not completed is continued with --resume. The first plotted point (0 model runs, iteration -1) is the
held-out evaluation of the initial policy, the same for every trainer of a seed. --smoke runs a
tiny budget (2 CMA-ES generations, 4 RL iterations) into runs/<set>_smoke and writes its results and plot
there, to check the script. --no-run only reads the runs already in --out. Progress goes to stderr.
Python 3 standard library only.
"""
import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = ("cmaes", "reinforce", "ppo")
LABELS = {"cmaes": "CMA-ES", "reinforce": "REINFORCE", "ppo": "PPO"}
COLOURS = {"cmaes": "#1f77b4", "reinforce": "#d62728", "ppo": "#2ca02c"}
MARKER = "comparison_run.json"  # written by this script in each run folder: wall time, completion


def log(msg):
    print(f"rl_comparison: {msg}", file=sys.stderr, flush=True)


def read_jsonl(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def experiment_label(config):
    """'<model file> <tasks of the last stage> at <context>', e.g. 'testbed.gguf passkey+needle at 1024 tokens'."""
    tasks = config["stages"][-1]["tasks"]
    names = "+".join(dict.fromkeys(t["name"] for t in tasks))
    contexts = sorted({t.get("context_tokens") for t in tasks if t.get("context_tokens")})
    at = f" at {'/'.join(map(str, contexts))} tokens" if contexts else ""
    return f"{os.path.basename(config['model'])} {names}{at}"


def total_generations(config):
    return sum(int(s["generations"]) for s in config["stages"])


def last_logged(run_dir):
    """The last generation/iteration in the run's log.jsonl, or -1."""
    rows = read_jsonl(os.path.join(run_dir, "log.jsonl"))
    if not rows:
        return -1
    r = rows[-1]
    return int(r.get("generation", r.get("iteration", -1)))


def read_marker(run_dir):
    path = os.path.join(run_dir, MARKER)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def write_marker(run_dir, marker):
    tmp = os.path.join(run_dir, MARKER + ".part")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(run_dir, MARKER))


def is_complete(run_dir, config):
    marker = read_marker(run_dir)
    if marker is not None and marker.get("completed"):
        return True
    return last_logged(run_dir) == total_generations(config) - 1


def make_config(base, trainer, seed, run_dir, smoke):
    c = json.loads(json.dumps(base))
    c["seed"] = seed
    c["output_dir"] = run_dir
    c["name"] = f"{base.get('name', 'compare')}-s{seed}" + ("-smoke" if smoke else "")
    if smoke:
        c["stages"] = [dict(c["stages"][0])]
        if trainer == "cmaes":
            c["stages"][0]["generations"] = 2
            c["heldout"]["every"] = 1
        else:
            c["stages"][0]["generations"] = 4
            c["heldout"]["every"] = 2
    return c


def run_one(nammkit, trainer, seed, config, config_path, run_dir, force):
    """Runs (or continues) one training run; returns an error string or None."""
    tag = f"{trainer} seed {seed}"
    if force and os.path.isdir(run_dir):
        log(f"{tag}: --force: removing {run_dir}")
        shutil.rmtree(run_dir)
    if os.path.isdir(run_dir) and is_complete(run_dir, config):
        log(f"{tag}: already completed in {run_dir}; skipped (--force to rerun)")
        return None
    os.makedirs(run_dir, exist_ok=True)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    resume = os.path.exists(os.path.join(run_dir, "latest.ckpt"))
    marker = read_marker(run_dir) or {"wall_seconds": 0.0, "sessions": 0}
    if not resume:  # a fresh start: earlier partial timings (a run that died before its checkpoint) are void
        marker = {"wall_seconds": 0.0, "sessions": 0}
        for name in ("heldout.jsonl", "log.jsonl"):
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                os.remove(path)
    cmd = [nammkit, "evolve", config_path] + (["--resume"] if resume else [])
    log(f"{tag}: {'resuming' if resume else 'starting'}: {' '.join(cmd)}")
    stderr_path = os.path.join(run_dir, "nammkit_stderr.log")
    start = time.monotonic()
    rc = None
    try:
        with open(stderr_path, "a") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
            for line in proc.stderr:
                err.write(line)
                err.flush()
                print(f"  [{trainer} s{seed}] {line.rstrip()}", file=sys.stderr, flush=True)
            rc = proc.wait()
    except KeyboardInterrupt:
        # nammkit got the same SIGINT: it writes its checkpoint and exits 130.
        try:
            rc = proc.wait(timeout=600)
        except Exception:
            rc = -1
        raise
    finally:
        wall = time.monotonic() - start
        marker["wall_seconds"] = marker.get("wall_seconds", 0.0) + wall
        marker["sessions"] = marker.get("sessions", 0) + 1
        marker["completed"] = rc == 0 and last_logged(run_dir) == total_generations(config) - 1
        marker["last_exit_status"] = rc
        write_marker(run_dir, marker)
    log(f"{tag}: exit status {rc} after {wall:.1f} s (total {marker['wall_seconds']:.1f} s)")
    if rc != 0:
        tail = open(stderr_path).read().strip().splitlines()[-5:]
        return f"{tag}: nammkit exited with status {rc}: " + " | ".join(tail)
    if not marker["completed"]:
        return f"{tag}: nammkit exited 0 but the log stops at generation {last_logged(run_dir)}"
    return None


def collect(out, trainers, seeds):
    rows = []
    for trainer in trainers:
        for seed in seeds:
            run_dir = os.path.join(out, f"{trainer}_s{seed}")
            points = read_jsonl(os.path.join(run_dir, "heldout.jsonl"))
            if not points:
                log(f"{trainer} seed {seed}: no held-out points in {run_dir}")
                continue
            marker = read_marker(run_dir) or {}
            wall = marker.get("wall_seconds")
            for p in points:
                rows.append({"trainer": trainer, "seed": seed, "model_runs": p["model_runs"],
                             "iteration": p["iteration"], "score": p["score"],
                             "cache_fraction": p["cache_fraction"], "fitness": p["fitness"],
                             "mean_cache_size": p.get("mean_cache_size"),
                             "wall_seconds": None if wall is None else round(wall, 2),
                             "completed": bool(marker.get("completed"))})
    return rows


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def fmt(m, s, digits):
    if m is None:
        return "n/a"
    if s is None or s == 0:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def final_points(rows, trainer):
    last = {}
    for r in rows:
        if r["trainer"] == trainer and (r["seed"] not in last or r["iteration"] > last[r["seed"]]["iteration"]):
            last[r["seed"]] = r
    return [last[s] for s in sorted(last)]


def table(rows, trainers):
    lines = ["| trainer | seeds | model runs | held-out score | held-out cache fraction | held-out fitness | wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for t in trainers:
        fin = final_points(rows, t)
        if not fin:
            lines.append(f"| {LABELS[t]} | 0 | | | | | |")
            continue
        incomplete = sum(1 for r in fin if not r["completed"])
        seeds = str(len(fin)) + (f" ({incomplete} incomplete)" if incomplete else "")
        runs = mean_std([r["model_runs"] for r in fin])
        lines.append(f"| {LABELS[t]} | {seeds} | {fmt(*runs, 0)} | {fmt(*mean_std([r['score'] for r in fin]), 3)} | "
                     f"{fmt(*mean_std([r['cache_fraction'] for r in fin]), 3)} | "
                     f"{fmt(*mean_std([r['fitness'] for r in fin]), 3)} | "
                     f"{fmt(*mean_std([r['wall_seconds'] for r in fin]), 0)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- SVG


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    ticks, k = [], 0
    while start + k * step <= stop + step * 1e-9:
        ticks.append(start + k * step)
        k += 1
    return ticks, step


def tick_label(v, step):
    if step >= 1:
        return f"{v:,.0f}"
    digits = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    if abs(step * 10 ** digits - round(step * 10 ** digits)) > 1e-9:
        digits += 1
    return f"{v:.{digits}f}"


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def series(rows, trainer):
    """Per seed: [(model_runs, score, cache_fraction)], and the mean over seeds at the points all share."""
    per_seed = {}
    for r in rows:
        if r["trainer"] == trainer:
            per_seed.setdefault(r["seed"], []).append(r)
    for s in per_seed:
        per_seed[s].sort(key=lambda r: r["iteration"])
    mean = []
    if per_seed:
        common = set.intersection(*(set(r["iteration"] for r in v) for v in per_seed.values()))
        for it in sorted(common):
            pts = [next(r for r in v if r["iteration"] == it) for v in per_seed.values()]
            mean.append({"model_runs": sum(p["model_runs"] for p in pts) / len(pts),
                         "score": sum(p["score"] for p in pts) / len(pts),
                         "cache_fraction": sum(p["cache_fraction"] for p in pts) / len(pts)})
    return per_seed, mean


def panel(x0, y0, w, h, rows, trainers, key, ylabel, title, xmax_data, ybounds=None):
    out = []
    ys = [r[key] for r in rows if r["trainer"] in trainers]
    ylo, yhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max((yhi - ylo) * 0.08, 1e-3)
    ylo, yhi = ylo - pad, yhi + pad
    if ybounds:  # e.g. a fraction: the axis stays inside [0, 1] when the data do
        ylo, yhi = max(ylo, ybounds[0]), min(yhi, ybounds[1]) if yhi - pad <= ybounds[1] else yhi
    yt, ystep = nice_ticks(ylo, yhi)
    xt, xstep = nice_ticks(0.0, max(xmax_data, 1.0))
    xlo, xhi, ylo, yhi = xt[0], xt[-1], yt[0], yt[-1]

    def X(v):
        return x0 + (v - xlo) / (xhi - xlo) * w

    def Y(v):
        return y0 + h - (v - ylo) / (yhi - ylo) * h

    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#ffffff" stroke="#333" stroke-width="1"/>')
    for v in yt:
        out.append(f'<line x1="{x0}" y1="{Y(v):.1f}" x2="{x0 + w}" y2="{Y(v):.1f}" stroke="#e4e4e4" stroke-width="1"/>')
        out.append(f'<line x1="{x0 - 5}" y1="{Y(v):.1f}" x2="{x0}" y2="{Y(v):.1f}" stroke="#333"/>')
        out.append(f'<text x="{x0 - 8}" y="{Y(v) + 4:.1f}" text-anchor="end">{tick_label(v, ystep)}</text>')
    for v in xt:
        out.append(f'<line x1="{X(v):.1f}" y1="{y0}" x2="{X(v):.1f}" y2="{y0 + h}" stroke="#e4e4e4" stroke-width="1"/>')
        out.append(f'<line x1="{X(v):.1f}" y1="{y0 + h}" x2="{X(v):.1f}" y2="{y0 + h + 5}" stroke="#333"/>')
        out.append(f'<text x="{X(v):.1f}" y="{y0 + h + 19}" text-anchor="middle">{tick_label(v, xstep)}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333" stroke-width="1"/>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 - 10}" text-anchor="middle" font-size="14" font-weight="bold">{esc(title)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 40}" text-anchor="middle">model runs spent on training</text>')
    out.append(f'<text transform="translate({x0 - 52},{y0 + h / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    for t in trainers:
        per_seed, mean = series(rows, t)
        c = COLOURS[t]
        for seed, pts in sorted(per_seed.items()):
            d = " ".join(f"{X(p['model_runs']):.1f},{Y(p[key]):.1f}" for p in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="1" stroke-opacity="0.45">'
                       f'<title>{LABELS[t]} seed {seed}</title></polyline>')
        if mean:
            d = " ".join(f"{X(p['model_runs']):.1f},{Y(p[key]):.1f}" for p in mean)
            out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2.8" stroke-linejoin="round">'
                       f'<title>{LABELS[t]} mean over {len(per_seed)} seed(s)</title></polyline>')
            for p in mean:
                out.append(f'<circle cx="{X(p["model_runs"]):.1f}" cy="{Y(p[key]):.1f}" r="3.2" fill="{c}"/>')
    return out


def svg(rows, trainers, title, subtitle):
    W, H = 1040, 470
    pw, ph = 400, 300
    top = 110
    xmax = max([r["model_runs"] for r in rows] or [1])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12" fill="#222">',
           f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
           f'<text x="{W / 2}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{esc(title)}</text>',
           f'<text x="{W / 2}" y="48" text-anchor="middle" font-size="12" fill="#555">{esc(subtitle)}</text>']
    # legend: one entry per trainer, plus what thin and thick lines mean
    lx = W / 2 - 300
    for i, t in enumerate(trainers):
        x = lx + i * 130
        out.append(f'<line x1="{x}" y1="70" x2="{x + 28}" y2="70" stroke="{COLOURS[t]}" stroke-width="2.8"/>')
        out.append(f'<text x="{x + 34}" y="74">{LABELS[t]}</text>')
    x = lx + len(trainers) * 130
    out.append(f'<line x1="{x}" y1="70" x2="{x + 28}" y2="70" stroke="#777" stroke-width="1" stroke-opacity="0.6"/>')
    out.append(f'<text x="{x + 34}" y="74">one seed</text>')
    out.append(f'<line x1="{x + 110}" y1="70" x2="{x + 138}" y2="70" stroke="#777" stroke-width="2.8"/>')
    out.append(f'<text x="{x + 144}" y="74">mean over seeds</text>')
    out += panel(90, top, pw, ph, rows, trainers, "score", "held-out score (normalised by the full cache)",
                 "Held-out normalised score", xmax)
    out += panel(90 + pw + 130, top, pw, ph, rows, trainers, "cache_fraction", "held-out cache fraction (of full cache)",
                 "Held-out cache fraction", xmax, ybounds=(0.0, 1.0))
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nammkit", default=os.path.join(ROOT, "build/bin/nammkit"))
    ap.add_argument("--out", default=None, help="run folders (default runs/<set>, or runs/<set>_smoke)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    ap.add_argument("--set", default="compare_stories260k",
                    help="the comparison: configs <set>_<trainer>.json (compare_stories260k, compare_testbed)")
    ap.add_argument("--configs", default=os.path.join(ROOT, "configs"), help="folder holding <set>_<trainer>.json")
    ap.add_argument("--results", default=None, help="JSONL output (default bench/results/<set>_<date>.jsonl)")
    ap.add_argument("--svg", default=None, help="SVG output (default docs/<set>.svg)")
    ap.add_argument("--force", action="store_true", help="rerun runs that already completed")
    ap.add_argument("--smoke", action="store_true", help="tiny budget, to check the script")
    ap.add_argument("--no-run", action="store_true", help="only read the runs already in --out")
    args = ap.parse_args()

    name = args.set + ("_smoke" if args.smoke else "")
    out = os.path.abspath(args.out or os.path.join(ROOT, "runs", name))
    date = datetime.date.today().isoformat()
    if args.smoke:
        results = args.results or os.path.join(out, f"{name}.jsonl")
        svg_path = args.svg or os.path.join(out, f"{name}.svg")
    else:
        results = args.results or os.path.join(ROOT, f"bench/results/{name}_{date}.jsonl")
        svg_path = args.svg or os.path.join(ROOT, f"docs/{name}.svg")
    nammkit = os.path.abspath(args.nammkit)
    if not args.no_run and not os.access(nammkit, os.X_OK):
        sys.exit(f"rl_comparison: {nammkit}: not an executable (build it, or pass --nammkit)")
    os.makedirs(out, exist_ok=True)

    bases = {}
    for t in args.trainers:
        path = os.path.join(args.configs, f"{args.set}_{t}.json")
        if not os.path.exists(path):
            sys.exit(f"rl_comparison: {path}: no such config (--set {args.set}, --configs {args.configs})")
        with open(path) as f:
            bases[t] = json.load(f)

    errors = []
    if not args.no_run:
        for t in args.trainers:
            for seed in args.seeds:
                run_dir = os.path.join(out, f"{t}_s{seed}")
                config = make_config(bases[t], t, seed, run_dir, args.smoke)
                err = run_one(nammkit, t, seed, config, os.path.join(out, f"{t}_s{seed}.config.json"), run_dir,
                              args.force)
                if err:
                    log(err)
                    errors.append(err)

    rows = collect(out, args.trainers, args.seeds)
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    with open(results, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    log(f"{len(rows)} held-out points written to {results}")

    budget = {t: total_generations(make_config(bases[t], t, 0, "", args.smoke)) for t in args.trainers}
    first = bases[args.trainers[0]]
    title = f"{experiment_label(first)}: CMA-ES vs REINFORCE vs PPO" + (" (smoke test)" if args.smoke else "")
    subtitle = (f"same initial policy (read-out bias {first.get('policy', {}).get('initial_bias', 0)}, "
                f"weights N(0, {first.get('policy', {}).get('initial_scale', 0)}²)), "
                f"seeds {', '.join(map(str, args.seeds))}; "
                + ", ".join(f"{LABELS[t]} {budget[t]} {'generations' if t == 'cmaes' else 'iterations'}"
                            for t in args.trainers)
                + "; first point = the initial policy")
    os.makedirs(os.path.dirname(os.path.abspath(svg_path)), exist_ok=True)
    with open(svg_path, "w") as f:
        f.write(svg(rows, args.trainers, title, subtitle))
    log(f"plot written to {svg_path}")

    print(table(rows, args.trainers))
    print()
    print("Final held-out point of each run, mean ± std over seeds. Model runs: training runs of the model spent "
          "up to that point (held-out evaluations not counted).")
    if errors:
        log(f"{len(errors)} run(s) failed:")
        for e in errors:
            log("  " + e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
