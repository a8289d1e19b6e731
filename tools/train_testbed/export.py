"""Export of the testbed model: GGUF (arch "llama", F16 matrices, byte-level "gpt2" tokenizer without
merges), a logits fixture (tests/fixtures/logits_*.json schema, float64 reference forward of the
weights exactly as stored in the GGUF) and the filled-in model card.

Also usable on its own to re-check an exported file:
    /usr/bin/python3 tools/train_testbed/export.py --check models/testbed/testbed.gguf
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import formats as F  # noqa: E402
import llama_reference as R  # noqa: E402
from bpe_tokenizer import BYTE_TO_UNICODE  # noqa: E402

import episodes as E  # noqa: E402

BOS_TEXT, EOS_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
FIXTURE_TEXT = b"First Citizen:\nBefore we proceed any further, hear me speak."
GREEDY_PROMPT = "The pass key is"
GREEDY_NEW = 32
CARD_TEMPLATE = os.path.join(HERE, "MODEL_CARD.md")


def tokens_list() -> list[str]:
    """id b (0..255) = byte b, spelled as GPT-2's byte symbol; then BOS, EOS."""
    return [BYTE_TO_UNICODE[b] for b in range(256)] + [BOS_TEXT, EOS_TEXT]


def ref_config(cfg: dict, style: str) -> R.Config:
    return R.Config(dim=cfg["dim"], hidden_dim=cfg["hidden_dim"], n_layers=cfg["n_layers"], n_heads=cfg["n_heads"],
                    n_kv_heads=cfg["n_kv_heads"], vocab_size=E.VOCAB, norm_eps=1e-5, rope_theta=cfg["rope_theta"],
                    rope_style=style, tied_embeddings=False)


def write_gguf(path: str, cfg: dict, w: dict, name: str) -> None:
    rc = ref_config(cfg, "halfsplit")
    tensors = [(n, a, F.GGML_F16 if a.ndim == 2 else F.GGML_F32)
               for n, a in R.to_gguf_tensors(w, rc, permute_qk=True, tied=False)]
    toks = tokens_list()
    kv = [
        ("general.architecture", F.GGUF_STRING, "llama"),
        ("general.name", F.GGUF_STRING, name),
        ("general.alignment", F.GGUF_UINT32, 32),
        ("general.file_type", F.GGUF_UINT32, 1),  # MOSTLY_F16
        ("llama.context_length", F.GGUF_UINT32, cfg["context"]),
        ("llama.embedding_length", F.GGUF_UINT32, cfg["dim"]),
        ("llama.block_count", F.GGUF_UINT32, cfg["n_layers"]),
        ("llama.feed_forward_length", F.GGUF_UINT32, cfg["hidden_dim"]),
        ("llama.attention.head_count", F.GGUF_UINT32, cfg["n_heads"]),
        ("llama.attention.head_count_kv", F.GGUF_UINT32, cfg["n_kv_heads"]),
        ("llama.attention.layer_norm_rms_epsilon", F.GGUF_FLOAT32, 1e-5),
        ("llama.rope.freq_base", F.GGUF_FLOAT32, float(cfg["rope_theta"])),
        ("llama.rope.dimension_count", F.GGUF_UINT32, cfg["dim"] // cfg["n_heads"]),
        ("llama.vocab_size", F.GGUF_UINT32, E.VOCAB),
        # Byte-level BPE with no merges: every byte is its own token (id == byte value).
        ("tokenizer.ggml.model", F.GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.pre", F.GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.tokens", F.GGUF_ARRAY, (F.GGUF_STRING, toks)),
        ("tokenizer.ggml.token_type", F.GGUF_ARRAY, (F.GGUF_INT32, [1] * 256 + [3, 3])),
        ("tokenizer.ggml.bos_token_id", F.GGUF_UINT32, E.BOS),
        ("tokenizer.ggml.eos_token_id", F.GGUF_UINT32, E.EOS),
        ("tokenizer.ggml.add_bos_token", F.GGUF_BOOL, True),
    ]
    F.write_gguf(path, kv, tensors)
    rkv, rt = F.read_gguf(path)
    assert rkv["tokenizer.ggml.tokens"] == toks and rkv["general.architecture"] == "llama"
    for n, a, t in tensors:
        got, gt = rt[n]
        assert gt == t and got.shape == a.shape, n
        assert np.array_equal(got, F.round_f16(a) if t == F.GGML_F16 else a), n


def load_gguf(path: str):
    """(cfg dict, reference weights as stored: Q/K permuted, to run with Interleaved RoPE)."""
    kv, t = F.read_gguf(path)
    cfg = {"dim": kv["llama.embedding_length"], "n_layers": kv["llama.block_count"],
           "n_heads": kv["llama.attention.head_count"], "n_kv_heads": kv["llama.attention.head_count_kv"],
           "hidden_dim": kv["llama.feed_forward_length"], "rope_theta": kv["llama.rope.freq_base"],
           "context": kv["llama.context_length"]}
    w = R.from_gguf_tensors({k: v for k, (v, _) in t.items()}, cfg["n_layers"])
    return cfg, w


def greedy(cfg_r: R.Config, w: dict, ids: list[int], n: int) -> list[int]:
    ids = list(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(R.forward(cfg_r, w, ids)[-1]))
        out.append(nxt)
        ids.append(nxt)
    return out


def rounded(rows) -> list:
    return [[float(f"{v:.9g}") for v in row] for row in np.asarray(rows, dtype=np.float64)]


def rel(path: str) -> str:
    r = os.path.relpath(path, ROOT)
    return path if r.startswith("..") else r.replace(os.sep, "/")


def make_fixture(gguf_path: str, fixture_path: str, torch_model=None) -> dict:
    cfg, w = load_gguf(gguf_path)
    rc = ref_config(cfg, "interleaved")
    tokens = [E.BOS] + list(FIXTURE_TEXT[:23])
    lg = R.forward(rc, w, tokens)
    T = len(tokens)
    pos = list(range(T - 4, T))
    checks = {}
    # 1. The permutation: un-permuting Q/K and running HalfSplit must give the same logits.
    wu = {**w, "layers": [{**L, "wq": R.hf_unpermute(L["wq"], cfg["n_heads"]),
                           "wk": R.hf_unpermute(L["wk"], cfg["n_kv_heads"])} for L in w["layers"]]}
    d = np.abs(R.forward(ref_config(cfg, "halfsplit"), wu, tokens) - lg).max() / np.abs(lg).max()
    assert d < 1e-9, d
    checks["halfsplit_unpermuted_vs_gguf_rel"] = float(d)
    # 2. The training model itself (float32, HalfSplit), loaded with the F16-rounded weights.
    if torch_model is not None:
        import copy
        m = copy.deepcopy(torch_model).float().cpu().eval()
        with torch.no_grad():
            for L, RL in zip(m.layers, wu["layers"]):
                for name in ("attn_norm", "ffn_norm"):
                    getattr(L, name).weight.copy_(torch.from_numpy(RL[name]))
                for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"):
                    getattr(L, name).weight.copy_(torch.from_numpy(RL[name]))
            m.tok_emb.weight.copy_(torch.from_numpy(w["tok_emb"]))
            m.output.weight.copy_(torch.from_numpy(w["output"]))
            m.norm.weight.copy_(torch.from_numpy(w["final_norm"]))
            lt = m(torch.tensor([tokens])).double().numpy()[0]
        d = np.abs(lt - lg).max() / np.abs(lg).max()
        assert d < 1e-4, d
        checks["pytorch_float32_vs_reference_rel"] = float(d)
    prompt_ids = [E.BOS] + list(GREEDY_PROMPT.encode())
    g = greedy(rc, w, prompt_ids, GREEDY_NEW)
    obj = {"model": "testbed", "model_path": rel(gguf_path), "tokens": tokens, "positions": pos,
           "logits": rounded(lg[pos]), "greedy_prompt": GREEDY_PROMPT, "greedy_ids": g,
           "greedy_text": bytes(i for i in g if i < 256).decode("utf-8", "replace"), "checks": checks}
    with open(fixture_path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    return obj


def fill_card(card_path: str, info: dict, cfg: dict, gguf_path: str, fixture: dict) -> None:
    with open(CARD_TEMPLATE) as f:
        card = f.read()
    mb = os.path.getsize(gguf_path) / 1e6
    p = info["preset_params"]
    stages = ", ".join(f"{L} tokens: {n} steps" for L, n in sorted(info["stage_steps"].items(), key=lambda kv: int(kv[0])))
    mix = ", ".join(f"{k} {v:.0%}" for k, v in info["mix"].items())
    vals = {
        "PRESET": info["preset"], "DATE": info["date"], "COMMAND": info["command"],
        "GGUF": rel(gguf_path), "GGUF_MB": f"{mb:.1f}",
        "N_PARAMS": f"{info['n_params'] / 1e6:.2f}M", "DIM": cfg["dim"], "N_LAYERS": cfg["n_layers"],
        "N_HEADS": cfg["n_heads"], "N_KV_HEADS": cfg["n_kv_heads"], "HEAD_DIM": cfg["dim"] // cfg["n_heads"],
        "HIDDEN": cfg["hidden_dim"], "THETA": f"{cfg['rope_theta']:g}", "CONTEXT": cfg["context"],
        "SEED": info["seed"], "STEPS": info["steps"], "TOKENS": f"{info['tokens']:,}",
        "TRAIN_S": f"{info['train_seconds']:.0f}", "HARDWARE": info["hardware"], "TORCH": info["torch"],
        "STAGES": stages, "TOKENS_PER_STEP": f"{p['tokens_per_step']:,}", "LR": p["lr"], "WARMUP": p["warmup"],
        "MIN_LR": p["min_lr_frac"], "WD": p["weight_decay"], "ANSWER_WEIGHT": p["answer_weight"],
        "LM_FRACTION": f"{p['lm_fraction']:.0%}", "MIX": mix,
        "TIME_BUDGET": (f"{info['time_budget']:.0f} s (schedule follows the clock)" if info["time_budget"]
                        else "none (schedule by step)"),
        "FINAL_VAL": json.dumps({k: round(v, 4) for k, v in info["final_val"].items()}),
        "INIT": (("an induction circuit written into the initial weights (`tools/train_testbed/induction_init.py`: a "
                  "previous-token head in layer 0, an induction head in layer 1, output embedding = input embedding), "
                  "then every weight trained; without it copying from context does not emerge within a CPU budget.")
                 if p.get("induction_init") else "normal(0, 0.02), residual projections scaled by 1/sqrt(2 layers)."),
        "FIXTURE": rel(fixture["path"]), "GREEDY": json.dumps(fixture["greedy_text"]),
    }
    for k, v in vals.items():
        card = card.replace("{{" + k + "}}", str(v))
    card = re.sub(r"<!-- This file is the TEMPLATE.*?-->\n\n", "", card, flags=re.S)  # only the template says so
    with open(card_path, "w") as f:
        f.write(card)


def export_all(model, cfg: dict, out: str, info: dict) -> None:
    out_dir = os.path.dirname(out)
    name = "nammkit-testbed-" + info["preset"]
    write_gguf(out, cfg, model.reference_weights(), name)
    fixture_path = os.path.join(out_dir, "logits_testbed.json")
    fx = make_fixture(out, fixture_path, model)
    fx["path"] = fixture_path
    card_path = os.path.join(out_dir, "MODEL_CARD.md")
    fill_card(card_path, info, cfg, out, fx)
    with open(os.path.join(out_dir, "train_info.json"), "w") as f:
        json.dump({k: v for k, v in info.items()}, f, indent=1, default=str)
    print(f"[export] {out} ({os.path.getsize(out) / 1e6:.1f} MB), fixture {fixture_path} "
          f"(checks {fx['checks']}), card {card_path}", file=sys.stderr)
    print(f"[export] float64 greedy after {GREEDY_PROMPT!r}: {fx['greedy_text']!r}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", required=True, help="a GGUF written by train.py: recompute its fixture next to it")
    a = ap.parse_args()
    fixture = os.path.join(os.path.dirname(os.path.abspath(a.check)), "logits_testbed.json")
    with open(fixture) as f:
        old = json.load(f)
    new = make_fixture(os.path.abspath(a.check), fixture + ".recheck.tmp")
    os.remove(fixture + ".recheck.tmp")
    d = max(abs(x - y) for r1, r2 in zip(old["logits"], new["logits"]) for x, y in zip(r1, r2))
    print(f"fixture {fixture}: max |diff| {d:.3g}, greedy equal: {old['greedy_ids'] == new['greedy_ids']}")
    sys.exit(0 if d < 1e-6 and old["greedy_ids"] == new["greedy_ids"] else 1)


if __name__ == "__main__":
    main()
