#!/usr/bin/python3
"""Write tests/fixtures/jieba_reference.json: Python jieba's segmentation of Chinese LongBench text.

    /usr/bin/python3 tools/reference/jieba_fixture.py

The reference is jieba 0.42.1 itself, as LongBench's metrics.py calls it:
jieba.cut(text, cut_all=False) (HMM=True, the default). The script downloads the same sdist that
scripts/fetch_models.sh fetches (pip, pinned sha256), extracts it into a temporary folder and imports
jieba from there: nothing is installed. Needs network access to PyPI once per run, about 10 s.

Texts (deterministic; reads ../shared/data/longbench or $NAMMKIT_SHARED/data/longbench):
  - every answer and every question ("input") of multifieldqa_zh.jsonl and passage_retrieval_zh.jsonl;
  - the first CONTEXT_CHARS characters of the first CONTEXTS_PER_FILE contexts of each file;
  - a few mixed strings (English, digits, punctuation, whitespace runs, \\r\\n, emoji, full width).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "jieba_reference.json")
SHARED = os.environ.get("NAMMKIT_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
if not os.path.isdir(SHARED) and os.path.isdir("/work/shared"):
    SHARED = "/work/shared"

SPEC = "jieba==0.42.1"
SDIST_SHA256 = "055ca12f62674fafed09427f176506079bc135638a14e23e25be909131928db2"  # as in fetch_models.sh
FILES = ("multifieldqa_zh.jsonl", "passage_retrieval_zh.jsonl")
CONTEXTS_PER_FILE = 10
CONTEXT_CHARS = 3000

MIXED = [
    "",
    "Hello, world! 你好，世界！",
    "我在2019年用Python 3.8.1写了100%的C++代码 & C# 代码。",
    "电话：010-12345678，邮箱 abc_def@example.com，网址 https://www.example.org/a?b=1",
    "多个空格   和\t制表符\n换行\r\n回车换行\r单独回车",
    "表情😀符号🎉和𠀀扩展B区汉字",
    "全角标点：「引号」（括号）【方括号】——破折号……省略号；１２３ＡＢＣ",
    "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
    "他来到了网易杭研大厦",
    "工信处女干事每月经过下属科室都要亲口交代24口交换机等技术性器件的安装工作",
    "结婚的和尚未结婚的",
    "  leading and trailing spaces  ",
    "αβγ Ελληνικά Кириллица café naïve",
    "3.14159 -42 1e10 0x1F 50.5%的概率",
    "\u3000全角空格\u3000和\u00a0不换行空格",
    "李小福是创新办主任也是云计算方面的专家",
]


def fetch_sdist(tmp: str) -> str:
    """Download the pinned sdist with pip (hash-checked) and return the extracted package root."""
    req = os.path.join(tmp, "requirements.txt")
    with open(req, "w") as f:
        f.write(f"{SPEC} --hash=sha256:{SDIST_SHA256}\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:all:",
                    "--require-hashes", "-d", tmp, "-r", req], check=True)
    with tarfile.open(os.path.join(tmp, "jieba-0.42.1.tar.gz")) as t:
        t.extractall(tmp, members=[m for m in t.getmembers() if m.name.startswith("jieba-0.42.1/jieba/")])
    return os.path.join(tmp, "jieba-0.42.1")


def longbench_texts() -> list[tuple[str, str]]:
    """(source, text) pairs in a fixed order."""
    out = []
    for name in FILES:
        with open(os.path.join(SHARED, "data", "longbench", name), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        for i, row in enumerate(rows):
            for j, answer in enumerate(row["answers"]):
                out.append((f"{name}:{i}:answers[{j}]", answer))
            out.append((f"{name}:{i}:input", row["input"]))
        for i, row in enumerate(rows[:CONTEXTS_PER_FILE]):
            out.append((f"{name}:{i}:context[:{CONTEXT_CHARS}]", row["context"][:CONTEXT_CHARS]))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, fetch_sdist(tmp))
        import jieba  # noqa: E402 (from the extracted sdist)

        jieba.setLogLevel(logging.WARNING)
        jieba.dt.tmp_dir = tmp  # its dictionary cache goes with the temporary folder
        texts = [("mixed", t) for t in MIXED] + longbench_texts()
        cases = [{"source": src, "text": t, "tokens": list(jieba.cut(t, cut_all=False))} for src, t in texts]
    doc = {
        "reference": f"{SPEC}: jieba.cut(text, cut_all=False, HMM=True)",
        "generated_by": "tools/reference/jieba_fixture.py",
        "cases": cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    tokens = sum(len(c["tokens"]) for c in cases)
    chars = sum(len(c["text"]) for c in cases)
    print(f"{OUT}: {len(cases)} texts, {chars} characters, {tokens} tokens, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
