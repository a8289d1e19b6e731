#!/usr/bin/python3
"""Compare the nammkit C++ runtime with the PyTorch float64 reference on an exported testbed model.

    /usr/bin/python3 tools/train_testbed/check_fixture.py --fixture /tmp/testbed_smoke/logits_testbed.json \
        [--build build-main]

1. logits: builds check_logits.cpp against <build>/transformer/libnammkit_transformer.a (into /tmp),
   feeds the fixture's tokens with prefill chunks 128 and 1 (the GEMM and the decode paths, as
   tests/test_runtime.cpp's MatchesPyTorchFixtures does) and checks max|c++ - ref| / max|ref| < 1e-3
   on the stored positions;
2. tokenizer + generation: `nammkit run --prompt <greedy_prompt> --ignore-eos` must print the
   fixture's float64 greedy continuation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-main"), help="a nammkit CMake build folder")
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args()
    fx = json.load(open(a.fixture))
    model = fx["model_path"] if os.path.isabs(fx["model_path"]) else os.path.join(ROOT, fx["model_path"])
    exe = "/tmp/nammkit_check_logits"
    lib = os.path.join(a.build, "transformer", "libnammkit_transformer.a")
    subprocess.run(["g++", "-std=c++20", "-O2", "-I", ROOT, os.path.join(HERE, "check_logits.cpp"), lib, "-ltbb",
                    "-fopenmp", "-lpthread", "-o", exe], check=True)
    ok = True
    ref = np.array(fx["logits"], dtype=np.float64)
    for chunk in (128, 1):
        out = subprocess.run([exe, model, str(chunk)] + [str(t) for t in fx["tokens"]], check=True,
                             capture_output=True, text=True).stdout.split("\n")
        rows = {int(l.split()[0]): np.array(l.split()[1:], dtype=np.float64) for l in out if l.strip()}
        for r, pos in enumerate(fx["positions"]):
            err = np.abs(rows[pos] - ref[r]).max() / np.abs(ref[r]).max()
            good = err < a.tol
            ok &= good
            print(f"logits chunk {chunk:3d} position {pos}: rel error {err:.2e} {'ok' if good else 'FAIL'}")
    # Tokenizer: ids must be BOS + the bytes, and decode must give the bytes back, on real text
    # (UTF-8 essays, Windows-1252 Gutenberg bytes with CRLF, digits, UUID-like keys).
    sys.path.insert(0, HERE)
    import episodes as E
    shared = next(p for p in (os.environ.get("NAMMKIT_SHARED_DIR"), os.path.join(os.path.dirname(ROOT), "shared"),
                              "/work/shared") if p and os.path.isdir(p))
    sample = (E.load_corpus("books", shared)[:3000] + E.load_corpus("pg_essays", shared)[:3000] +
              "caf\u00e9 \u65e5\u672c \U0001f600\t 12345 ab0c-9f12-4e \r\n  x".encode() + bytes(range(1, 256)))
    tmp = "/tmp/nammkit_check_tok.bin"
    with open(tmp, "wb") as f:
        f.write(sample)
    enc = subprocess.run([exe, model, "--encode", tmp], capture_output=True, text=True)
    ids = [int(t) for t in enc.stdout.split()]
    good = ids == [E.BOS] + list(sample) and enc.returncode == 0
    ok &= good
    print(f"tokenizer: {len(sample)} bytes -> {len(ids)} ids, ids == BOS + bytes and decode round trip: "
          f"{'ok' if good else 'FAIL'}")
    nk = os.path.join(a.build, "bin", "nammkit")
    run = subprocess.run([nk, "run", "--model", model, "--prompt", fx["greedy_prompt"], "--max-new-tokens",
                          str(len(fx["greedy_ids"])), "--ignore-eos", "--threads", "1"],
                         check=True, capture_output=True).stdout
    want = fx["greedy_prompt"].encode() + bytes(i for i in fx["greedy_ids"] if i < 256)
    good = want in run
    ok &= good
    print(f"greedy: nammkit run printed {run.strip()[:120]!r}; float64 reference {want!r}: {'ok' if good else 'FAIL'}")
    print("ALL OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
