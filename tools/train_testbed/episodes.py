"""Training data for the nammkit testbed model: the real corpora, cut exactly as nammkit's tasks cut
them (tasks/corpus.cpp, tasks/split.cpp), and synthetic long-context episodes that mirror nammkit's
generators (tasks/synthetic.cpp) byte for byte in their templates and answer formats.

Everything here works on *bytes*: the testbed tokenizer is byte-level (token id == byte value,
BOS = 256, EOS = 257), so a prompt of n bytes is exactly n + 1 tokens (BOS) and an episode can be
sized to the token without a length search.

Split discipline (what keeps `nammkit eval --tasks heldout_*.json` a test of generalisation):
  - haystack / LM text comes only from the first 80 % of each corpus (split_offset, as corpus.cpp);
  - the mirrored templates (passkey, needle, multikey, multiquery, vartrack) use the TRAIN value
    ranges of tasks/synthetic.cpp: numbers start with 1-4 (held-out: 5-9), keys use adjectives 0-15
    of kAdjectives (held-out: 16-31), variable names start with A-M (held-out: N-Z);
  - the extra episode kinds (line retrieval, JSON key-value retrieval, associative recall) use their
    own formats with keys made of words from the train text (never a held-out adjective) and values
    with any leading digit / random hex, so that the model learns to *copy* digits it has not seen
    in the first position of a mirrored needle (a model that has only ever produced 1-4 there would
    fail the held-out 5-9 needles for a reason that has nothing to do with its memory).
"""
from __future__ import annotations

import os
import random
import re

import numpy as np

BOS, EOS, VOCAB = 256, 257, 258
TRAIN_FRACTION = 0.8

# tasks/synthetic.cpp word lists (the first 16 adjectives are train keys, the last 16 held-out).
ADJECTIVES = ["ancient", "bitter", "brave", "calm", "clever", "crisp", "dusty", "eager",
              "fierce", "gentle", "glossy", "hollow", "humble", "icy", "jolly", "keen",
              "lively", "mellow", "misty", "noble", "odd", "proud", "quiet", "rapid",
              "rusty", "shy", "silent", "sturdy", "tender", "vivid", "wild", "zealous"]
NOUNS = ["anchor", "badger", "canyon", "dagger", "ember", "falcon", "garden", "harbor",
         "island", "jungle", "kettle", "lantern", "meadow", "needle", "orchid", "pepper",
         "quarry", "raven", "saddle", "tunnel", "umbrella", "valley", "walnut", "yarrow",
         "zephyr", "beacon", "cobalt", "drum", "feather", "glacier", "hammer", "ivory"]
HELDOUT_ADJ = set(ADJECTIVES[16:])

PASSKEY_PREFIX = (b"There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                  b"it. I will quiz you about the important information there.\n\n")
NIAH_PREFIX = (b"Some special magic numbers are hidden within the following text. Make sure to memorize it. "
               b"I will quiz you about the numbers afterwards.\n")
VARTRACK_PREFIX = b"Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
LINES_PREFIX = (b"Below is a record of lines I want you to remember. Each line begins with 'line <line index>' "
                b"and contains a '<REGISTER_CONTENT>' at the end of the line as a numerical value. For each "
                b"line index, memorize its corresponding <REGISTER_CONTENT>. At the end of the record, I will "
                b"ask you to retrieve the corresponding <REGISTER_CONTENT> of a certain line index. Now the "
                b"record start:\n\n")
KV_PREFIX = b"Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n"
REPEAT_WEIGHT_FRACTION = 0.25  # answer weight of "repeat" episodes, as a fraction of answer_weight
_REPEAT_ALPHABET = bytes(range(33, 127))
REPEAT_PREFIX = b"Read the following record carefully; you will have to write it out again exactly.\n\n"
ASSOC_PREFIX = (b"Here is a list of word pairs, written as key -> value. Remember every pair; you will be "
                b"asked for the value of one key.\n\n")


# ----------------------------------------------------------------------------------------------
# Corpora (tasks/corpus.cpp)
# ----------------------------------------------------------------------------------------------

def _read(p: str) -> bytes:
    with open(p, "rb") as f:
        return f.read()


def _strip_endoftext(text: bytes) -> bytes:
    parts = text.split(b"\n")
    if text.endswith(b"\n"):
        parts = parts[:-1]  # C++ stops at the end of the text: no empty last line
    return b"".join(p + b"\n" for p in parts if b"<|endoftext|>" not in p)


def _gutenberg_body(text: bytes) -> bytes:
    begin, end = 0, len(text)
    start = text.find(b"*** START OF")
    if start >= 0:
        nl = text.find(b"\n", start)
        begin = len(text) if nl < 0 else nl + 1
    stop = text.find(b"*** END OF", begin)
    if stop >= 0:
        end = stop
    return text[begin:end]


def load_corpus(name: str, shared: str) -> bytes:
    data = os.path.join(shared, "data")
    if name == "tinystories":
        return _strip_endoftext(_read(os.path.join(data, "tinystories", "tinystories_sample.txt")))
    if name == "shakespeare":
        return _read(os.path.join(data, "books", "tinyshakespeare.txt"))
    if name == "books":
        return b"\n\n".join(_gutenberg_body(_read(os.path.join(data, "books", b + ".txt")))
                            for b in ("pg1342", "pg2701", "pg84"))
    if name == "pg_essays":
        d = os.path.join(data, "pg_essays")
        files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".txt"))
        return b"\n\n".join(_read(f) for f in files)
    raise ValueError(name)


def split_offset(text: bytes) -> int:
    cut = int(TRAIN_FRACTION * len(text))
    nl = text.find(b"\n", cut)
    return len(text) if nl < 0 else nl + 1


def split_text(text: bytes, split: str) -> bytes:
    cut = split_offset(text)
    return text[:cut] if split == "train" else text[cut:]


CORPORA = ["books", "pg_essays", "shakespeare", "tinystories"]


class Texts:
    """The split's part of every corpus, plus the word list for the extra episode kinds."""

    def __init__(self, shared: str, split: str):
        self.split = split
        self.text = {n: split_text(load_corpus(n, shared), split) for n in CORPORA}
        # Haystacks: the corpora long enough for a 4K-byte window (tinystories is ~3 KB).
        self.hay_names = [n for n in CORPORA if len(self.text[n]) > 20000]
        sizes = np.array([len(self.text[n]) for n in self.hay_names], dtype=np.float64)
        # sqrt weighting: the books dominate by bytes; essays and Shakespeare still appear often.
        self.hay_weights = list(np.sqrt(sizes) / np.sqrt(sizes).sum())
        self.lm_names = CORPORA
        lm = np.array([len(self.text[n]) for n in CORPORA], dtype=np.float64)
        self.lm_weights = list(np.sqrt(lm) / np.sqrt(lm).sum())
        words = set()
        for n in ("books", "pg_essays"):
            words.update(w.lower() for w in re.findall(rb"\b[A-Za-z]{3,9}\b", self.text[n]))
        self.words = sorted(w for w in words if w.decode() not in HELDOUT_ADJ)


# ----------------------------------------------------------------------------------------------
# tasks/synthetic.cpp, on bytes
# ----------------------------------------------------------------------------------------------

_SPACE = frozenset(b" \n\t\r")


def sentence_start_before(s: bytes, pos: int) -> int:
    pos = min(pos, len(s))
    for i in range(pos, 0, -1):
        prev = s[i - 1]
        if prev == 10:
            return i
        if prev in (46, 33, 63) and i < len(s) and s[i] in _SPACE:
            return i + 1
    return 0


def sentence_start_after(s: bytes, pos: int) -> int:
    if pos == 0:
        return 0
    for i in range(pos, min(len(s), pos + 2000)):
        if s[i - 1] == 10:
            return i
        if s[i - 1] in (46, 33, 63) and s[i] in _SPACE:
            return i + 1
    return pos


def word_prefix(s: bytes, start: int, length: int) -> bytes:
    piece = s[start:start + length]
    if start + len(piece) >= len(s):
        return piece
    end = len(piece)
    while end > 0 and piece[end - 1] not in _SPACE and s[start + end] not in _SPACE:
        end -= 1
    return piece[:end]


def insert_needles(hay: bytes, needles: list[tuple[bytes, float]]) -> bytes:
    needles = sorted(needles, key=lambda n: n[1])  # stable
    out = hay
    for text, depth in reversed(needles):
        depth = min(max(depth, 0.0), 1.0)
        pos = int(depth * len(hay))
        if pos >= len(hay) and hay:
            out = out[:len(hay)] + (b"" if hay[-1] in _SPACE else b" ") + text + out[len(hay):]
            continue
        at = sentence_start_before(hay, pos)
        out = out[:at] + text + b" " + out[at:]
    return out


def number(rng: random.Random, digits: int, split: str) -> bytes:
    lo, hi = (5, 9) if split == "heldout" else (1, 4)
    return (str(rng.randint(lo, hi)) + "".join(str(rng.randrange(10)) for _ in range(digits - 1))).encode()


def key(rng: random.Random, split: str) -> bytes:
    adj = ADJECTIVES[16 + rng.randrange(16)] if split == "heldout" else ADJECTIVES[rng.randrange(16)]
    return (adj + "-" + NOUNS[rng.randrange(32)]).encode()


def variable(rng: random.Random, split: str) -> bytes:
    first = chr(ord("A") + (13 if split == "heldout" else 0) + rng.randrange(13))
    return (first + "".join(chr(ord("A") + rng.randrange(26)) for _ in range(4))).encode()


def join_keys(keys: list[bytes]) -> bytes:
    if len(keys) == 1:
        return keys[0]
    return b", ".join(keys[:-1]) + b", and " + keys[-1]


class Generator:
    """Builds episodes of an exact token length (BOS + prompt + answer + EOS)."""

    KINDS = ["passkey", "needle", "multikey", "multiquery", "vartrack", "lines", "kv", "assoc", "repeat"]

    def __init__(self, texts: Texts, mix: dict[str, float], lm_fraction: float):
        self.t = texts
        self.split = texts.split
        self.kinds = [k for k in self.KINDS if mix.get(k, 0) > 0]
        self.kind_w = [mix[k] for k in self.kinds]
        self.lm_fraction = lm_fraction

    # -- the haystack (SyntheticGenerator::build_prompt with an exact byte budget) --
    def _prompt(self, rng, prefix: bytes, needles, suffix: bytes, target_tokens: int) -> bytes | None:
        fixed = 1 + len(prefix) + len(suffix) + sum(len(n) + 1 for n, _ in needles)
        budget = target_tokens - fixed
        if budget < 32:
            return None
        name = rng.choices(self.t.hay_names, self.t.hay_weights)[0]
        text = self.t.text[name]
        needed = int(1.5 * budget) + 64
        start = sentence_start_after(text, rng.randrange(len(text) - needed)) if len(text) > needed else 0
        hay = word_prefix(text, start, budget)
        return prefix + insert_needles(hay, needles) + suffix

    def episode(self, rng: random.Random, kind: str, n_tokens: int):
        """(prompt bytes, answer bytes) with 1 + len(prompt) + len(answer) + 1 <= n_tokens, or None."""
        split = self.split
        depth = rng.random
        if kind == "passkey":
            k = number(rng, 5, split)
            ans = b" " + k + b"."
            p = self._prompt(rng, PASSKEY_PREFIX,
                             [(b"The pass key is " + k + b". Remember it. " + k + b" is the pass key.", depth())],
                             b"\n\nWhat is the pass key? The pass key is", n_tokens - len(ans) - 1)
            return None if p is None else (p, ans)
        if kind == "needle":
            k, v = key(rng, split), number(rng, 7, split)
            ans = b" " + v + b"."
            suffix = (b"\nWhat is the special magic number for " + k +
                      b" mentioned in the provided text? The special magic number for " + k +
                      b" mentioned in the provided text is")
            p = self._prompt(rng, NIAH_PREFIX, [(b"One of the special magic numbers for " + k + b" is: " + v + b".",
                                                 depth())], suffix, n_tokens - len(ans) - 1)
            return None if p is None else (p, ans)
        if kind in ("multikey", "multiquery"):
            room = (n_tokens - 420) // 64      # needles of ~62 bytes, with at least ~25 % haystack
            if kind == "multikey":
                pairs = min(rng.choice([2, 4, 8, 12, 16, 20, 24, 28, 32]), int(room * 0.75))
                if pairs < 2:
                    return None
                asked = 1
            else:
                pairs = min(rng.randint(2, 16), int(room * 0.75))
                if pairs < 2:
                    return None
                asked = rng.randint(2, min(4, pairs))
            keys: list[bytes] = []
            while len(keys) < pairs:
                kk = key(rng, split)
                if kk not in keys:
                    keys.append(kk)
            vals = [number(rng, 7, split) for _ in keys]
            needles = [(b"One of the special magic numbers for " + kk + b" is: " + vv + b".", rng.random())
                       for kk, vv in zip(keys, vals)]
            order = sorted(rng.sample(range(pairs), asked))
            q = join_keys([keys[i] for i in order])
            if asked == 1:
                suffix = (b"\nWhat is the special magic number for " + q +
                          b" mentioned in the provided text? The special magic number for " + q +
                          b" mentioned in the provided text is")
            else:
                suffix = (b"\nWhat are all the special magic numbers for " + q +
                          b" mentioned in the provided text? The special magic numbers for " + q +
                          b" mentioned in the provided text are")
            ans = b" " + join_keys([vals[i] for i in order]) + b"."
            p = self._prompt(rng, NIAH_PREFIX, needles, suffix, n_tokens - len(ans) - 1)
            return None if p is None else (p, ans)
        if kind == "vartrack":
            hops = rng.randint(1, 6)
            vs: list[bytes] = []
            while len(vs) < hops + 1:
                v = variable(rng, split)
                if v not in vs:
                    vs.append(v)
            val = number(rng, 5, split)
            depths = sorted(rng.random() for _ in vs)
            needles = [(b"VAR " + vs[0] + b" = " + val + b".", depths[0])]
            needles += [(b"VAR " + vs[i] + b" = VAR " + vs[i - 1] + b".", depths[i]) for i in range(1, len(vs))]
            suffix = (b"\nQuestion: Find all variables that are assigned the value " + val +
                      b" in the text above. Answer: According to the chain(s) of variable assignment in "
                      b"the text above, " + str(len(vs)).encode() + b" variables are assgined the value " +
                      val + b", they are: ")
            ans = b" ".join(vs) + b"."
            p = self._prompt(rng, VARTRACK_PREFIX, needles, suffix, n_tokens - len(ans) - 1)
            return None if p is None else (p, ans)
        words = self.t.words
        if kind == "lines":
            lines, seen = [], set()
            q_tail = b"\nNow the record is over. Tell me what is the <REGISTER_CONTENT> in line "
            budget = n_tokens - 2 - len(LINES_PREFIX) - len(q_tail) - 170
            used = 0
            while True:
                k = rng.choice(words) + b"-" + rng.choice(words)
                if k in seen:
                    continue
                line = b"line " + k + b": REGISTER_CONTENT is <" + str(rng.randint(1, 50000)).encode() + b">\n"
                if used + len(line) > budget:
                    break
                seen.add(k)
                lines.append((k, line))
                used += len(line)
            if len(lines) < 2:
                return None
            k, line = rng.choice(lines)
            val = line[line.index(b"<") + 1:line.index(b">")]
            p = LINES_PREFIX + b"".join(l for _, l in lines) + q_tail + k + b"? I need the number. "
            ans = b"The <REGISTER_CONTENT> in line " + k + b" is <" + val + b">."
            if 2 + len(p) + len(ans) > n_tokens:
                return None
            return p, ans
        if kind == "kv":
            def uuid():
                h = "%032x" % rng.getrandbits(128)
                return (h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-" + "89ab"[rng.randrange(4)] + h[17:20] +
                        "-" + h[20:32]).encode()
            recs = []
            budget = n_tokens - 2 - len(KV_PREFIX) - 140
            used = 0
            while used + 84 <= budget:
                recs.append((uuid(), uuid()))
                used += 84
            if len(recs) < 2:
                return None
            body = b""
            for i, (a, b) in enumerate(recs):
                body += (b"{" if i == 0 else b" ") + b'"' + a + b'": "' + b + b'"' + (b"}" if i + 1 == len(recs) else b",\n")
            kk, vv = rng.choice(recs)
            p = KV_PREFIX + body + b'\n\nKey: "' + kk + b'"\nCorresponding value:'
            ans = b' "' + vv + b'"'
            if 2 + len(p) + len(ans) > n_tokens:
                return None
            return p, ans
        if kind == "assoc":
            pairs, seen = [], set()
            budget = n_tokens - 2 - len(ASSOC_PREFIX) - 40
            used = 0
            while True:
                k = rng.choice(words)
                if k in seen:
                    continue
                v = rng.choice(words) if rng.random() < 0.5 else str(rng.randint(0, 99999)).encode()
                line = k + b" -> " + v + b"\n"
                if used + len(line) > budget:
                    break
                seen.add(k)
                pairs.append((k, v))
                used += len(line)
            if len(pairs) < 2:
                return None
            k, v = rng.choice(pairs)
            p = ASSOC_PREFIX + b"".join(a + b" -> " + b + b"\n" for a, b in pairs) + b"\nQuery: " + k + b" ->"
            ans = b" " + v + b"\n"
            if 2 + len(p) + len(ans) > n_tokens:
                return None
            return p, ans
        if kind == "repeat":
            # Dense copying: a record (random numbers, random words, or a piece of train text) and then
            # the same record again as the answer. Every answer byte after the first few is predictable
            # only by looking it up in the context (induction), which is what passkey/needle need; the
            # mirrored templates give one such lookup per episode, this gives dozens to hundreds.
            n = rng.randint(16, max(16, min(400, (n_tokens - 120) // 2)))
            style = rng.random()
            if style < 0.3:
                # High-entropy bytes: a one-byte match already finds the source, so a plain induction head
                # pays off at once (the bootstrap); numbers, words and text then need longer matches.
                rec = bytes(rng.choice(_REPEAT_ALPHABET) for _ in range(n))
            elif style < 0.55:
                rec = b" ".join(str(rng.randint(0, 10 ** rng.randint(3, 8))).encode() for _ in range(n // 4 + 1))
            elif style < 0.75:
                rec = b" ".join(rng.choice(words) for _ in range(n // 6 + 1))
            else:
                name = rng.choices(self.t.lm_names, self.t.lm_weights)[0]
                text = self.t.text[name]
                st = rng.randrange(max(1, len(text) - n))
                rec = text[st:st + n]
            rec = rec[:n]
            budget = n_tokens - 2 - len(REPEAT_PREFIX) - 2 * len(rec) - 40
            hay = b""
            if budget > 64 and rng.random() < 0.5:  # sometimes with text between record and copy
                hay = self._prompt(rng, b"", [], b"", rng.randint(64, budget)) or b""
            p = REPEAT_PREFIX + b"<record>\n" + rec + b"\n</record>\n" + hay + b"\nThe record, exactly:\n"
            ans = rec + b"\n"
            if 2 + len(p) + len(ans) > n_tokens:
                return None
            return p, ans
        raise ValueError(kind)

    def lm_segment(self, rng: random.Random, n_tokens: int) -> bytes:
        name = rng.choices(self.t.lm_names, self.t.lm_weights)[0]
        text = self.t.text[name]
        if len(text) <= n_tokens:
            return text[:n_tokens - 1]
        start = sentence_start_after(text, rng.randrange(len(text) - n_tokens))
        return text[start:start + n_tokens - 1]

    def row(self, rng: random.Random, length: int, answer_weight: float):
        """One training row of `length` + 1 tokens (inputs = row[:-1], targets = row[1:]) and the
        per-target loss weights: 1 on text, answer_weight on answer bytes and the EOS after them,
        0 on a BOS target (nothing predicts a segment start). Segments (BOS + episode + EOS, or BOS
        + text) are packed until the row is full; the first segment is an episode sized to 50-100 %
        of the row (often all of it), so retrieval is trained at the full curriculum length."""
        toks, w = [], []
        n = length + 1
        first = True
        while len(toks) < n:
            rem = n - len(toks)
            seg = None
            aw = answer_weight
            if rem >= 300 and rng.random() >= self.lm_fraction and self.kinds:
                size = rem if (not first or rng.random() < 0.5) else max(300, int(rem * rng.uniform(0.5, 1.0)))
                for _ in range(4):
                    kind = rng.choices(self.kinds, self.kind_w)[0]
                    ep = self.episode(rng, kind, size)
                    if ep is not None:
                        seg = ep
                        # "repeat" answers are long (up to 400 bytes): a lower weight keeps them from
                        # drowning the one-lookup episodes.
                        aw = max(1.0, answer_weight * REPEAT_WEIGHT_FRACTION) if kind == "repeat" else answer_weight
                        break
            first = False
            if seg is not None:
                p, a = seg
                toks += [BOS] + list(p) + list(a) + [EOS]
                w += [0.0] + [1.0] * len(p) + [aw] * (len(a) + 1)
            else:
                txt = self.lm_segment(rng, rem)
                toks += [BOS] + list(txt)
                w += [0.0] + [1.0] * len(txt)
        toks, w = toks[:n], w[:n]
        # w[i] is the weight of predicting toks[i] (from position i - 1): targets = toks[1:].
        return np.array(toks, dtype=np.int64), np.array(w[1:], dtype=np.float32)


def make_batch(gen: Generator, seed: int, index: int, batch: int, length: int, answer_weight: float):
    rng = random.Random((seed * 1_000_003 + index) * 7919 + length)
    rows = [gen.row(rng, length, answer_weight) for _ in range(batch)]
    x = np.stack([r[0] for r in rows])
    wt = np.stack([r[1] for r in rows])
    return x, wt
