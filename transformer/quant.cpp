// Block-quantised formats: sizes, reference dequantisation and quantisation (see quant.h).
// Compiled with -ffp-contract=off (transformer/CMakeLists.txt): `d * q + m` must round the product
// before the sum, as the reference does, or dequantisation is off by an ulp.
#include "transformer/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "transformer/quant_dot.h"

namespace nammkit {
namespace {

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

void dequantize_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  uint8_t sc[8], m[8];
  unpack_k_scales(b + 4, sc, m);
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c) {  // 64 weights: sub-blocks 2c (low nibbles) and 2c+1 (high)
    const float d0 = d * static_cast<float>(sc[2 * c]), mm0 = dmin * static_cast<float>(m[2 * c]);
    const float d1 = d * static_cast<float>(sc[2 * c + 1]), mm1 = dmin * static_cast<float>(m[2 * c + 1]);
    for (int l = 0; l < 32; ++l) y[64 * c + l] = d0 * static_cast<float>(qs[32 * c + l] & 0x0f) - mm0;
    for (int l = 0; l < 32; ++l) y[64 * c + 32 + l] = d1 * static_cast<float>(qs[32 * c + l] >> 4) - mm1;
  }
}

void dequantize_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  uint8_t sc[8], m[8];
  unpack_k_scales(b + 4, sc, m);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int j = 0; j < 8; ++j) {  // sub-block j: nibble (j odd: high) of qs[32*(j/2) + l], bit j of qh[l]
    const float dj = d * static_cast<float>(sc[j]), mj = dmin * static_cast<float>(m[j]);
    for (int l = 0; l < 32; ++l) {
      const int nibble = (j % 2 == 0) ? (qs[32 * (j / 2) + l] & 0x0f) : (qs[32 * (j / 2) + l] >> 4);
      const int q = nibble | (((qh[l] >> j) & 1) << 4);
      y[32 * j + l] = dj * static_cast<float>(q) - mj;
    }
  }
}

void dequantize_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int half = 0; half < 2; ++half) {  // 128 weights from ql[64], qh[32] and 8 scales
    const uint8_t* l4 = ql + 64 * half;
    const uint8_t* h2 = qh + 32 * half;
    for (int e = 0; e < 128; ++e) {
      const int l = e % 32, quarter = e / 32;  // quarter: which nibble / 2-bit field
      const int low = (quarter % 2 == 0 ? l4[l] : l4[l + 32]);
      const int nibble = quarter < 2 ? (low & 0x0f) : (low >> 4);
      const int q = nibble | (((h2[l] >> (2 * quarter)) & 3) << 4);
      const float dg = d * static_cast<float>(sc[8 * half + e / 16]);
      y[128 * half + e] = dg * static_cast<float>(q - 32);
    }
  }
}

// Block of 32 weights of a 32-block type: d * (q - o), or d * q + m for the types with a min (no
// "+ 0" for the others: it would turn -0 into +0).
void dequantize_block32(DType t, const uint8_t* b, float* y) {
  int q[32];
  float d, m;
  unpack_block32(t, b, q, d, m);
  const int offset = t == DType::Q4_0 ? 8 : t == DType::Q5_0 ? 16 : 0;
  const bool with_min = t == DType::Q4_1 || t == DType::Q5_1;
  for (int j = 0; j < 32; ++j) {
    const float scaled = d * static_cast<float>(q[j] - offset);
    y[j] = with_min ? scaled + m : scaled;
  }
}

// ggml's quantize_row_q{4,5}_{0,1}_ref for one block of 32. `bits` is 4 or 5; `with_min` selects _1.
void quantize_block32(const float* x, int bits, bool with_min, uint8_t* out) {
  const int levels = (1 << bits) - 1;  // 15 or 31
  float d, m = 0.0f;
  if (with_min) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    d = (hi - lo) / static_cast<float>(levels);
    m = lo;
  } else {  // the value of largest magnitude (the first, on ties) maps to -8 / -16
    float amax = 0.0f, vmax = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    d = vmax / static_cast<float>(-(1 << (bits - 1)));
  }
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const float offset = with_min ? 0.5f : static_cast<float>(1 << (bits - 1)) + 0.5f;
  int q[32];
  for (int j = 0; j < 32; ++j) {
    const float scaled = (with_min ? (x[j] - m) : x[j]) * id;
    q[j] = std::clamp(static_cast<int>(std::trunc(scaled + offset)), 0, levels);
  }
  uint8_t* p = out;
  store_f16(p, d);
  p += 2;
  if (with_min) {
    store_f16(p, m);
    p += 2;
  }
  if (bits == 5) {
    uint32_t qh = 0;
    for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
    std::memcpy(p, &qh, 4);
    p += 4;
  }
  for (int j = 0; j < 16; ++j) p[j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
}

void quantize_block_q8_0(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(out, d);
  for (int j = 0; j < 32; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
}

}  // namespace

void unpack_block32(DType t, const uint8_t* b, int q[32], float& d, float& m) {
  m = 0.0f;
  d = load_f16(b);
  const uint8_t* qs = nullptr;
  const uint8_t* qh = nullptr;
  switch (t) {
    case DType::Q4_0: qs = b + 2; break;
    case DType::Q4_1: m = load_f16(b + 2), qs = b + 4; break;
    case DType::Q5_0: qh = b + 2, qs = b + 6; break;
    case DType::Q5_1: m = load_f16(b + 2), qh = b + 4, qs = b + 8; break;
    case DType::Q8_0:
      for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(b[2 + j]);
      return;
    default: fail("unpack_block32", std::string("not a 32-weight block type: ") + dtype_name(t));
  }
  for (int j = 0; j < 16; ++j) {  // low nibbles are weights 0..15, high nibbles 16..31
    q[j] = qs[j] & 0x0f;
    q[j + 16] = qs[j] >> 4;
  }
  if (qh) {  // bit j of the little-endian u32 is the 5th bit of weight j
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    for (int j = 0; j < 32; ++j) q[j] |= static_cast<int>((bits >> j) & 1u) << 4;
  }
}

int dtype_block_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16: return 1;
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0: return 32;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return 256;
  }
  fail("dtype", "unknown type");
}

int dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    case DType::Q4_0: return 18;
    case DType::Q4_1: return 20;
    case DType::Q5_0: return 22;
    case DType::Q5_1: return 24;
    case DType::Q8_0: return 34;
    case DType::Q4_K: return 144;
    case DType::Q5_K: return 176;
    case DType::Q6_K: return 210;
  }
  fail("dtype", "unknown type");
}

bool is_quantized(DType t) { return dtype_block_size(t) > 1; }

bool can_quantize(DType t) {
  return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q8_0;
}

void dequantize_blocks(DType t, const uint8_t* src, float* dst, int64_t n) {
  const int bs = dtype_block_size(t), bb = dtype_block_bytes(t);
  const int64_t blocks = n / bs;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = src + i * bb;
    float* y = dst + i * bs;
    switch (t) {
      case DType::Q4_K: dequantize_q4_k(b, y); break;
      case DType::Q5_K: dequantize_q5_k(b, y); break;
      case DType::Q6_K: dequantize_q6_k(b, y); break;
      default: dequantize_block32(t, b, y); break;
    }
  }
}

void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n) {
  if (!can_quantize(t)) fail("quantize", std::string("cannot write ") + dtype_name(t) + " (read only)");
  const int bb = dtype_block_bytes(t);
  if (n % 32 != 0) fail("quantize", std::to_string(n) + " values is not a multiple of the block size 32");
  for (int64_t i = 0; i < n / 32; ++i) {
    const float* x = src + 32 * i;
    uint8_t* out = dst + i * bb;
    switch (t) {
      case DType::Q4_0: quantize_block32(x, 4, false, out); break;
      case DType::Q4_1: quantize_block32(x, 4, true, out); break;
      case DType::Q5_0: quantize_block32(x, 5, false, out); break;
      case DType::Q5_1: quantize_block32(x, 5, true, out); break;
      default: quantize_block_q8_0(x, out); break;
    }
  }
}

}  // namespace nammkit
