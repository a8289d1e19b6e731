// Weight storage types: names, sizes, f16/bf16 conversions and dequantisation to f32.
// (The matrix products live in matmul.cpp.)
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "transformer/quant.h"
#include "transformer/tensor.h"

namespace nammkit {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
  }
  return "?";
}

size_t dtype_bytes(DType t, int64_t n) {
  const int64_t block = dtype_block_size(t);
  if (n % block != 0) {
    fail(dtype_name(t), std::to_string(n) + " elements is not a multiple of the block size " + std::to_string(block));
  }
  return static_cast<size_t>(n / block) * static_cast<size_t>(dtype_block_bytes(t));
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {  // inf / NaN: keep the payload
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal f16 = mant * 2^-24, normal in f32: shift the leading 1 into place
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((mant & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN (NaN stays quiet NaN)
    return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to inf
  const int exp = static_cast<int>(abs >> 23) - 127;
  if (exp >= -14) {  // normal f16: drop 13 mantissa bits with round-to-nearest-even
    uint32_t m = abs - (static_cast<uint32_t>(127 - 15) << 23);  // rebias
    m += 0xfff + ((m >> 13) & 1);
    return sign | static_cast<uint16_t>(m >> 13);
  }
  if (exp < -25) return sign;  // below half the smallest subnormal: zero
  // Subnormal f16: value = m * 2^-24. Shift the full 24-bit significand and round to nearest even.
  const uint32_t significand = (abs & 0x7fffff) | 0x800000;
  const int shift = -exp - 1;  // 14..24 (exp -15 -> 14: f16 subnormals hold 2^-15 as 0x200)
  const uint32_t half = 1u << (shift - 1);
  uint32_t m = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1);
  if (rest > half || (rest == half && (m & 1))) ++m;
  return sign | static_cast<uint16_t>(m);
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

void dequantize(DType t, const void* src, float* dst, int64_t n) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default: dequantize_blocks(t, bytes, dst, n); return;
  }
  fail("dequantize", "unknown type");
}

}  // namespace nammkit
