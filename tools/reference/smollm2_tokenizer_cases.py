#!/usr/bin/env python3
"""Reference token ids for SmolLM2-135M-Instruct's tokenizer, from Hugging Face `tokenizers`.

    tools/train_testbed/.venv/bin/python tools/reference/smollm2_tokenizer_cases.py

(the venv comes from `tools/train_testbed/setup.sh --reference`: pinned tokenizers, transformers,
gguf). Writes tests/fixtures/smollm2_tokenizer_cases.json ([{name, text, ids[, lossy]}], ids without
BOS; lossy: decode(ids) != text, the text has bytes the vocabulary lacks) and tests/fixtures/smollm2_chat_cases.json ([{name, messages, add_generation_prompt, text, ids}]).

The tokenizer is rebuilt from the GGUF metadata only (vocab, merges, token types, special ids) with
the layout of SmolLM2's own tokenizer.json: BPE (no byte fallback, ignore_merges false),
pre-tokenizer Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false,
use_regex=true)], decoder ByteLevel, the control tokens as added special tokens. It is then
cross-checked against the tokenizer `transformers` builds from the same GGUF
(AutoTokenizer.from_pretrained(dir, gguf_file=name), offline); differences are printed, not fatal,
because that converter maps tokenizer.ggml.pre = "smollm" to a plain ByteLevel pre-tokenizer
(no Digits step), which splits whitespace before digits differently.

With --unicode-tables it instead prints the C++ tables of transformer/tokenizer.cpp (kLetterRanges,
kNumberRanges, kNumericExtraRanges), measured from this `tokenizers` build itself: each code point
is classified by how the ByteLevel regex (Oniguruma: \p{L}, \p{N}, \s) and the Digits pre-tokenizer
(Rust char::is_numeric) split it, so nammkit follows the library's Unicode version, not Python's.

Inputs: the model at models/SmolLM2-135M-Instruct.Q4_1.gguf ($NAMMKIT_MODELS_DIR overrides the
folder; scripts/fetch_models.sh fetches it) and text excerpts from ../shared/data relative to the
repository root ($NAMMKIT_SHARED overrides). Deterministic: same bytes on every run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gguf  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = Path(os.environ.get("NAMMKIT_MODELS_DIR") or ROOT / "models") / MODEL_NAME
SHARED = Path(os.environ.get("NAMMKIT_SHARED") or ROOT / ".." / "shared")
CONTROL = 3  # llama.cpp token type


def die(msg: str) -> None:
    print(f"smollm2_tokenizer_cases.py: {msg}", file=sys.stderr)
    sys.exit(1)


def shared_file(rel: str) -> Path:
    if not SHARED.is_dir():
        die(f"shared data folder {SHARED} is missing (expected ../shared next to the repository, "
            "or set $NAMMKIT_SHARED)")
    p = SHARED / rel
    if not p.is_file():
        die(f"{p}: missing (see {SHARED / 'README.md'})")
    return p


# --------------------------------------------------------------------------------------------
# The tokenizer from GGUF metadata

def field(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        die(f"{MODEL}: {key}: missing")
    return f.contents()


def build_reference(reader: gguf.GGUFReader) -> tuple[Tokenizer, dict]:
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = field(reader, "tokenizer.ggml.merges")
    types = field(reader, "tokenizer.ggml.token_type")
    meta = {
        "model": field(reader, "tokenizer.ggml.model"),
        "pre": field(reader, "tokenizer.ggml.pre"),
        "bos": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos": field(reader, "tokenizer.ggml.eos_token_id"),
        "unk": field(reader, "tokenizer.ggml.unknown_token_id"),
        "add_bos": field(reader, "tokenizer.ggml.add_bos_token"),
        "chat_template": field(reader, "tokenizer.chat_template"),
        "n_tokens": len(tokens),
        "n_merges": len(merges),
    }
    if meta["model"] != "gpt2" or meta["pre"] != "smollm":
        die(f"{MODEL}: expected tokenizer.ggml.model gpt2 / pre smollm, found {meta['model']} / {meta['pre']}")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        die(f"{MODEL}: duplicate pieces in tokenizer.ggml.tokens")
    pairs = []
    for m in merges:
        a, b = m.split(" ")  # byte-level pieces never contain a space (it is "Ġ")
        pairs.append((a, b))
    bpe = models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=None, fuse_unk=False,
                     byte_fallback=False, ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [i for i, t in enumerate(types) if t == CONTROL]
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in specials])
    for i in specials:
        if tok.token_to_id(tokens[i]) != i:
            die(f"special token {tokens[i]!r} got id {tok.token_to_id(tokens[i])}, expected {i}")
    meta["specials"] = {tokens[i]: i for i in specials}
    return tok, meta


def transformers_tokenizer():
    """transformers' own GGUF conversion, or None (with the reason printed) when it cannot run offline."""
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(MODEL.parent), gguf_file=MODEL.name)
    except Exception as e:  # noqa: BLE001 - any failure only skips the cross-check
        print(f"transformers GGUF tokenizer: unavailable ({type(e).__name__}: {e})")
        return None


# --------------------------------------------------------------------------------------------
# Texts

def excerpt(text: str, start: int, length: int) -> str:
    """`length` characters from the line after `start`, cut back to a line end."""
    if start > 0:
        start = text.index("\n", start) + 1
    piece = text[start:start + length]
    return piece[: piece.rindex("\n") + 1]


def book(rel: str) -> str:
    # Project Gutenberg files in shared/ are Windows-1252 (curly quotes, dashes) with CRLF.
    return shared_file(rel).read_bytes().decode("cp1252")


def chinese_context() -> str:
    path = shared_file("data/longbench/multifieldqa_zh.jsonl")
    with open(path, encoding="utf-8") as f:
        first = json.loads(f.readline())
    return first["context"]


CPP_SNIPPET = """\
// Greedy decoding.
#include <vector>

namespace demo {

int32_t argmax(const std::vector<float>& logits) {
\tint32_t best = 0;
\tfor (size_t i = 1; i < logits.size(); ++i) {
\t\tif (logits[i] > logits[best]) best = static_cast<int32_t>(i);  // ties: first wins
\t}
\treturn best;
}

template <class T>
struct Pair { T first{}, second{}; };   \t
static_assert(sizeof(Pair<int>) == 8, "two ints");
#define SQUARE(x) ((x) * (x))
const char* s = "tab\\there \\"quoted\\" 0x1F";
}  // namespace demo
"""

PYTHON_SNIPPET = """\
import math


class Scheduler:
    \"\"\"Cosine learning-rate schedule.\"\"\"

    def __init__(self, base_lr: float = 3e-4, warmup: int = 100, total: int = 10_000):
        self.base_lr, self.warmup, self.total = base_lr, warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * self.base_lr * (1 + math.cos(math.pi * t))


if __name__ == "__main__":
\tfor s in (0, 99, 5000, 9999):
\t\tprint(f"{s:>5d}: {Scheduler()(s):.6f}")  # tabs, f-strings
"""


def cases() -> list[tuple[str, str]]:
    pride = book("data/books/pg1342.txt")
    moby = book("data/books/pg2701.txt")
    frank = book("data/books/pg84.txt")
    shakespeare = shared_file("data/books/tinyshakespeare.txt").read_text(encoding="utf-8")
    essay = shared_file("data/pg_essays/addiction.txt").read_text(encoding="utf-8")
    return [
        ("empty", ""),
        ("book_pride_and_prejudice_crlf", excerpt(pride, 40000, 3000)),
        ("book_moby_dick_crlf", excerpt(moby, 120000, 3000)),
        ("book_frankenstein_crlf", excerpt(frank, 30000, 2500)),
        ("book_tinyshakespeare", excerpt(shakespeare, 5000, 2500)),
        ("essay_paul_graham", excerpt(essay, 0, 2500)),
        ("chinese_longbench_multifieldqa_zh", chinese_context()[:1500]),
        ("code_cpp", CPP_SNIPPET),
        ("code_python", PYTHON_SNIPPET),
        ("mixed_scripts",
         "Café naïve résumé — Ελληνικά, Русский текст, 日本語のテキスト, 中文, 한국어, ไทย, "
         "עברית, العربية, हिन्दी, Tiếng Việt."),
        ("combining_marks", "e\u0301 vs \u00e9, a\u0308\u0304, n\u0303, Z\u0351\u0360a\u036dl\u0489go, "
                            "\u0915\u094d\u0937, \u1100\u1161\u11a8"),
        ("emoji", "Hi 👋🏽! Family: 👨‍👩‍👧‍👦, flags 🇯🇵🇫🇷, ❤️‍🔥, 🏳️‍🌈, keycap 1️⃣, 🤖🤖🤖 end."),
        ("unicode_spaces", "a\u00a0b\u3000c\u2009d\u202fe \u200bf\u2028g\u0085h"),
        ("symbols", "→ ≠ ≤ ∑ √ ∞ © ® ™ € £ ¥ § ¶ • … «quotes» „low“ ‘single’ — – ~ ^ ` | \\ @ # $ % & * ()[]{}<>"),
        ("spaces_runs", "one  two   three    four\t\tfive \t six\t  seven       eight"),
        ("leading_trailing_spaces", "   leading and trailing   "),
        ("only_whitespace", " \t \n\n  \r\n \t"),
        ("blank_lines_crlf", "line one\r\n\r\n\r\nline two\r\n  \r\nline three\n\n\n\nend\n"),
        ("trailing_newlines", "ends with newlines\n\n"),
        ("single_space", " "),
        ("single_newline", "\n"),
        ("digits_long", "31415926535897932384626433832795 and 1234567890123"),
        ("digits_mixed", "Call +1 (555) 010-9999 at 10:45pm on 2024-06-01; pi≈3.14159, e=2.71828, "
                         "1,234,567.89 USD, 0.5%, v1.2.3, 0x1F, 1e-9, 42nd, 3rd, 100k."),
        ("digits_spaces", "a  1 b   22 c \n 7  x9 9x  \t8"),
        ("digits_unicode", "² ³ ½ ١٢٣ ०१२ １２３ Ⅻ ⑤"),
        ("dates", "On 12/25/1999 and 2000-01-01T00:00:00Z, also 1st Jan. 2001 (week 52)."),
        ("contractions_lower", "i'm sure it's fine, don't worry, we'll see, they've gone, she'd know, you're right."),
        ("contractions_upper", "I'M SURE IT'S FINE, DON'T WORRY, WE'LL SEE, THEY'VE GONE, SHE'D KNOW, YOU'RE RIGHT."),
        ("contractions_mixed", "We'Ll, It'S, Don'T, 'tis, 'twas, rock 'n' roll, o'clock, y'all, don’t (curly)."),
        ("apostrophes", "'s 't 're 've 'm 'll 'd '' ''s 'x '"),
        ("punctuation_runs", "Wait... what?!? (yes) [no] {maybe} --- *** !!! ??? ;;; ::"),
        ("markup", "<div class=\"x\">Hello &amp; <b>bye</b></div>\n<!-- comment -->\n[link](http://example.com/a?b=1&c=2)"),
        ("json", '{"name": "SmolLM2", "layers": 30, "ok": true, "vals": [1, 2.5, -3e4], "nested": {"k": null}}'),
        # Bytes whose GPT-2 character is not in SmolLM2's vocabulary (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D,
        # and 0xF1/0xF2, the lead bytes of U+40000..U+BFFFF): the BPE model (no unk_token) drops them,
        # so their neighbours can merge and decode(ids) != text.
        (LOSSY, "ctrl\x04x\x06y th\x13\x14e \U00050000 i\x16n\x1d end"),
    ]


LOSSY = "bytes_missing_from_vocab"

CHAT_CASES = [
    ("system_and_user", [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]),
    ("user_and_assistant", [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "7"},
    ]),
    ("one_user_message", [
        {"role": "user", "content": "Write a haiku about the sea."},
    ]),
    ("multi_turn_whitespace", [
        {"role": "user", "content": "  Hello!\n\nHow are you?  "},
        {"role": "assistant", "content": "Fine,\tthanks.\n"},
        {"role": "user", "content": "Count: 1 2  3"},
    ]),
]


# --------------------------------------------------------------------------------------------
# Unicode classes as the library sees them (--unicode-tables)

WHITE_SPACE = [0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
               0x205F, 0x3000]  # tokenizer.cpp's is_space


def ranges(cps: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for cp in cps:
        if out and cp == out[-1][1] + 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [(a, b) for a, b in out]


def print_unicode_tables() -> None:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    digits = pre_tokenizers.Digits(individual_digits=True)

    def pieces(p, s: str) -> int:
        return len(p.pre_tokenize_str(s))

    letters, numbers, spaces, numeric = [], [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if pieces(byte_level, "a" + c) == 1:  # " ?\p{L}+" takes both
            letters.append(cp)
        elif pieces(byte_level, "1" + c) == 1:  # " ?\p{N}+"
            numbers.append(cp)
        elif pieces(byte_level, "!" + c) != 1:  # not " ?[^\s\p{L}\p{N}]+": whitespace
            spaces.append(cp)
        if pieces(digits, "a" + c + "a") == 3:
            numeric.append(cp)
    if spaces != WHITE_SPACE:
        die(f"the regex's \\s is not tokenizer.cpp's White_Space list: {[hex(c) for c in spaces]}")
    if not set(numbers) <= set(numeric):
        die("Digits does not isolate every \\p{N} character")
    extra = sorted(set(numeric) - set(numbers))

    def table(name: str, cps: list[int]) -> None:
        rs = ranges(cps)
        print(f"constexpr CodeRange {name}[] = {{")
        for i in range(0, len(rs), 5):
            print("    " + " ".join(f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs[i:i + 5]))
        print("};")

    import tokenizers
    print(f"// tokenizers {tokenizers.__version__}: {len(letters)} letters, {len(numbers)} numbers, "
          f"{len(extra)} numeric only for Digits")
    table("kLetterRanges", letters)
    table("kNumberRanges", numbers)
    table("kNumericExtraRanges", extra)


# --------------------------------------------------------------------------------------------

def first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main() -> None:
    if sys.argv[1:] == ["--unicode-tables"]:
        print_unicode_tables()
        return
    if not MODEL.is_file():
        die(f"{MODEL}: missing (run bash scripts/fetch_models.sh)")
    reader = gguf.GGUFReader(str(MODEL))
    tok, meta = build_reference(reader)
    print(f"{MODEL.name}: {meta['n_tokens']} tokens, {meta['n_merges']} merges, pre {meta['pre']}, "
          f"bos {meta['bos']} eos {meta['eos']} unk {meta['unk']} add_bos {meta['add_bos']}, "
          f"{len(meta['specials'])} control tokens")

    out = []
    for name, text in cases():
        enc = tok.encode(text, add_special_tokens=False)
        ids = enc.ids
        if any(i in meta["specials"].values() for i in ids):
            die(f"case {name}: the text contains a special token's spelling; keep fixtures free of them")
        back = tok.decode(ids, skip_special_tokens=False)
        if (back != text) != (name == LOSSY):
            die(f"case {name}: decode(encode(text)) {'!=' if back != text else '=='} text")
        out.append({"name": name, "text": text, "ids": ids, **({"lossy": True} if name == LOSSY else {})})

    hf = transformers_tokenizer()
    if hf is not None:
        agree, differ = 0, []
        for c in out:
            ids = hf.encode(c["text"], add_special_tokens=False)
            if ids == c["ids"]:
                agree += 1
            else:
                i = first_difference(ids, c["ids"])
                differ.append(f"{c['name']} (first difference at id {i}: transformers {ids[i:i + 4]}, "
                              f"reference {c['ids'][i:i + 4]})")
        print(f"transformers' GGUF tokenizer vs the reference: {agree} of {len(out)} cases agree")
        for d in differ:
            print(f"  differs: {d}")
        bt = json.loads(hf.backend_tokenizer.to_str())
        print(f"  transformers' pre_tokenizer: {json.dumps(bt.get('pre_tokenizer'))}")

    # Chat: transformers' apply_chat_template over the reference tokenizer (the GGUF's template).
    from transformers import PreTrainedTokenizerFast
    chat_tok = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=meta["chat_template"],
                                       bos_token="<|im_start|>", eos_token="<|im_end|>",
                                       unk_token="<|endoftext|>", pad_token="<|im_end|>")
    chats = []
    for name, messages in CHAT_CASES:
        text = chat_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = chat_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = list(ids)
        if ids != tok.encode(text, add_special_tokens=False).ids:
            die(f"chat case {name}: apply_chat_template ids differ from encoding its text")
        if hf is not None:
            hf_ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
            if hasattr(hf_ids, "keys"):
                hf_ids = hf_ids["input_ids"]
            same = list(hf_ids) == ids
            print(f"chat {name}: transformers' GGUF tokenizer {'agrees' if same else 'DIFFERS'}")
        chats.append({"name": name, "messages": messages, "add_generation_prompt": True, "text": text, "ids": ids})

    FIXTURES.mkdir(parents=True, exist_ok=True)
    for path, obj in ((FIXTURES / "smollm2_tokenizer_cases.json", out),
                      (FIXTURES / "smollm2_chat_cases.json", chats)):
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("[\n")
            for i, c in enumerate(obj):
                f.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")))
                f.write(",\n" if i + 1 < len(obj) else "\n")
            f.write("]\n")
        n_chars = sum(len(c["text"]) for c in obj)
        n_ids = sum(len(c["ids"]) for c in obj)
        print(f"wrote {path.relative_to(ROOT)}: {len(obj)} cases, {n_chars} characters, {n_ids} ids, "
              f"{path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
