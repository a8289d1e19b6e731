#!/usr/bin/env python3
"""Reference vectors for llama.cpp's block quantisation formats, from the `gguf` PyPI package.

Writes tests/fixtures/quant_reference.json (deterministic: fixed seed, same bytes on every run):

  {"generator": "...", "types": {"Q4_0": {
      "block_size": 32, "block_bytes": 18,
      "blocks_hex": "...",            # random blocks (random bytes; f16 scale fields set to finite values)
      "dequant_bits": [u32, ...],     # gguf.quants.dequantize(blocks) as float32 bit patterns
      "quant_input_bits": [u32, ...], # (writable types only) random float32 values ...
      "quant_hex": "..."              # ... and gguf.quants.quantize() of them
  }, ...}}

Run with the tools venv (tools/train_testbed/setup.sh --reference):
    tools/train_testbed/.venv/bin/python tools/reference/quant_fixtures.py
"""
import json
import pathlib
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "quant_reference.json"

# type -> (byte offsets of its f16 scale fields, blocks to generate, writable by gguf-py)
TYPES = {
    "Q4_0": (T.Q4_0, [0], 6, True),
    "Q4_1": (T.Q4_1, [0, 2], 6, True),
    "Q5_0": (T.Q5_0, [0], 6, True),
    "Q5_1": (T.Q5_1, [0, 2], 6, True),
    "Q8_0": (T.Q8_0, [0], 6, True),
    "Q4_K": (T.Q4_K, [0, 2], 3, False),
    "Q5_K": (T.Q5_K, [0, 2], 3, False),
    "Q6_K": (T.Q6_K, [208], 3, False),
}


def f32_bits(a: np.ndarray) -> list[int]:
    return [int(v) for v in np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).ravel()]


def main() -> int:
    rng = np.random.default_rng(20261130)
    out = {"generator": "tools/reference/quant_fixtures.py with gguf (PyPI) quants.dequantize / quantize",
           "types": {}}
    for name, (qtype, scale_offsets, n_blocks, writable) in TYPES.items():
        block_size, type_size = quants.GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for off in scale_offsets:  # finite scales of either sign, magnitudes 1e-4 .. 0.1
            mag = 10.0 ** rng.uniform(-4, -1, size=n_blocks)
            sign = rng.choice([-1.0, 1.0], size=n_blocks)
            blocks[:, off:off + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        deq = quants.dequantize(blocks.reshape(-1), qtype).astype(np.float32)
        assert deq.shape == (n_blocks * block_size,) and np.isfinite(deq).all(), name
        entry = {"block_size": block_size, "block_bytes": type_size, "blocks_hex": blocks.tobytes().hex(),
                 "dequant_bits": f32_bits(deq)}
        if writable:
            x = (rng.standard_normal(n_blocks * block_size) * rng.uniform(0.01, 2.0)).astype(np.float32)
            x[:block_size] = 0.0  # an all-zero block: d = 0 must not divide by zero
            x[block_size + 5] = 7.5  # an outlier that sets a block's scale
            q = quants.quantize(x.reshape(1, -1), qtype).reshape(-1)
            assert q.size == n_blocks * type_size, name
            entry["quant_input_bits"] = f32_bits(x)
            entry["quant_hex"] = q.tobytes().hex()
        out["types"][name] = entry
        print(f"{name}: {n_blocks} blocks of {block_size} ({type_size} bytes)"
              f"{', quantize vectors' if writable else ''}", file=sys.stderr)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
