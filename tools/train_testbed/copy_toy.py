"""The induction-plateau toy behind induction_init.py: how fast does a small model learn to copy a
record it saw earlier at a varying distance?

Rows of 256 bytes: BOS, then segments "record (8-47 random printable bytes), filler (0-31 random
bytes), the same record again", packed. The loss is trained on the second copies and reported on
their bytes after the first (chance: ln 94 = 4.54 nats; a model that copies gets near 0).

    tools/train_testbed/.venv/bin/python tools/train_testbed/copy_toy.py --init random|previous|circuit

Same model as the cpu preset (dim 128, 4 layers, 2 heads of 64, RoPE theta 1e6), AdamW lr 2e-3, batch
16 x 256, one thread, fixed seed; prints the mean copy loss of every 25 steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import induction_init as II  # noqa: E402
import train as T  # noqa: E402


def copy_row(rng: np.random.Generator, length: int):
    x, w = [256], [0.0]
    while len(x) < length + 1:
        r, f = int(rng.integers(8, 48)), int(rng.integers(0, 32))
        rec = rng.integers(33, 127, r).tolist()
        fill = rng.integers(33, 127, f).tolist()
        x += rec + fill + rec
        w += [0.0] * (r + f) + [0.0] + [1.0] * (r - 1)  # the first byte of a copy cannot be known
    return x[:length + 1], w[:length + 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", choices=["random", "previous", "circuit"], default="circuit")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    cfg = dict(dim=128, n_layers=4, n_heads=2, n_kv_heads=2, hidden_dim=336, rope_theta=1e6, context=256)
    model = T.Llama(cfg)
    if a.init != "random":
        II.install(model, cfg, a.seed, induction_head=a.init == "circuit")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(a.seed)
    losses, t0 = [], time.time()
    for step in range(1, a.steps + 1):
        rows = [copy_row(rng, 256) for _ in range(16)]
        X = torch.tensor([r[0] for r in rows])
        W = torch.tensor([r[1] for r in rows])
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1.0, step / 50)
        ce = F.cross_entropy(model(X[:, :-1]).reshape(-1, 258), X[:, 1:].reshape(-1), reduction="none")
        mask = W[:, 1:].reshape(-1) > 0
        loss = ce[mask].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            print(f"init {a.init} step {step} copy loss {np.mean(losses[-25:]):.3f} ({time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
