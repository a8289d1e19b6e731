"""Reference tokenizers for nammkit fixtures (plain Python, no third-party packages).

1. Byte-level BPE (GPT-2 / Llama-3 family):
   - pre_split(text): the Llama-3 ("llama-bpe") pre-tokenizer regex
         (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|
         ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+
     implemented as a hand-written scanner (Python's `re` has no \\p{L}); see README.md.
   - bytes_to_unicode(): the GPT-2 byte -> printable-character map.
   - train_bpe(): a small deterministic BPE trainer.
   - ByteLevelBPE: encode()/decode() with ranked merges.
2. SentencePiece-style (llama2.c tokenizer.bin): read_llama2c_tokenizer() and
   llama2c_encode(), a direct port of llama2.c's encode().
"""
from __future__ import annotations

import struct
import unicodedata
from collections import defaultdict

# ----------------------------------------------------------------------------------------------
# Character classes (exactly as used by the pre-split rule)
# ----------------------------------------------------------------------------------------------

# Unicode White_Space property (what \s means in Oniguruma / Rust regex / PCRE2 with UCP).
WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F,
     0x3000] + list(range(0x2000, 0x200B)))


def is_space(c: str) -> bool:
    return ord(c) in WHITESPACE


def is_letter(c: str) -> bool:  # \p{L}: general category L*
    return unicodedata.category(c)[0] == "L"


def is_number(c: str) -> bool:  # \p{N}: general category N*
    return unicodedata.category(c)[0] == "N"


def is_newline(c: str) -> bool:
    return c == "\r" or c == "\n"


CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")  # after an apostrophe, case-insensitive


def pre_split(text: str) -> list[str]:
    """Llama-3 pre-tokenizer. Returns the pieces; ''.join(pieces) == text."""
    out = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        end = -1
        # 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)  -- first alternative that matches, in this order
        if c == "'":
            for suf in CONTRACTIONS:
                if text[i + 1:i + 1 + len(suf)].lower() == suf:
                    end = i + 1 + len(suf)
                    break
        # 2. [^\r\n\p{L}\p{N}]?\p{L}+
        if end < 0:
            j = -1
            if is_letter(c):
                j = i
            elif not is_newline(c) and not is_number(c) and i + 1 < n and is_letter(text[i + 1]):
                j = i + 1
            if j >= 0:
                while j < n and is_letter(text[j]):
                    j += 1
                end = j
        # 3. \p{N}{1,3}
        if end < 0 and is_number(c):
            j = i
            while j < n and j - i < 3 and is_number(text[j]):
                j += 1
            end = j
        # 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        if end < 0:
            def is_punct(ch):
                return not is_space(ch) and not is_letter(ch) and not is_number(ch)
            j = -1
            if is_punct(c):
                j = i
            elif c == " " and i + 1 < n and is_punct(text[i + 1]):
                j = i + 1
            if j >= 0:
                while j < n and is_punct(text[j]):
                    j += 1
                while j < n and is_newline(text[j]):
                    j += 1
                end = j
        if end < 0 and is_space(c):
            j = i
            while j < n and is_space(text[j]):
                j += 1
            # run = text[i:j], all whitespace
            # 5. \s*[\r\n]+  -> up to and including the LAST \r or \n of the run
            last_nl = -1
            for k in range(j - 1, i - 1, -1):
                if is_newline(text[k]):
                    last_nl = k
                    break
            if last_nl >= 0:
                end = last_nl + 1
            # 6. \s+(?!\S)  -> whole run at end of text, else the run minus its last char
            elif j == n:
                end = j
            elif j - i >= 2:
                end = j - 1
            # 7. \s+  -> (a single whitespace char before a non-space)
            else:
                end = j
        assert end > i, (text, i)
        out.append(text[i:end])
        i = end
    return out


def build_reference_regex():
    """The same rule as a Python `re` pattern with \\p{L}/\\p{N}/\\s expanded to explicit classes.
    Only used to cross-check pre_split(); slow to build (scans all code points)."""
    import re

    def ranges(pred):
        rs, start, prev = [], None, None
        for cp in range(0x110000):
            if 0xD800 <= cp <= 0xDFFF:
                ok = False
            else:
                ok = pred(chr(cp))
            if ok and start is None:
                start = cp
            if not ok and start is not None:
                rs.append((start, cp - 1))
                start = None
        if start is not None:
            rs.append((start, 0x10FFFF))
        return "".join(re.escape(chr(a)) if a == b else re.escape(chr(a)) + "-" + re.escape(chr(b))
                       for a, b in rs)

    L = ranges(is_letter)
    N = ranges(is_number)
    S = "".join(re.escape(chr(c)) for c in sorted(WHITESPACE))
    pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
           rf"|[^\r\n{L}{N}]?[{L}]+"
           rf"|[{N}]{{1,3}}"
           rf"| ?[^{S}{L}{N}]+[\r\n]*"
           rf"|[{S}]*[\r\n]+"
           rf"|[{S}]+(?![^{S}])"
           rf"|[{S}]+")
    return re.compile(pat)


# ----------------------------------------------------------------------------------------------
# Byte-level BPE
# ----------------------------------------------------------------------------------------------

def bytes_to_unicode_list() -> list[tuple[int, str]]:
    """GPT-2's map, in GPT-2's order (printable bytes first, then the rest mapped to U+0100...)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


BYTE_TO_UNICODE = dict(bytes_to_unicode_list())
UNICODE_TO_BYTE = {v: k for k, v in BYTE_TO_UNICODE.items()}


def to_byte_level(piece: str) -> str:
    return "".join(BYTE_TO_UNICODE[b] for b in piece.encode("utf-8"))


def train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE on pre-split pieces. Each step merges the most frequent adjacent pair
    (ties: the lexicographically smallest (left, right) pair). Deterministic."""
    word_counts: dict[str, int] = defaultdict(int)
    for p in pre_split(text):
        word_counts[to_byte_level(p)] += 1
    words = [list(w) for w in sorted(word_counts)]
    counts = [word_counts["".join(w)] for w in words]
    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += counts[wi]
            pair_words[(a, b)].add(wi)
    merges = []
    for _ in range(n_merges):
        best = None
        best_c = 0
        for p, c in pair_count.items():
            if c > best_c or (c == best_c and c > 0 and p < best):
                best, best_c = p, c
        if best is None or best_c <= 0:
            break
        merges.append(best)
        a, b = best
        ab = a + b
        for wi in sorted(pair_words[best]):
            w = words[wi]
            cnt = counts[wi]
            for x, y in zip(w, w[1:]):
                pair_count[(x, y)] -= cnt
            nw = []
            k = 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    nw.append(ab)
                    k += 2
                else:
                    nw.append(w[k])
                    k += 1
            words[wi] = nw
            for x, y in zip(nw, nw[1:]):
                pair_count[(x, y)] += cnt
                pair_words[(x, y)].add(wi)
        del pair_count[best]
        pair_words.pop(best, None)
    return merges


class ByteLevelBPE:
    def __init__(self, tokens: list[str], merges: list[tuple[str, str]], special: dict[str, int]):
        self.tokens = tokens
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.merges = merges
        self.rank = {m: r for r, m in enumerate(merges)}
        self.special = special

    def bpe(self, word: str, ignore_merges: bool = False) -> list[str]:
        """Merge the byte-level symbols of one pre-split piece: repeatedly apply the lowest-rank
        merge present (all its non-overlapping occurrences, left to right)."""
        if ignore_merges and word in self.token_to_id:
            return [word]
        syms = list(word)
        while len(syms) > 1:
            best_rank, best = None, None
            for p in zip(syms, syms[1:]):
                r = self.rank.get(p)
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best = r, p
            if best is None:
                break
            a, b = best
            out = []
            k = 0
            while k < len(syms):
                if k + 1 < len(syms) and syms[k] == a and syms[k + 1] == b:
                    out.append(a + b)
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            syms = out
        return syms

    def encode(self, text: str, add_bos: bool = False, ignore_merges: bool = False) -> list[int]:
        ids = [self.special["<|begin_of_text|>"]] if add_bos else []
        for piece in pre_split(text):
            for s in self.bpe(to_byte_level(piece), ignore_merges):
                ids.append(self.token_to_id[s])
        return ids

    def decode(self, ids: list[int]) -> str:
        specials = set(self.special.values())
        s = "".join(self.tokens[i] for i in ids if i not in specials)
        return bytes(UNICODE_TO_BYTE[c] for c in s).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# llama2.c SentencePiece-style tokenizer
# ----------------------------------------------------------------------------------------------

def read_llama2c_tokenizer(path: str, vocab_size: int):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off = 4
    pieces, scores = [], []
    for _ in range(vocab_size):
        score, ln = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + ln])
        off += ln
        scores.append(score)
    assert off == len(data), (off, len(data))
    return pieces, scores, max_len


def llama2c_encode(pieces: list[bytes], scores: list[float], text: str, bos: bool, eos: bool):
    """Port of llama2.c run.c encode(): dummy ' ' prefix, per-code-point lookup with byte
    fallback (+3), then repeatedly merge the adjacent pair whose concatenation is a piece with
    the highest score (first such pair on ties)."""
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)  # first id for a duplicated piece
    toks = []
    if bos:
        toks.append(1)
    tb = text.encode("utf-8")
    if len(tb) > 0:
        toks.append(lookup[b" "])
    for ch in text:  # one UTF-8 code point at a time (llama2.c groups up to 4 bytes)
        cb = ch.encode("utf-8")
        if cb in lookup:
            toks.append(lookup[cb])
        else:
            toks.extend(b + 3 for b in cb)
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for k in range(len(toks) - 1):
            pid = lookup.get(pieces[toks[k]] + pieces[toks[k + 1]], -1)
            if pid != -1 and scores[pid] > best_score:
                best_score, best_id, best_idx = scores[pid], pid, k
        if best_idx == -1:
            break
        toks[best_idx:best_idx + 2] = [best_id]
    if eos:
        toks.append(2)
    return toks
