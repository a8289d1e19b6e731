#!/usr/bin/python3
"""Regenerate every file under tests/fixtures/ (deterministic, fixed seeds, < 1 minute).

    /usr/bin/python3 tools/reference/make_fixtures.py

Needs only numpy and torch (Debian's python3). Reads ../shared/ (or $NAMMKIT_SHARED).
See tools/reference/README.md for what each fixture is.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bpe_tokenizer as bt  # noqa: E402
import formats as F  # noqa: E402
import llama_reference as R  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures")
SHARED = os.environ.get("NAMMKIT_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
if not os.path.isdir(SHARED) and os.path.isdir("/work/shared"):
    SHARED = "/work/shared"

BOS_TEXT, EOS_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
N_NEW_TOKENS = 254          # 256 byte symbols + 254 merges + 2 specials = 512
LAST_POSITIONS = 4


def shared(p: str) -> str:
    return os.path.join(SHARED, p)


def fix(p: str) -> str:
    return os.path.join(FIX, p)


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


def write_json(path: str, obj, compact: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def rounded(rows: np.ndarray) -> list:
    return [[float(f"{v:.9g}") for v in row] for row in np.asarray(rows, dtype=np.float64)]


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        b = f.read()
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("cp1252")  # the Gutenberg books here are Windows-1252 with CRLF


# ==============================================================================================
# 1. Tokenizers
# ==============================================================================================

# Merges appended after the learned ones so that the pre-split rules are observable in the ids
# (Shakespeare alone teaches no digit merges, no "  " merge, ...): with these, splitting digits
# into groups of 1-3, detaching the space before digits, keeping one space of a run for the next
# word, and the "[^\r\n\p{L}\p{N}]?\p{L}+" prefix all change the token ids when done wrong.
PROBE_MERGES = [("1", "2"), ("3", "4"), ("5", "6"), ("0", "0"), ("2", "0"), ("Ġ", "1"), ("(", "y"),
                ("Ġ", "Ġ")]


def build_bpe():
    corpus = read_text(shared("data/books/tinyshakespeare.txt"))
    raw = bt.train_bpe(corpus, N_NEW_TOKENS + 40)
    for n_learned in range(N_NEW_TOKENS - len(PROBE_MERGES), N_NEW_TOKENS + 1):
        tokens = [u for _, u in bt.bytes_to_unicode_list()]
        seen = set(tokens)
        merges = []
        for a, b in raw:  # learned merges until n_learned distinct new tokens exist
            if len(tokens) == 256 + n_learned:
                break
            merges.append((a, b))
            if a + b not in seen:
                seen.add(a + b)
                tokens.append(a + b)
        for a, b in PROBE_MERGES:
            if (a, b) not in merges:
                assert a in seen and b in seen
                merges.append((a, b))
                if a + b not in seen:
                    seen.add(a + b)
                    tokens.append(a + b)
        if len(tokens) == 256 + N_NEW_TOKENS:
            break
    assert len(tokens) == 256 + N_NEW_TOKENS
    special = {BOS_TEXT: len(tokens), EOS_TEXT: len(tokens) + 1}
    tokens += [BOS_TEXT, EOS_TEXT]
    return bt.ByteLevelBPE(tokens, merges, special)


LLAMA3_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                      r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_json(tok: bt.ByteLevelBPE) -> dict:
    bos, eos = tok.special[BOS_TEXT], tok.special[EOS_TEXT]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in sorted(tok.special.items(), key=lambda x: x[1])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": BOS_TEXT, "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": BOS_TEXT, "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": BOS_TEXT, "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {BOS_TEXT: {"id": BOS_TEXT, "ids": [bos], "tokens": [BOS_TEXT]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tok.tokens) if t not in tok.special},
                  "merges": [f"{a} {b}" for a, b in tok.merges]},
    }


def tokenizer_config_json(tok: bt.ByteLevelBPE) -> dict:
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for s, i in sorted(tok.special.items(), key=lambda x: x[1])},
        "bos_token": BOS_TEXT,
        "eos_token": EOS_TEXT,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def gguf_tokenizer_kv(tok: bt.ByteLevelBPE) -> list:
    types = [3 if t in tok.special else 1 for t in tok.tokens]
    return [
        ("tokenizer.ggml.model", F.GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.pre", F.GGUF_STRING, "llama-bpe"),
        ("tokenizer.ggml.tokens", F.GGUF_ARRAY, (F.GGUF_STRING, tok.tokens)),
        ("tokenizer.ggml.token_type", F.GGUF_ARRAY, (F.GGUF_INT32, types)),
        ("tokenizer.ggml.merges", F.GGUF_ARRAY, (F.GGUF_STRING, [f"{a} {b}" for a, b in tok.merges])),
        ("tokenizer.ggml.bos_token_id", F.GGUF_UINT32, tok.special[BOS_TEXT]),
        ("tokenizer.ggml.eos_token_id", F.GGUF_UINT32, tok.special[EOS_TEXT]),
        ("tokenizer.ggml.add_bos_token", F.GGUF_BOOL, True),
    ]


def tokenizer_case_texts() -> list[str]:
    stories = read_text(shared("data/tinystories/tinystories_sample.txt"))
    essay = read_text(shared("data/pg_essays/gap.txt"))
    shakes = read_text(shared("data/books/tinyshakespeare.txt"))
    austen = read_text(shared("data/books/pg1342.txt"))
    i = austen.find("It is a truth universally")
    assert i > 0
    return [
        stories[:400],
        essay[:400],
        shakes[:200],
        austen[i - 40:i + 260],   # Windows-1252 book decoded: CRLF line ends
        "In 2024, 1234567 people paid $3.50 for 10,000 items; pi=3.14159 and 007.",
        "Hello!!! What?... (yes) call(yes) -- [no] {maybe} \"quoted\" 'single' it's I'm we'll they'd "
        "you've you're DON'T 'LL",
        "line one\n\nline two   with   spaces\n\t tab\n   \n  end  ",
        "café naïve résumé — 日本語のテキスト 中文 😀 Ünïcödé",
        "x=42;y=7\r\nz = x*y  # comment\r\n",
        "   leading spaces and trailing   ",
        "",
    ]


def make_tokenizer_cases(tok: bt.ByteLevelBPE):
    ref_re = bt.build_reference_regex()
    rng = np.random.default_rng(7)
    alphabet = list("aZé日1٣ \t\n\r'.,!-_sStTlLdDmrevV\u00a0\u2003\u001f\u0085(")
    probes = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 13)))) for _ in range(5000)]
    probes.append(read_text(shared("data/books/tinyshakespeare.txt"))[:200000])
    for text in probes:
        assert bt.pre_split(text) == ref_re.findall(text), repr(text)
    cases = []
    n_ignore_diff = 0
    for text in tokenizer_case_texts():
        assert bt.pre_split(text) == ref_re.findall(text), text
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        if tok.encode(text, ignore_merges=True) != ids:
            n_ignore_diff += 1
        cases.append({"text": text, "ids": ids})
    assert n_ignore_diff == 0, "llama.cpp's ignore_merges would tokenize a case differently"
    write_json(fix("tokenizer_cases.json"), cases)
    return cases


def make_sp_cases():
    pieces, scores, _ = bt.read_llama2c_tokenizer(shared("models/stories260K/tok512.bin"), 512)
    texts = ["Once upon a time, there was a little girl named Lily.",
             "Hello world!\nNew line.",
             "Tom's 3 dogs ran 123 km, didn't they?",
             "café 日本",
             "  two  spaces",
             "The cat sat on the mat. The end."]
    cases = [{"text": t, "ids": bt.llama2c_encode(pieces, scores, t, bos=False, eos=False)} for t in texts]
    readme = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]
    assert [1] + cases[0]["ids"] == readme, cases[0]["ids"]
    write_json(fix("sp_tokenizer_cases.json"), cases)


# ==============================================================================================
# 2. Tiny models
# ==============================================================================================

def random_weights(cfg: R.Config, seed: int) -> dict:
    rng = np.random.default_rng(seed)

    def n(*shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    D, Fh, hd = cfg.dim, cfg.hidden_dim, cfg.head_dim
    qd, kvd = cfg.n_heads * hd, cfg.n_kv_heads * hd
    w = {"tok_emb": n(cfg.vocab_size, D, std=0.5), "layers": []}
    for _ in range(cfg.n_layers):
        L = {"attn_norm": (1 + n(D, std=0.1)).astype(np.float32),
             "wq": n(qd, D, std=0.15), "wk": n(kvd, D, std=0.15), "wv": n(kvd, D, std=0.1),
             "wo": n(D, qd, std=0.1),
             "ffn_norm": (1 + n(D, std=0.1)).astype(np.float32),
             "w_gate": n(Fh, D, std=0.1), "w_up": n(Fh, D, std=0.1), "w_down": n(D, Fh, std=0.08)}
        if cfg.qkv_bias:
            L["bq"], L["bk"], L["bv"] = n(qd, std=0.1), n(kvd, std=0.1), n(kvd, std=0.1)
        w["layers"].append(L)
    w["final_norm"] = (1 + n(D, std=0.1)).astype(np.float32)
    w["output"] = w["tok_emb"] if cfg.tied_embeddings else n(cfg.vocab_size, D, std=0.1)
    return w


LLAMA_CFG = dict(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
                 norm_eps=1e-5, rope_theta=10000.0, rope_style="halfsplit")
QWEN_CFG = dict(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
                norm_eps=1e-6, rope_theta=1000000.0, rope_style="halfsplit", qkv_bias=True,
                tied_embeddings=True)


def hf_config(cfg: R.Config, tok: bt.ByteLevelBPE, model_type: str, dtype: str, rope_scaling=None) -> dict:
    c = {
        "architectures": ["LlamaForCausalLM" if model_type == "llama" else "Qwen2ForCausalLM"],
        "model_type": model_type,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": cfg.tied_embeddings,
        "bos_token_id": tok.special[BOS_TEXT],
        "eos_token_id": tok.special[EOS_TEXT],
        "torch_dtype": dtype,
    }
    if model_type == "llama":
        c["attention_bias"] = False
        c["mlp_bias"] = False
    else:
        c["use_sliding_window"] = False
        c["sliding_window"] = 256
        c["max_window_layers"] = cfg.n_layers
    return c


def write_hf_dir(name: str, cfg: R.Config, w: dict, tok, model_type: str, st_dtype: str, rope_scaling=None):
    d = fix(name)
    os.makedirs(d, exist_ok=True)
    torch_dtype = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[st_dtype]
    write_json(os.path.join(d, "config.json"), hf_config(cfg, tok, model_type, torch_dtype, rope_scaling))
    F.write_safetensors(os.path.join(d, "model.safetensors"), R.to_hf_state_dict(w, cfg.tied_embeddings),
                        dtype=st_dtype)
    write_json(os.path.join(d, "tokenizer.json"), tokenizer_json(tok), compact=True)
    write_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config_json(tok))
    # read back: the reference runs the weights exactly as stored
    sd = F.read_safetensors(os.path.join(d, "model.safetensors"))
    rw = R.from_hf_state_dict(sd, cfg.n_layers, cfg.tied_embeddings)
    rnd = {"F32": lambda a: np.asarray(a, np.float32), "BF16": F.round_bf16, "F16": F.round_f16}[st_dtype]
    expect = R.to_hf_state_dict(w, cfg.tied_embeddings)
    assert sorted(sd) == sorted(expect)
    for k in expect:
        assert np.array_equal(sd[k], rnd(expect[k])), k
    with open(os.path.join(d, "config.json")) as f:
        assert json.load(f)["model_type"] == model_type
    return rw


GGUF_FILE_TYPE = {F.GGML_F32: 0, F.GGML_F16: 1, F.GGML_Q8_0: 7, F.GGML_BF16: 32}


def write_gguf_model(fname: str, arch: str, cfg: R.Config, w: dict, tok, mat_type: int):
    permute = arch == "llama"
    tensors = []
    for name, a in R.to_gguf_tensors(w, cfg, permute_qk=permute, tied=cfg.tied_embeddings):
        t = F.GGML_F32
        if a.ndim == 2:
            t = mat_type
            if t == F.GGML_Q8_0 and a.shape[-1] % 32 != 0:
                t = F.GGML_F16
        tensors.append((name, a, t))
    kv = [
        ("general.architecture", F.GGUF_STRING, arch),
        ("general.name", F.GGUF_STRING, os.path.splitext(fname)[0]),
        ("general.alignment", F.GGUF_UINT32, 32),
        ("general.file_type", F.GGUF_UINT32, GGUF_FILE_TYPE[mat_type]),
        (f"{arch}.context_length", F.GGUF_UINT32, 256),
        (f"{arch}.embedding_length", F.GGUF_UINT32, cfg.dim),
        (f"{arch}.block_count", F.GGUF_UINT32, cfg.n_layers),
        (f"{arch}.feed_forward_length", F.GGUF_UINT32, cfg.hidden_dim),
        (f"{arch}.attention.head_count", F.GGUF_UINT32, cfg.n_heads),
        (f"{arch}.attention.head_count_kv", F.GGUF_UINT32, cfg.n_kv_heads),
        (f"{arch}.attention.layer_norm_rms_epsilon", F.GGUF_FLOAT32, cfg.norm_eps),
        (f"{arch}.rope.freq_base", F.GGUF_FLOAT32, cfg.rope_theta),
        (f"{arch}.rope.dimension_count", F.GGUF_UINT32, cfg.head_dim),
        (f"{arch}.vocab_size", F.GGUF_UINT32, cfg.vocab_size),
    ] + gguf_tokenizer_kv(tok)
    path = fix(fname)
    F.write_gguf(path, kv, tensors)
    # read back and check
    rkv, rt = F.read_gguf(path)
    assert rkv["general.architecture"] == arch and rkv["tokenizer.ggml.tokens"] == tok.tokens
    assert rkv["tokenizer.ggml.merges"] == [f"{a} {b}" for a, b in tok.merges]
    for name, a, t in tensors:
        got, gt = rt[name]
        assert gt == t and got.shape == a.shape, name
        if t == F.GGML_F32:
            assert np.array_equal(got, a), name
        elif t == F.GGML_F16:
            assert np.array_equal(got, F.round_f16(a)), name
        elif t == F.GGML_BF16:
            assert np.array_equal(got, F.round_bf16(a)), name
        else:
            assert np.abs(got - a).max() <= np.abs(a).max() / 127 * 0.51 + 1e-6, name
    rw = R.from_gguf_tensors({k: v for k, (v, _) in rt.items()}, cfg.n_layers)
    rcfg = R.Config(**{**cfg.__dict__, "rope_style": "interleaved" if arch == "llama" else "halfsplit"})
    return rcfg, rw


def logits_json(name: str, model_path: str, cfg: R.Config, w: dict, tokens: list[int], extra=None):
    lg = R.forward(cfg, w, tokens)
    T = len(tokens)
    pos = list(range(T - LAST_POSITIONS, T))
    obj = {"model": name, "model_path": model_path, "tokens": tokens, "positions": pos,
           "logits": rounded(lg[pos])}
    if extra:
        obj.update(extra)
    write_json(fix(f"logits_{name}.json"), obj, compact=True)
    return lg


# ==============================================================================================
# 3. stories260K
# ==============================================================================================

README_TOP5_IDS = [403, 385, 410, 317, 407]
README_TOP5 = [17.0235, 15.4062, 13.1083, 12.7692, 12.4181]
README_GREEDY = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401,
                 396, 267, 337, 410, 408, 419, 292]


def make_stories():
    hdr, t = F.read_llama2c(shared("models/stories260K/stories260K.bin"))
    cfg, w = R.from_llama2c(hdr, t)
    # writer round trip: the llama2.c writer reproduces the file byte for byte
    tmp = fix(".stories_roundtrip.bin")
    F.write_llama2c(tmp, hdr, t)
    with open(tmp, "rb") as a, open(shared("models/stories260K/stories260K.bin"), "rb") as b:
        assert a.read() == b.read()
    os.remove(tmp)

    lg = R.forward(cfg, w, [1])[0]
    top = list(np.argsort(-lg, kind="stable")[:5])
    assert top == README_TOP5_IDS, top
    assert np.allclose(lg[top], README_TOP5, atol=1e-4), lg[top]
    toks = [1]
    while len(toks) < 40:
        toks.append(int(np.argmax(R.forward(cfg, w, toks)[-1])))
    assert toks[:len(README_GREEDY)] == README_GREEDY, toks
    path = "SHARED:models/stories260K/stories260K.bin"
    logits_json("stories260K", path, cfg, w, README_GREEDY[:24], extra={
        "top5_after_bos": {"ids": [int(i) for i in top], "logits": [float(f"{v:.9g}") for v in lg[top]]},
        "greedy_from_bos": README_GREEDY})

    # eviction reference: per (layer, KV head) key positions hidden from queries at positions >= 32
    rng = np.random.default_rng(260)
    mask_from = 32
    mask = {}
    for layer in range(cfg.n_layers):
        mask[layer] = {}
        for h in range(cfg.n_kv_heads):
            k = 4 + (layer * cfg.n_kv_heads + h) % 9          # 4..12 positions, different per head
            mask[layer][h] = sorted(int(p) for p in rng.choice(np.arange(1, mask_from), size=k, replace=False))
    full = R.forward(cfg, w, toks)
    masked = R.forward(cfg, w, toks, key_mask=mask, mask_from=mask_from)
    assert np.array_equal(full[:mask_from], masked[:mask_from])
    assert np.abs(full[mask_from:] - masked[mask_from:]).max() > 0.1
    pos = list(range(mask_from, len(toks)))
    write_json(fix("logits_stories260K_masked.json"), {
        "model": "stories260K_masked", "model_path": path, "tokens": toks, "mask_from": mask_from,
        "evicted": {str(l): {str(h): ps for h, ps in hs.items()} for l, hs in mask.items()},
        "positions": pos, "logits": rounded(masked[pos]), "logits_unmasked": rounded(full[pos])},
        compact=True)


# ==============================================================================================

def main():
    t0 = time.time()
    os.makedirs(FIX, exist_ok=True)

    tok = build_bpe()
    make_tokenizer_cases(tok)
    make_sp_cases()
    print(f"tokenizers: {time.time() - t0:.1f}s")

    prompt = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n"
              "Speak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?")
    tokens = [tok.special[BOS_TEXT]] + tok.encode(prompt)[:23]
    assert len(tokens) == 24

    # --- tiny llama (HF) ---
    lcfg = R.Config(**LLAMA_CFG)
    lw = random_weights(lcfg, seed=1234)
    hw = write_hf_dir("tiny_llama_hf", lcfg, lw, tok, "llama", "F32")
    ref = logits_json("tiny_llama_hf", "tests/fixtures/tiny_llama_hf", lcfg, hw, tokens)
    wrong = R.forward(R.Config(**{**LLAMA_CFG, "rope_style": "interleaved"}), hw, tokens)
    assert np.abs(wrong - ref)[4:].max() > 0.05, "RoPE style must matter for the fixture"
    assert np.abs(ref[-1]).max() > 1.0 and ref[-1].std() > 0.3, "logits too flat"

    bw = write_hf_dir("tiny_llama_bf16_hf", lcfg, lw, tok, "llama", "BF16")
    logits_json("tiny_llama_bf16_hf", "tests/fixtures/tiny_llama_bf16_hf", lcfg, bw, tokens)

    lin = {"type": "linear", "rope_type": "linear", "factor": 2.0}
    lincfg = R.Config(**{**LLAMA_CFG, "rope_scaling": "linear", "rope_factor": 2.0})
    fw = write_hf_dir("tiny_llama_linrope_hf", lincfg, lw, tok, "llama", "F16", rope_scaling=lin)
    lr = logits_json("tiny_llama_linrope_hf", "tests/fixtures/tiny_llama_linrope_hf", lincfg, fw, tokens)
    assert np.abs(lr - R.forward(lcfg, fw, tokens))[4:].max() > 0.02, "rope scaling must matter"

    # --- GGUF llama: permuted Q/K + Interleaved RoPE must equal HF HalfSplit ---
    for w_ in lw["layers"]:
        assert np.array_equal(R.hf_unpermute(R.hf_permute(w_["wq"], 4), 4), w_["wq"])
    for fname, t in [("tiny_llama_f32.gguf", F.GGML_F32), ("tiny_llama_f16.gguf", F.GGML_F16),
                     ("tiny_llama_bf16.gguf", F.GGML_BF16), ("tiny_llama_q8_0.gguf", F.GGML_Q8_0)]:
        gcfg, gw = write_gguf_model(fname, "llama", lcfg, lw, tok, t)
        name = fname[:-5] + "_gguf"
        lg = logits_json(name, f"tests/fixtures/{fname}", gcfg, gw, tokens)
        err = np.abs(lg - ref).max()
        if t == F.GGML_F32:
            assert err < 1e-9, f"GGUF permutation convention broken: {err}"
        else:
            assert err < 0.2, (fname, err)
        print(f"  {fname}: max |logit - f32 HF| = {err:.2e}")

    # --- tiny qwen2 (HF + GGUF f16) ---
    qcfg = R.Config(**QWEN_CFG)
    qw = random_weights(qcfg, seed=4321)
    qhw = write_hf_dir("tiny_qwen2_hf", qcfg, qw, tok, "qwen2", "F32")
    qref = logits_json("tiny_qwen2_hf", "tests/fixtures/tiny_qwen2_hf", qcfg, qhw, tokens)
    nob = R.forward(R.Config(**{**QWEN_CFG, "qkv_bias": False}), qhw, tokens)
    assert np.abs(nob - qref).max() > 0.05, "bias must matter"
    gcfg, gw = write_gguf_model("tiny_qwen2_f16.gguf", "qwen2", qcfg, qw, tok, F.GGML_F16)
    assert gcfg.rope_style == "halfsplit"
    lg = logits_json("tiny_qwen2_f16_gguf", "tests/fixtures/tiny_qwen2_f16.gguf", gcfg, gw, tokens)
    print(f"  tiny_qwen2_f16.gguf: max |logit - f32 HF| = {np.abs(lg - qref).max():.2e}")

    make_stories()

    total = 0
    digest = hashlib.sha256()
    for dp, dn, fn in sorted(os.walk(FIX)):
        dn.sort()
        for f in sorted(fn):
            p = os.path.join(dp, f)
            total += os.path.getsize(p)
            with open(p, "rb") as fh:
                digest.update(rel(p).encode() + b"\0" + hashlib.sha256(fh.read()).digest())
    print(f"fixtures: {total / 1e6:.2f} MB, digest {digest.hexdigest()[:16]}, {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
