"""A plain, readable PyTorch forward of a Llama-family decoder (float64), independent of nammkit.

Covers: RMSNorm, RoPE (Interleaved pairs (2i, 2i+1) as llama2.c / GGUF "llama"; HalfSplit pairs
(i, i + d/2) as Hugging Face rotate_half / GGUF "qwen2"), RoPE scaling (linear, static NTK, llama3),
SwiGLU MLP, grouped-query attention, optional Q/K/V bias, tied embeddings, and an optional per
(layer, KV head) key mask used to emulate KV-cache eviction.

Weights use neutral names (all float arrays, PyTorch/HF orientation [out_features, in_features]):
  tok_emb [V, D], output [V, D] (== tok_emb when tied), final_norm [D],
  layers[l] = {attn_norm [D], wq [Hq*hd, D], wk [Hkv*hd, D], wv [Hkv*hd, D], wo [D, Hq*hd],
               bq, bk, bv (optional), ffn_norm [D], w_gate [F, D], w_up [F, D], w_down [D, F]}
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Config:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    head_dim: int = 0
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_style: str = "halfsplit"        # "interleaved" | "halfsplit"
    rope_scaling: str | None = None      # None | "linear" | "ntk" | "llama3"
    rope_factor: float = 1.0
    rope_ntk_alpha: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    qkv_bias: bool = False
    tied_embeddings: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.head_dim:
            self.head_dim = self.dim // self.n_heads


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope_inv_freq(cfg: Config) -> torch.Tensor:
    """inv_freq[i] = 1 / theta^(2i/d), i < d/2, after the configured scaling (positions are NOT
    divided here; linear scaling is applied as inv_freq / factor, which is the same thing)."""
    d = cfg.head_dim
    theta = cfg.rope_theta
    if cfg.rope_scaling == "ntk":
        a, f = cfg.rope_ntk_alpha, cfg.rope_factor
        theta = theta * (a * f - (a - 1)) ** (d / (d - 2))
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if cfg.rope_scaling == "linear":
        inv = inv / cfg.rope_factor
    elif cfg.rope_scaling == "llama3":  # as transformers' _compute_llama3_parameters
        f = cfg.rope_factor
        lo, hi, old = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor, cfg.rope_original_context
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        scaled = torch.where(wl > low_wl, inv / f, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / f + smooth * scaled
        medium = (wl >= high_wl) & (wl <= low_wl)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def apply_rope(x: torch.Tensor, positions: torch.Tensor, cfg: Config) -> torch.Tensor:
    """x: [T, H, d]. Rotates pair i by angle pos * inv_freq[i]."""
    inv = rope_inv_freq(cfg)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]        # [T, d/2]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    d = x.shape[-1]
    if cfg.rope_style == "interleaved":
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out
    elif cfg.rope_style == "halfsplit":
        x0, x1 = x[..., : d // 2], x[..., d // 2:]
        return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    raise ValueError(cfg.rope_style)


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.exp(-x))


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

def to_torch(weights: dict) -> dict:
    def t(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64).copy())
    out = {k: t(weights[k]) for k in ("tok_emb", "output", "final_norm")}
    out["layers"] = [{k: t(v) for k, v in L.items()} for L in weights["layers"]]
    return out


def forward(cfg: Config, weights: dict, tokens: list[int], key_mask: dict | None = None,
            mask_from: int | None = None) -> np.ndarray:
    """Full-sequence causal forward in float64. Returns logits [T, V] (numpy float64).

    key_mask: {layer: {kv_head: [key positions]}}: for queries at positions >= mask_from, those
    key positions are hidden for every query head that uses that KV head (emulates evicting them
    from the KV cache once the prefix [0, mask_from) has been processed)."""
    W = to_torch(weights)
    T = len(tokens)
    pos = torch.arange(T)
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    group = nh // nkv
    x = W["tok_emb"][torch.tensor(tokens)]                               # [T, D]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for li, L in enumerate(W["layers"]):
        h = rms_norm(x, L["attn_norm"], cfg.norm_eps)
        q = h @ L["wq"].T
        k = h @ L["wk"].T
        v = h @ L["wv"].T
        if cfg.qkv_bias:
            q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
        q = apply_rope(q.view(T, nh, hd), pos, cfg)
        k = apply_rope(k.view(T, nkv, hd), pos, cfg)
        v = v.view(T, nkv, hd)
        heads = []
        for hh in range(nh):
            kvh = hh // group                                            # GQA: query head -> KV head
            allowed = causal.clone()
            if key_mask is not None:
                hidden = key_mask.get(li, {}).get(kvh, [])
                for p in hidden:
                    allowed[mask_from:, p] = False
            s = (q[:, hh, :] @ k[:, kvh, :].T) / math.sqrt(hd)          # [T, T]
            s = s.masked_fill(~allowed, float("-inf"))
            a = torch.softmax(s, dim=-1)
            heads.append(a @ v[:, kvh, :])
        att = torch.cat(heads, dim=-1)                                   # [T, nh*hd]
        x = x + att @ L["wo"].T
        h = rms_norm(x, L["ffn_norm"], cfg.norm_eps)
        x = x + (silu(h @ L["w_gate"].T) * (h @ L["w_up"].T)) @ L["w_down"].T
    x = rms_norm(x, W["final_norm"], cfg.norm_eps)
    return (x @ W["output"].T).numpy()


# ----------------------------------------------------------------------------------------------
# Weight layouts: Hugging Face names, GGUF (llama.cpp) names, llama2.c
# ----------------------------------------------------------------------------------------------

def hf_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: within each head, HF row i (first half)
    -> row 2i, HF row i + d/2 -> row 2i+1, so Interleaved RoPE on the result == HalfSplit on HF."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def hf_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


HF_LAYER = {"attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
            "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
            "wo": "self_attn.o_proj.weight", "bq": "self_attn.q_proj.bias",
            "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias",
            "ffn_norm": "post_attention_layernorm.weight", "w_gate": "mlp.gate_proj.weight",
            "w_up": "mlp.up_proj.weight", "w_down": "mlp.down_proj.weight"}

GGUF_LAYER = {"attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
              "wv": "attn_v.weight", "wo": "attn_output.weight", "bq": "attn_q.bias",
              "bk": "attn_k.bias", "bv": "attn_v.bias", "ffn_norm": "ffn_norm.weight",
              "w_gate": "ffn_gate.weight", "w_up": "ffn_up.weight", "w_down": "ffn_down.weight"}


def to_hf_state_dict(weights: dict, tied: bool) -> dict:
    sd = {"model.embed_tokens.weight": weights["tok_emb"], "model.norm.weight": weights["final_norm"]}
    if not tied:
        sd["lm_head.weight"] = weights["output"]
    for i, L in enumerate(weights["layers"]):
        for k, v in L.items():
            sd[f"model.layers.{i}.{HF_LAYER[k]}"] = v
    return sd


def from_hf_state_dict(sd: dict, n_layers: int, tied: bool) -> dict:
    w = {"tok_emb": sd["model.embed_tokens.weight"], "final_norm": sd["model.norm.weight"],
         "output": sd["model.embed_tokens.weight"] if tied else sd["lm_head.weight"], "layers": []}
    for i in range(n_layers):
        L = {}
        for k, name in HF_LAYER.items():
            full = f"model.layers.{i}.{name}"
            if full in sd:
                L[k] = sd[full]
        w["layers"].append(L)
    return w


def to_gguf_tensors(weights: dict, cfg: Config, permute_qk: bool, tied: bool):
    """[(gguf name, array)] in llama.cpp order; Q/K rows permuted for arch "llama"."""
    out = [("token_embd.weight", weights["tok_emb"])]
    for i, L in enumerate(weights["layers"]):
        for k in ("attn_norm", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "ffn_norm", "w_gate",
                  "w_up", "w_down"):
            if k not in L:
                continue
            a = L[k]
            if permute_qk and k == "wq":
                a = hf_permute(a, cfg.n_heads)
            if permute_qk and k == "wk":
                a = hf_permute(a, cfg.n_kv_heads)
            if permute_qk and k in ("bq", "bk"):
                raise ValueError("bias permutation not needed for fixtures")
            out.append((f"blk.{i}.{GGUF_LAYER[k]}", a))
    out.append(("output_norm.weight", weights["final_norm"]))
    if not tied:
        out.append(("output.weight", weights["output"]))
    return out


def from_gguf_tensors(t: dict, n_layers: int) -> dict:
    """Weights exactly as stored (no unpermute): run them with the GGUF arch's RoPE style."""
    w = {"tok_emb": t["token_embd.weight"], "final_norm": t["output_norm.weight"],
         "output": t.get("output.weight", t["token_embd.weight"]), "layers": []}
    for i in range(n_layers):
        L = {}
        for k, name in GGUF_LAYER.items():
            if f"blk.{i}.{name}" in t:
                L[k] = t[f"blk.{i}.{name}"]
        w["layers"].append(L)
    return w


def from_llama2c(hdr: dict, t: dict) -> tuple[Config, dict]:
    cfg = Config(dim=hdr["dim"], hidden_dim=hdr["hidden_dim"], n_layers=hdr["n_layers"],
                 n_heads=hdr["n_heads"], n_kv_heads=hdr["n_kv_heads"], vocab_size=hdr["vocab_size"],
                 norm_eps=1e-5, rope_theta=10000.0, rope_style="interleaved",
                 tied_embeddings=hdr["shared_classifier"])
    w = {"tok_emb": t["tok_embeddings"], "final_norm": t["rms_final"],
         "output": t["tok_embeddings"] if hdr["shared_classifier"] else t["wcls"], "layers": []}
    for i in range(cfg.n_layers):
        w["layers"].append({"attn_norm": t["rms_att"][i], "wq": t["wq"][i], "wk": t["wk"][i],
                            "wv": t["wv"][i], "wo": t["wo"][i], "ffn_norm": t["rms_ffn"][i],
                            "w_gate": t["w1"][i], "w_down": t["w2"][i], "w_up": t["w3"][i]})
    return cfg, w
