#!/usr/bin/env python3
"""Reference gradients of the NAMM token scorers (BAM and MLP), from PyTorch float64 autograd.

The scorers are written here from the formulas of spec §2.4 and namm/bam_scorer.h (flat parameter
layout, weight matrices input-major W[i][o] = p[offset + i*out + o]), independently of the C++:

  BAM: W_qkv [F][3H] | b_qkv [3H] | W_o [H][2F] | b_o [2F] | w [F] | b
    qkv = x W_qkv + b_qkv;  q, k, v = qkv[:, :H], qkv[:, H:2H], qkv[:, 2H:]
    att = softmax_j(q_i.k_j / sqrt(H) + M_ij),  M_ij = 0 if j >= i else -inf   ("backward" mask)
    o = (att v) W_o + b_o;  r, m = o[:, :F], o[:, F:];  y = x (1 + m) + r;  score = y.w + b
  MLP: w [F] | b;  score = x.w + b

Writes tests/fixtures/scorer_grad_bam.json and scorer_grad_mlp.json (deterministic: fixed seed, same
bytes on every run), each

  {"generator": "...", "kind": "bam", "n": 33, "n_features": 25, "hidden": 32,
   "features": [n*F, row-major], "params": [n_params], "upstream": [n],   # float32 values: read as float
   "scores": [n], "grad": [n_params]}                                     # float64, 17 significant digits

where grad = d(sum_i upstream_i * score_i) / d params. Inputs are float32 numbers written in their
shortest float32 form (parse them as float, not double); outputs are the float64 results for exactly
those float32 inputs. The script checks its own BAM with torch.autograd.gradcheck first.

Run with the tools venv (tools/train_testbed/setup.sh --reference):
    tools/train_testbed/.venv/bin/python tools/reference/scorer_grad_fixture.py
"""
import json
import math
import pathlib
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
N, F, H = 33, 25, 32


def split_params(p: torch.Tensor, sizes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    out, off = [], 0
    for shape in sizes:
        k = math.prod(shape)
        out.append(p[off:off + k].reshape(shape))
        off += k
    assert off == p.numel(), (off, p.numel())
    return out


def bam_params_count(f: int, h: int) -> int:
    return f * 3 * h + 3 * h + h * 2 * f + 2 * f + f + 1


def bam_scores(x: torch.Tensor, p: torch.Tensor, h: int) -> torch.Tensor:
    n, f = x.shape
    W_qkv, b_qkv, W_o, b_o, w, b = split_params(p, [(f, 3 * h), (3 * h,), (h, 2 * f), (2 * f,), (f,), (1,)])
    q, k, v = torch.split(x @ W_qkv + b_qkv, h, dim=1)
    logits = (q @ k.T) / math.sqrt(h)
    masked = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)  # j < i: an older key
    att = torch.softmax(logits.masked_fill(masked, float("-inf")), dim=-1)
    r, m = torch.chunk((att @ v) @ W_o + b_o, 2, dim=-1)
    y = x * (1 + m) + r
    return y @ w + b


def mlp_scores(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    w, b = split_params(p, [(x.shape[1],), (1,)])
    return x @ w + b


def f32(a: np.ndarray) -> np.ndarray:
    """Rounds to float32 and back to float64: the exact values the C++ test parses as float."""
    return a.astype(np.float32).astype(np.float64)


def short_f32(a: np.ndarray) -> list[float]:
    """The shortest decimal of each float32 (as a Python float): parsed as float, it is that float32."""
    a32 = a.astype(np.float32).ravel()
    out = [float(str(v)) for v in a32]
    assert (np.array(out).astype(np.float32) == a32).all()  # decimal -> double -> float, as the C++ reads it
    return out


def full(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().numpy().ravel()]  # json writes repr(): round-trips the double


def fixture(kind: str, x: np.ndarray, p: np.ndarray, u: np.ndarray) -> dict:
    xt = torch.tensor(x, dtype=torch.float64)
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    ut = torch.tensor(u, dtype=torch.float64)
    scores = bam_scores(xt, pt, H) if kind == "bam" else mlp_scores(xt, pt)
    (grad,) = torch.autograd.grad((ut * scores).sum(), pt)
    return {"generator": "tools/reference/scorer_grad_fixture.py (PyTorch float64 autograd)", "kind": kind,
            "n": N, "n_features": F, "hidden": H, "features": short_f32(x), "params": short_f32(p),
            "upstream": short_f32(u), "scores": full(scores), "grad": full(grad)}


def main() -> int:
    torch.manual_seed(0)
    # Self-check of the autograd path on a small BAM (the mask included): analytic vs numerical.
    xs = torch.randn(7, 5, dtype=torch.float64)
    ps = (0.4 * torch.randn(bam_params_count(5, 3), dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: bam_scores(xs, p, 3), (ps,), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert bam_scores(xs, torch.zeros_like(ps), 3).abs().max() == 0  # all-zero parameters score 0

    rng = np.random.default_rng(20260417)
    x = f32(rng.standard_normal((N, F)))
    u = f32(rng.standard_normal(N))
    for kind, n_params in (("bam", bam_params_count(F, H)), ("mlp", F + 1)):
        p = f32(0.2 * rng.standard_normal(n_params))
        out = fixture(kind, x, p, u)
        path = FIXTURES / f"scorer_grad_{kind}.json"
        path.write_text(json.dumps(out) + "\n")
        print(f"{kind}: n {N}, F {F}, H {H}, {n_params} parameters, max |score| {max(map(abs, out['scores'])):.3f}, "
              f"max |grad| {max(map(abs, out['grad'])):.3f}; wrote {path.relative_to(ROOT)} "
              f"({path.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
