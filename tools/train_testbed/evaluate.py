#!/usr/bin/python3
"""Evaluate the testbed model with the nammkit C++ runtime and fill its model card.

    /usr/bin/python3 tools/train_testbed/evaluate.py --model models/testbed/testbed.gguf [--scale full|2k|smoke]
        [--nammkit build-main/bin/nammkit] [--threads N] [--policies full-only|all]

Runs `nammkit eval` (greedy decoding, held-out episodes: held-out text and value ranges) on the task
sets in this folder, with the full cache and the baselines StreamingLLM (256 recent + 4 sinks),
H2O and L2 at 25 % and 50 % of the tokens seen (`--interval 128`: the baselines evict every 128
tokens, on prefill-chunk boundaries, so the streaming cache holds 260-388 tokens during a prompt).

  scale full : tasks_heldout_4k.json (passkey 2K/4K, needle 4K at random depth, multikey 20 pairs,
               multiquery 8x2, vartrack 4 hops, LM NLL at 512/2K/4K) + tasks_needle_depths_4k.json
  scale 2k   : tasks_targets_2k.json (the 2K targets: passkey, needle at depths 0-100 %, multikey with
               10 pairs; LM NLL at 512 and 2K)
  scale smoke: tasks_smoke.json (512-token episodes: the pipeline, not the model)

Held-out NLL: nammkit's "lm" task (tasks/lm_task.h) runs a window of `context_tokens` tokens of
held-out `books` text and scores its last 256 tokens; score = exp(mean log-likelihood), so
NLL per token (nats per byte here) = -ln(score), i.e. the NLL at positions context-256 .. context.

Writes eval_<set>.json next to the model, replaces the card's EVAL section (MODEL_CARD.md next to
the model) with the tables, and prints the targets of the issue with pass/fail.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BASELINES = ["streaming:256,sinks=4", "h2o:0.25", "h2o:0.5", "l2:0.25", "l2:0.5"]
SETS = {"full": ["tasks_heldout_4k.json", "tasks_needle_depths_4k.json"], "2k": ["tasks_targets_2k.json"],
        "smoke": ["tasks_smoke.json"]}


def find_nammkit() -> str:
    for b in ("build-main", "build-train", "build"):
        p = os.path.join(ROOT, b, "bin", "nammkit")
        if os.path.exists(p):
            return p
    raise SystemExit("evaluate.py: no nammkit binary; build one (see README.md) or pass --nammkit")


def find_shared() -> str:
    for p in (os.environ.get("NAMMKIT_SHARED_DIR"), os.path.join(os.path.dirname(ROOT), "shared"), "/work/shared"):
        if p and os.path.isdir(os.path.join(p, "data")):
            return p
    raise SystemExit("evaluate.py: cannot find the shared data folder (set NAMMKIT_SHARED_DIR)")


def fmt(task: str, score: float) -> str:
    if task.startswith("lm_"):
        return f"{-math.log(max(score, 1e-300)):.3f}"
    return f"{100 * score:.0f}%"


def table(res: dict) -> str:
    tasks = [t["task"] for t in res["rows"][0]["tasks"]]
    ns = {t["task"]: t["samples"] for t in res["rows"][0]["tasks"]}
    head = "| policy | " + " | ".join(f"{t} (n={ns[t]})" for t in tasks) + " | cache % |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for row in res["rows"]:
        s = {t["task"]: t["score"] for t in row["tasks"]}
        lines.append(f"| {row['policy']} | " + " | ".join(fmt(t, s[t]) for t in tasks) +
                     f" | {100 * row['cache_fraction']:.0f}% |")
    return "\n".join(lines)


def score(results: dict, policy_prefix: str, task: str):
    for res in results.values():
        for row in res["rows"]:
            if row["policy"].startswith(policy_prefix):
                for t in row["tasks"]:
                    if t["task"] == task:
                        return t["score"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--scale", choices=sorted(SETS), default="full")
    ap.add_argument("--nammkit", default=None)
    ap.add_argument("--threads", type=int, default=0, help="nammkit worker threads (0: all cores)")
    ap.add_argument("--policies", choices=["all", "full-only", "full+streaming"], default="all")
    ap.add_argument("--interval", type=int, default=128)
    a = ap.parse_args()
    model = os.path.abspath(a.model)
    out_dir = os.path.dirname(model)
    nk = a.nammkit or find_nammkit()
    env = dict(os.environ, NAMMKIT_SHARED_DIR=find_shared())
    baselines = {"all": BASELINES, "full-only": [], "full+streaming": BASELINES[:1]}[a.policies]
    results = {}
    t0 = time.time()
    for name in SETS[a.scale]:
        js = os.path.join(out_dir, "eval_" + os.path.splitext(name)[0] + ".json")
        cmd = [nk, "eval", "--model", model, "--tasks", os.path.join(HERE, name), "--interval", str(a.interval),
               "--json", js]
        for b in baselines:
            cmd += ["--baseline", b]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        print("[eval] " + " ".join(cmd), file=sys.stderr, flush=True)
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        sys.stderr.write(p.stdout + p.stderr)
        if p.returncode != 0:
            raise SystemExit(f"evaluate.py: nammkit eval failed ({p.returncode})")
        with open(js) as f:
            results[name] = json.load(f)
    secs = time.time() - t0

    # The targets (held-out, greedy, C++ runtime).
    checks = []

    def target(label, policy, tasks, op, thr):
        vals = [score(results, policy, t) for t in tasks]
        vals = [v for v in vals if v is not None]
        if not vals:
            return
        v = sum(vals) / len(vals)
        ok = v >= thr if op == ">=" else v <= thr
        checks.append(f"| {label} | {100 * v:.0f}% | {op} {100 * thr:.0f}% | {'pass' if ok else 'FAIL'} |")

    if a.scale == "full":
        target("passkey 2K, full cache", "full", ["passkey_2k"], ">=", 0.95)
        target("passkey 4K, full cache", "full", ["passkey_4k"], ">=", 0.95)
        target("multikey 20 pairs 4K, full cache", "full", ["multikey20_4k"], ">=", 0.80)
        target("needle 4K, depths 0-100 %, full cache", "full",
               ["needle_d0", "needle_d25", "needle_d50", "needle_d75", "needle_d100"], ">=", 0.90)
        target("passkey 4K, StreamingLLM 256+4", "streaming", ["passkey_4k"], "<=", 0.30)
        target("needle 4K, StreamingLLM 256+4", "streaming",
               ["needle_d0", "needle_d25", "needle_d50", "needle_d75"], "<=", 0.30)
        target("multikey 20 pairs 4K, StreamingLLM 256+4", "streaming", ["multikey20_4k"], "<=", 0.30)

    if a.scale == "2k":
        needles = ["needle_2k_d0", "needle_2k_d25", "needle_2k_d50", "needle_2k_d75", "needle_2k_d100"]
        target("passkey 2K, full cache", "full", ["passkey_2k"], ">=", 0.95)
        target("needle 2K, depths 0-100 %, full cache", "full", needles, ">=", 0.90)
        target("multikey 10 pairs 2K, full cache", "full", ["multikey10_2k"], ">=", 0.80)
        target("passkey 2K, StreamingLLM 256+4", "streaming", ["passkey_2k"], "<=", 0.30)
        # depth 100 % sits inside the recent window, where any cache keeps it
        target("needle 2K, depths 0-75 %, StreamingLLM 256+4", "streaming", needles[:4], "<=", 0.30)

    size_mb = os.path.getsize(model) / 1e6
    md = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{os.path.relpath(nk, ROOT)} eval` "
          f"(scale `{a.scale}`, baselines' interval {a.interval}, {secs:.0f} s). Synthetic scores: RULER "
          f"string_match_all (fraction of answers contained in the greedy output). `lm_*` columns: held-out "
          f"NLL in nats per token (= per byte) over the last score_tokens (256; smoke 64) tokens of a window of that length "
          f"(-ln of the lm task's score). GGUF size {size_mb:.1f} MB (target <= 30 MB).", ""]
    if checks:
        md += ["| target | measured | wanted | |", "|---|---|---|---|"] + checks + [""]
    for name, res in results.items():
        md += [f"`{name}`:", "", table(res), ""]
    block = "\n".join(md)
    print(block)
    card = os.path.join(out_dir, "MODEL_CARD.md")
    if os.path.exists(card):
        with open(card) as f:
            text = f.read()
        new = re.sub(r"<!-- EVAL:BEGIN -->.*<!-- EVAL:END -->",
                     lambda m: "<!-- EVAL:BEGIN -->\n" + block + "\n<!-- EVAL:END -->", text, flags=re.S)
        with open(card, "w") as f:
            f.write(new)
        print(f"[eval] filled {card}", file=sys.stderr)
    if any(c.endswith("FAIL |") for c in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
