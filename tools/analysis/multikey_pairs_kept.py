#!/usr/bin/env python3
"""Per (layer, KV head): the share of a multikey episode's pair lines still cached at the end, beside the
share of its haystack (the tokens before the question that are not in a pair line).

Reads the forgetting.jsonl that `nammkit analyze` writes (schema nammkit.forgetting/1, see
tools/nammkit/forgetting_report.h) for a multikey task set, and prints one JSON object per (layer, head)
with both shares averaged over the samples. Equal shares mean the policy keeps a pair no more readily
than the text around it.

    python3 tools/analysis/multikey_pairs_kept.py runs/multikey_analysis/forgetting.jsonl
"""
import collections
import json
import re
import sys

PAIR = re.compile(r"One of the special magic numbers for [a-z]+-[a-z]+ is: \d+\.")
QUESTION = "What is the special magic number for"


def main(path):
    tokens = collections.defaultdict(dict)  # sample -> position -> token record
    final = {}  # (sample, layer, head) -> kept runs at the end
    run = None
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["record"] == "run":
                run = r
            elif r["record"] == "token":
                tokens[r["sample"]][r["position"]] = r
            elif r["record"] == "final":
                final[(r["sample"], r["layer"], r["head"])] = r["kept_runs"]
    if run is None or not tokens:
        sys.exit(f"{path}: no run or token records (not a nammkit analyze forgetting.jsonl?)")

    def held(sample, layer, head, position):
        return any(a <= position < b for a, b in final[(sample, layer, head)])

    pairs_kept = collections.defaultdict(list)
    haystack_kept = collections.defaultdict(list)
    for sample, by_position in sorted(tokens.items()):
        positions = sorted(by_position)
        text, starts = "", []
        for p in positions:
            starts.append(len(text))
            text += by_position[p]["text"]
        in_pair = {p for m in PAIR.finditer(text) for i, p in enumerate(positions) if m.start() <= starts[i] < m.end()}
        question = text.find(QUESTION)
        if not in_pair or question < 0:
            sys.exit(f"{path}: sample {sample}: no multikey pair lines or question found")
        haystack = [p for i, p in enumerate(positions) if starts[i] < question and p not in in_pair]
        for layer in range(run["n_layers"]):
            for head in range(run["n_kv_heads"]):
                pairs_kept[(layer, head)].append(sum(held(sample, layer, head, p) for p in in_pair) / len(in_pair))
                haystack_kept[(layer, head)].append(sum(held(sample, layer, head, p) for p in haystack) / len(haystack))
    for (layer, head), shares in sorted(pairs_kept.items()):
        hay = haystack_kept[(layer, head)]
        print(json.dumps({"policy": run["policy"], "layer": layer, "head": head, "samples": len(shares),
                          "pairs_kept": round(sum(shares) / len(shares), 3),
                          "haystack_kept": round(sum(hay) / len(hay), 3)}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: multikey_pairs_kept.py FORGETTING_JSONL")
    main(sys.argv[1])
