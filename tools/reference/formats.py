"""Hand-written readers/writers for the checkpoint formats nammkit loads (numpy only).

- safetensors: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}} (+ optional
  "__metadata__"), then the raw little-endian data; offsets are relative to the end of the header.
- GGUF v3: see write_gguf().
- llama2.c legacy .bin: 7 x int32 header then f32 tensors.
Also the number formats: F16, BF16 (round to nearest even) and GGML Q8_0.
"""
from __future__ import annotations

import json
import struct

import numpy as np

# ----------------------------------------------------------------------------------------------
# Number formats
# ----------------------------------------------------------------------------------------------


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit pattern (uint16), round to nearest, ties to even (no NaNs here)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    return bf16_bits_to_f32(f32_to_bf16_bits(x)).reshape(np.shape(x))


def round_f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


QK8_0 = 32


def quantize_q8_0(x: np.ndarray) -> bytes:
    """GGML Q8_0 (as llama.cpp's quantize_row_q8_0_ref / gguf-py): per block of 32 consecutive values
    of a row, d = max|x| / 127 (stored as f16), q = roundf(x / d) (int8, half away from zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.shape[-1] % QK8_0 == 0
    blocks = x.reshape(-1, QK8_0)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    v = (blocks * idv).astype(np.float32)
    q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def dequantize_q8_0(buf: bytes, n: int) -> np.ndarray:
    a = np.frombuffer(buf, dtype=np.uint8).reshape(-1, 34)
    assert a.shape[0] * QK8_0 == n
    d = a[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = a[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(-1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------

ST_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}


def write_safetensors(path: str, tensors: dict[str, np.ndarray], dtype: str = "F32",
                      metadata: dict[str, str] | None = None) -> None:
    """tensors: name -> float32 array; stored as dtype ('F32', 'F16', 'BF16'). Data in name order."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = f32_to_bf16_bits(a).astype("<u2").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    full = {"__metadata__": metadata or {"format": "pt"}}
    full.update(header)
    hj = json.dumps(full, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        raw = data[base + s:base + e]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        else:
            raise ValueError(dt)
        out[name] = a.reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------------------------
# GGUF v3
# ----------------------------------------------------------------------------------------------

GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32, GGUF_FLOAT32, GGUF_BOOL, \
    GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64 = range(13)
_SCALAR_FMT = {GGUF_UINT8: "<B", GGUF_INT8: "<b", GGUF_UINT16: "<H", GGUF_INT16: "<h",
               GGUF_UINT32: "<I", GGUF_INT32: "<i", GGUF_FLOAT32: "<f", GGUF_BOOL: "<?",
               GGUF_UINT64: "<Q", GGUF_INT64: "<q", GGUF_FLOAT64: "<d"}

GGML_F32, GGML_F16, GGML_Q8_0, GGML_BF16 = 0, 1, 8, 30
GGML_TYPE_NAME = {GGML_F32: "F32", GGML_F16: "F16", GGML_Q8_0: "Q8_0", GGML_BF16: "BF16"}


def _gstr(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _gvalue(vtype: int, value) -> bytes:
    if vtype == GGUF_STRING:
        return _gstr(value)
    if vtype == GGUF_ARRAY:
        etype, items = value
        out = struct.pack("<IQ", etype, len(items))
        return out + b"".join(_gvalue(etype, v) for v in items)
    return struct.pack(_SCALAR_FMT[vtype], value)


def encode_tensor(a: np.ndarray, ggml_type: int) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if ggml_type == GGML_F32:
        return a.astype("<f4").tobytes()
    if ggml_type == GGML_F16:
        return a.astype("<f2").tobytes()
    if ggml_type == GGML_BF16:
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    if ggml_type == GGML_Q8_0:
        return quantize_q8_0(a)
    raise ValueError(ggml_type)


def write_gguf(path: str, kv: list[tuple[str, int, object]], tensors: list[tuple[str, np.ndarray, int]],
               alignment: int = 32) -> None:
    """kv: (key, gguf value type, value) with arrays given as (element type, list).
    tensors: (name, float32 array in row-major [rows][cols] numpy order, ggml type).
    GGUF dims are reversed numpy dims: ne[0] = the last (contiguous) numpy axis."""
    out = bytearray()
    out += b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, vtype, value in kv:
        out += _gstr(key) + struct.pack("<I", vtype) + _gvalue(vtype, value)
    blobs = []
    off = 0
    for name, a, t in tensors:
        raw = encode_tensor(a, t)
        ne = list(reversed(a.shape))
        out += _gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", t, off)
        pad = (alignment - len(raw) % alignment) % alignment
        blobs.append(raw + b"\0" * pad)
        off += len(raw) + pad
    out += b"\0" * ((alignment - len(out) % alignment) % alignment)
    for b in blobs:
        out += b
    with open(path, "wb") as f:
        f.write(bytes(out))


def read_gguf(path: str):
    """Returns (kv dict, tensors dict name -> (float32 numpy array dequantised, ggml type))."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"GGUF"
    version, n_t, n_kv = struct.unpack_from("<IQQ", data, 4)
    assert version == 3
    pos = 24

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def rstr():
        nonlocal pos
        n = rd("<Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def rval(t):
        if t == GGUF_STRING:
            return rstr()
        if t == GGUF_ARRAY:
            et = rd("<I")
            n = rd("<Q")
            return [rval(et) for _ in range(n)]
        return rd(_SCALAR_FMT[t])

    kv = {}
    for _ in range(n_kv):
        k = rstr()
        t = rd("<I")
        kv[k] = rval(t)
    infos = []
    for _ in range(n_t):
        name = rstr()
        nd = rd("<I")
        ne = [rd("<Q") for _ in range(nd)]
        t = rd("<I")
        off = rd("<Q")
        infos.append((name, ne, t, off))
    align = kv.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, t, off in infos:
        n = int(np.prod(ne))
        shape = list(reversed(ne))
        assert off % align == 0
        p = base + off
        if t == GGML_F32:
            a = np.frombuffer(data, dtype="<f4", count=n, offset=p).astype(np.float32)
        elif t == GGML_F16:
            a = np.frombuffer(data, dtype="<f2", count=n, offset=p).astype(np.float32)
        elif t == GGML_BF16:
            a = bf16_bits_to_f32(np.frombuffer(data, dtype="<u2", count=n, offset=p))
        elif t == GGML_Q8_0:
            a = dequantize_q8_0(data[p:p + n // 32 * 34], n)
        else:
            raise ValueError(t)
        tensors[name] = (a.reshape(shape), t)
    return kv, tensors


# ----------------------------------------------------------------------------------------------
# llama2.c legacy format
# ----------------------------------------------------------------------------------------------

LLAMA2C_ORDER = ["tok_embeddings", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
                 "rms_final", "freq_cis_real", "freq_cis_imag"]


def read_llama2c(path: str):
    """Returns (header dict, tensors dict of float32 arrays with a leading layer axis)."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, nl, nh, nkv, vocab, seq = struct.unpack_from("<7i", data, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // nh
    kvd = nkv * hd
    shapes = {"tok_embeddings": (vocab, dim), "rms_att": (nl, dim), "wq": (nl, dim, dim),
              "wk": (nl, kvd, dim), "wv": (nl, kvd, dim), "wo": (nl, dim, dim), "rms_ffn": (nl, dim),
              "w1": (nl, hidden, dim), "w2": (nl, dim, hidden), "w3": (nl, hidden, dim),
              "rms_final": (dim,), "freq_cis_real": (seq, hd // 2), "freq_cis_imag": (seq, hd // 2)}
    off = 28
    t = {}
    for k in LLAMA2C_ORDER:
        n = int(np.prod(shapes[k]))
        t[k] = np.frombuffer(data, dtype="<f4", count=n, offset=off).reshape(shapes[k]).astype(np.float32)
        off += 4 * n
    if not shared:
        n = vocab * dim
        t["wcls"] = np.frombuffer(data, dtype="<f4", count=n, offset=off).reshape(vocab, dim).astype(np.float32)
        off += 4 * n
    assert off == len(data), (off, len(data))
    hdr = dict(dim=dim, hidden_dim=hidden, n_layers=nl, n_heads=nh, n_kv_heads=nkv, vocab_size=vocab,
               seq_len=seq, shared_classifier=shared)
    return hdr, t


def write_llama2c(path: str, hdr: dict, t: dict[str, np.ndarray]) -> None:
    vocab = hdr["vocab_size"] if hdr.get("shared_classifier", True) else -hdr["vocab_size"]
    out = bytearray(struct.pack("<7i", hdr["dim"], hdr["hidden_dim"], hdr["n_layers"], hdr["n_heads"],
                                hdr["n_kv_heads"], vocab, hdr["seq_len"]))
    for k in LLAMA2C_ORDER + ([] if hdr.get("shared_classifier", True) else ["wcls"]):
        out += np.ascontiguousarray(t[k], dtype="<f4").tobytes()
    with open(path, "wb") as f:
        f.write(bytes(out))
