"""An induction circuit written into a freshly initialised testbed model, before training.

Why: retrieval from context (passkey, needle, multikey) needs an induction circuit, and a small
model trained from a random start sits on the "induction plateau" for longer than a CPU budget
allows. Measured by copy_toy.py (the cpu preset's model, one thread, batches of 16 x 256 bytes,
lr 2e-3) on "random record ... same record again" rows, copy loss in nats (chance: ln 94 = 4.54):
from a random start 4.69 at step 100 and 4.55 at step 300; with only the previous-token head built
in 4.57 and 4.53; with the whole circuit below 0.33 and 0.20. So the recipe builds the circuit into
the initial weights and lets training refine it (every weight stays trainable).

The circuit, in the training model's own terms (HalfSplit RoPE, weights [out, in], 2 heads of
head_dim = dim / 2, one KV head per query head):

- Residual layout at initialisation: token content in dims [0, H) (H = dim / 2), a copy of the
  previous token's content in [H, dim - 1), and a constant channel in dim - 1 (every embedding has
  the same value there, so after RMSNorm it is a content-free "bias" input).
- Layer 0, head 0 = previous-token head. Query and key read only the constant channel, so the score
  depends only on the RoPE rotation: with q~_i = w_i e^{-i theta_i} and k~_i = w_i on the six fastest
  pairs, q_m . k_n = sum_i w_i^2 cos((m - n - 1) theta_i), largest at m - n = 1. Amplitudes
  a_i ~ 0.8^i summing to PREV_AMPLITUDE (measured on 2,048 random bytes with the cpu preset: 87 % of
  the attention on the previous token on average, median 97 %). Its value/output write a random
  rotation of the previous token's content into [H, dim - 1).
- Layer 1, head 0 = induction head. The query reads the current token's content, the key reads the
  previous-token copy, both through the same projection onto the slowest RoPE pairs (those that
  rotate by < 0.5 rad over the whole context, so the match does not depend on distance). It attends
  to the token right after an earlier occurrence of the current token; its value/output copy that
  token's content, and the output embedding starts equal to the input embedding, so the copy raises
  that token's logit.
"""
from __future__ import annotations

import numpy as np
import torch

PREV_AMPLITUDE = 250.0  # sum of the previous-token head's pair amplitudes (before the 1/sqrt(head_dim))
CONST_VALUE = 0.1       # the constant embedding channel (content entries are ~0.02)


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def slow_pairs_from(head_dim: int, rope_theta: float, context: int) -> int:
    """First RoPE pair whose rotation over the whole context stays below 0.5 rad."""
    theta = rope_theta ** (-np.arange(head_dim // 2) * 2.0 / head_dim)
    slow = np.nonzero(theta * context < 0.5)[0]
    if len(slow) < 4:
        raise SystemExit(f"induction_init: only {len(slow)} RoPE pairs are slow enough for a {context}-token "
                         f"context at rope_theta {rope_theta:g}, head_dim {head_dim}; raise rope_theta")
    return int(slow[0])


def install(model, cfg: dict, seed: int, induction_head: bool = True) -> dict:
    """Writes the circuit into `model` (a train.Llama just initialised). Returns what it did (for the log).
    induction_head=False writes only the residual layout and the previous-token head (copy_toy.py's
    "previous" variant, which shows that the previous-token head alone does not end the plateau)."""
    D, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hd = D // nh
    H = D // 2
    c0 = D - 1
    if nh != nkv or hd != H or cfg["n_layers"] < 2:
        raise SystemExit(f"induction_init: needs n_heads == n_kv_heads, head_dim == dim / 2 and >= 2 layers "
                         f"(got {nh} heads, {nkv} KV heads, dim {D}, {cfg['n_layers']} layers)")
    rng = np.random.default_rng(seed)
    half = hd // 2
    theta = cfg["rope_theta"] ** (-np.arange(half) * 2.0 / hd)
    first_slow = slow_pairs_from(hd, cfg["rope_theta"], cfg["context"])

    def t(a):
        return torch.tensor(a, dtype=torch.float32)

    with torch.no_grad():
        E = model.tok_emb.weight
        E[:, H:] = 0
        E[:, :H] *= float(np.sqrt(D / H))  # same embedding norm as the default initialisation
        content_rms = E[:, :H].pow(2).mean().sqrt().item()
        E[:, c0] = CONST_VALUE
        model.output.weight.copy_(E)
        model.output.weight[:, c0] = 0
        const_normed = CONST_VALUE / np.sqrt((CONST_VALUE ** 2 + H * content_rms ** 2) / D)

        # Layer 0, head 0: previous-token head (RoPE-only scores from the constant channel).
        L0 = model.layers[0]
        amp = np.zeros(half)
        amp[:6] = 0.8 ** np.arange(6)
        amp /= amp.sum()
        L0.wq.weight[:hd] = 0
        L0.wk.weight[:hd] = 0
        for i in range(half):
            w = np.sqrt(PREV_AMPLITUDE * amp[i]) / const_normed
            L0.wq.weight[i, c0] = w * np.cos(-theta[i])
            L0.wq.weight[i + half, c0] = w * np.sin(-theta[i])
            L0.wk.weight[i, c0] = w
        P = _orthogonal(H, rng)                   # content -> value
        W = _orthogonal(hd, rng)[:, :c0 - H]      # value -> the previous-token dims [H, dim - 1)
        L0.wv.weight[:hd] = 0
        L0.wv.weight[:hd, :H] = t(P)
        L0.wo.weight[:, :hd] = 0
        L0.wo.weight[H:c0, :hd] = t(content_rms * W.T)

        if not induction_head:
            return {"previous_token_head": True, "induction_head": False}
        # Layer 1, head 0: induction head (content match on the slow pairs, copy the attended token).
        L1 = model.layers[1]
        dims = list(range(first_slow, half)) + [i + half for i in range(first_slow, half)]
        S = _orthogonal(hd, rng)[:len(dims)]
        scale = 4.0 * np.sqrt(np.sqrt(hd)) / np.sqrt(len(dims))
        L1.wq.weight[:hd] = 0
        L1.wk.weight[:hd] = 0
        L1.wq.weight[dims, :H] = t(scale * S @ P)
        L1.wk.weight[dims, H:c0] = t(scale * S @ W)
        R = _orthogonal(H, rng)
        L1.wv.weight[:hd] = 0
        L1.wv.weight[:hd, :H] = t(R)
        L1.wo.weight[:, :hd] = 0
        L1.wo.weight[:H, :hd] = t(content_rms * R.T)
    return {"previous_token_head": True, "induction_head": True, "slow_pairs": [first_slow, half - 1],
            "match_dims": len(dims)}
