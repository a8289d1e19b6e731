#!/usr/bin/python3
"""Check the committed fixtures as a loader sees them: parse each model's files from disk (config.json /
GGUF metadata -> config, safetensors / GGUF tensors -> weights, tokenizer.json / GGUF tokenizer.* ->
tokenizer), re-run the float64 forward and compare with the stored logits; re-encode the tokenizer cases.

    /usr/bin/python3 tools/reference/verify_fixtures.py
"""
from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bpe_tokenizer as bt  # noqa: E402
import formats as F  # noqa: E402
import llama_reference as R  # noqa: E402
from make_fixtures import FIX, ROOT, shared  # noqa: E402


def resolve(p: str) -> str:
    return shared(p[len("SHARED:"):]) if p.startswith("SHARED:") else os.path.join(ROOT, p)


def config_from_hf(d: str) -> R.Config:
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    rs = c.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    return R.Config(dim=c["hidden_size"], hidden_dim=c["intermediate_size"], n_layers=c["num_hidden_layers"],
                    n_heads=c["num_attention_heads"], n_kv_heads=c["num_key_value_heads"],
                    vocab_size=c["vocab_size"], head_dim=c.get("head_dim", 0), norm_eps=c["rms_norm_eps"],
                    rope_theta=c["rope_theta"], rope_style="halfsplit",
                    rope_scaling=kind, rope_factor=rs.get("factor", 1.0),
                    qkv_bias=c["model_type"] == "qwen2" or c.get("attention_bias", False),
                    tied_embeddings=c["tie_word_embeddings"])


def load(path: str):
    if path.endswith(".bin"):
        return R.from_llama2c(*F.read_llama2c(path))
    if path.endswith(".gguf"):
        kv, t = F.read_gguf(path)
        a = kv["general.architecture"]
        cfg = R.Config(dim=kv[f"{a}.embedding_length"], hidden_dim=kv[f"{a}.feed_forward_length"],
                       n_layers=kv[f"{a}.block_count"], n_heads=kv[f"{a}.attention.head_count"],
                       n_kv_heads=kv[f"{a}.attention.head_count_kv"], vocab_size=len(kv["tokenizer.ggml.tokens"]),
                       norm_eps=kv[f"{a}.attention.layer_norm_rms_epsilon"],
                       rope_theta=kv[f"{a}.rope.freq_base"],
                       rope_style="interleaved" if a == "llama" else "halfsplit",
                       qkv_bias="blk.0.attn_q.bias" in t, tied_embeddings="output.weight" not in t)
        return cfg, R.from_gguf_tensors({k: v for k, (v, _) in t.items()}, cfg.n_layers)
    cfg = config_from_hf(path)
    sd = F.read_safetensors(os.path.join(path, "model.safetensors"))
    return cfg, R.from_hf_state_dict(sd, cfg.n_layers, cfg.tied_embeddings)


def tokenizer_from_hf(d: str) -> bt.ByteLevelBPE:
    with open(os.path.join(d, "tokenizer.json")) as f:
        j = json.load(f)
    vocab = dict(j["model"]["vocab"])
    for a in j["added_tokens"]:
        vocab[a["content"]] = a["id"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [tuple(m.split(" ")) for m in j["model"]["merges"]]
    return bt.ByteLevelBPE(tokens, merges, {a["content"]: a["id"] for a in j["added_tokens"]})


def tokenizer_from_gguf(p: str) -> bt.ByteLevelBPE:
    kv, _ = F.read_gguf(p)
    toks = kv["tokenizer.ggml.tokens"]
    special = {toks[i]: i for i, ty in enumerate(kv["tokenizer.ggml.token_type"]) if ty == 3}
    assert special == {toks[kv["tokenizer.ggml.bos_token_id"]]: kv["tokenizer.ggml.bos_token_id"],
                       toks[kv["tokenizer.ggml.eos_token_id"]]: kv["tokenizer.ggml.eos_token_id"]}
    return bt.ByteLevelBPE(toks, [tuple(m.split(" ")) for m in kv["tokenizer.ggml.merges"]], special)


def main():
    n = 0
    for jf in sorted(glob.glob(os.path.join(FIX, "logits_*.json"))):
        with open(jf) as f:
            j = json.load(f)
        cfg, w = load(resolve(j["model_path"]))
        mask = None
        if "evicted" in j:
            mask = {int(l): {int(h): ps for h, ps in hs.items()} for l, hs in j["evicted"].items()}
        lg = R.forward(cfg, w, j["tokens"], key_mask=mask, mask_from=j.get("mask_from"))
        got = lg[j["positions"]]
        ref = np.array(j["logits"])
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err < 1e-8, (jf, err)
        n += 1
        print(f"ok {os.path.basename(jf)}: {len(j['tokens'])} tokens, rel err {err:.1e}")
    with open(os.path.join(FIX, "tokenizer_cases.json")) as f:
        cases = json.load(f)
    toks = [tokenizer_from_hf(d) for d in sorted(glob.glob(os.path.join(FIX, "*_hf")))]
    toks += [tokenizer_from_gguf(p) for p in sorted(glob.glob(os.path.join(FIX, "*.gguf")))]
    for tok in toks:
        for c in cases:
            assert tok.encode(c["text"]) == c["ids"], c["text"]
            assert tok.decode(c["ids"]) == c["text"]
    print(f"ok tokenizer_cases.json with {len(toks)} tokenizers")
    pieces, scores, _ = bt.read_llama2c_tokenizer(shared("models/stories260K/tok512.bin"), 512)
    with open(os.path.join(FIX, "sp_tokenizer_cases.json")) as f:
        for c in json.load(f):
            assert bt.llama2c_encode(pieces, scores, c["text"], False, False) == c["ids"]
            assert b"".join(pieces[i] if i >= 259 else bytes([i - 3]) for i in c["ids"]).decode() == " " + c["text"]
    print(f"ok sp_tokenizer_cases.json; {n} logit files")


if __name__ == "__main__":
    main()
