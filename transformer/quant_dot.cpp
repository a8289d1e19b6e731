// Activation quantisation, the scalar dot kernels and the run-time choice of kernel (see quant_dot.h).
// The AVX2 and AVX-512 kernels are in quant_dot_avx2.cpp / quant_dot_avx512.cpp (quant_dot_x86.inc).
#include "transformer/quant_dot.h"

#include <cpuid.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "transformer/quant.h"

namespace nammkit {

// Provided by the ISA-specific files (nullptr when the file was built without its instruction set).
QuantDotFn quant_dot_kernel_avx2(DType weight_type);
QuantDotFn quant_dot_kernel_avx512(DType weight_type);
QuantDotColumnsFn quant_dot_columns_kernel_avx2(DType weight_type);
QuantDotColumnsFn quant_dot_columns_kernel_avx512(DType weight_type);

namespace {

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

bool uses_256_blocks(DType t) { return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K; }

// Rounds x / d to the nearest integer (ties to even: one instruction, where lround is a libm call) in
// [-127, 127].
int8_t quantize_value(float x, float inverse_d) { return static_cast<int8_t>(std::nearbyint(x * inverse_d)); }

float block_scale(const float* x, int n, float& inverse_d) {
  float amax = 0.0f;
  for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
  return d;
}

// ---- scalar kernels: the integer sums of quant_dot.h spelled out --------------------------------

template <DType T>
float dot_block32_scalar(const uint8_t* w, const void* xq, int64_t n) {
  const auto* x = static_cast<const ActBlock32*>(xq);
  const int bytes = dtype_block_bytes(T);
  const int offset = T == DType::Q4_0 ? 8 : T == DType::Q5_0 ? 16 : 0;
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int q[32];
    float d, m;
    unpack_block32(T, w + b * bytes, q, d, m);
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += q[j] * x[b].q[j];
    isum -= offset * x[b].sum;
    sum += d * x[b].d * static_cast<float>(isum) + m * x[b].d * static_cast<float>(x[b].sum);
  }
  return sum;
}

// Q4_K (kFifthBit false) and Q5_K (true): sub-block j holds the low (j even) or high nibbles of
// qs[32 * (j / 2) + l], plus for Q5_K bit j of qh[l].
template <bool kFifthBit>
float dot_q45_k_scalar(const uint8_t* w, const void* xq, int64_t n) {
  const auto* x = static_cast<const ActBlock256*>(xq);
  constexpr int kBytes = kFifthBit ? 176 : 144;
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    const uint8_t* blk = w + b * kBytes;
    uint8_t sc[8], m[8];
    unpack_k_scales(blk + 4, sc, m);
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + (kFifthBit ? 48 : 16);
    int32_t isum = 0, msum = 0;
    for (int j = 0; j < 8; ++j) {
      int32_t s = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (j % 2 == 0) ? (qs[32 * (j / 2) + l] & 0x0f) : (qs[32 * (j / 2) + l] >> 4);
        if constexpr (kFifthBit) q |= ((qh[l] >> j) & 1) << 4;
        s += q * x[b].q[32 * j + l];
      }
      isum += sc[j] * s;
      msum += m[j] * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
    }
    sum += load_f16(blk) * x[b].d * static_cast<float>(isum) - load_f16(blk + 2) * x[b].d * static_cast<float>(msum);
  }
  return sum;
}

float dot_q6_k_scalar(const uint8_t* w, const void* xq, int64_t n) {
  const auto* x = static_cast<const ActBlock256*>(xq);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    const uint8_t* blk = w + b * 210;
    const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
    int32_t isum = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* l4 = blk + 64 * half;
      const uint8_t* h2 = blk + 128 + 32 * half;
      for (int g = 0; g < 8; ++g) {  // 8 groups of 16 weights
        int32_t s = 0;
        for (int i = 0; i < 16; ++i) {
          const int e = 16 * g + i, l = e % 32, quarter = e / 32;
          const int low = quarter % 2 == 0 ? l4[l] : l4[l + 32];
          const int q = (quarter < 2 ? (low & 0x0f) : (low >> 4)) | (((h2[l] >> (2 * quarter)) & 3) << 4);
          s += q * x[b].q[128 * half + e];
        }
        isum += sc[8 * half + g] * (s - 32 * x[b].bsums[8 * half + g]);
      }
    }
    sum += load_f16(blk + 208) * x[b].d * static_cast<float>(isum);
  }
  return sum;
}

QuantDotFn scalar_kernel(DType t) {
  switch (t) {
    case DType::Q4_0: return dot_block32_scalar<DType::Q4_0>;
    case DType::Q4_1: return dot_block32_scalar<DType::Q4_1>;
    case DType::Q5_0: return dot_block32_scalar<DType::Q5_0>;
    case DType::Q5_1: return dot_block32_scalar<DType::Q5_1>;
    case DType::Q8_0: return dot_block32_scalar<DType::Q8_0>;
    case DType::Q4_K: return dot_q45_k_scalar<false>;
    case DType::Q5_K: return dot_q45_k_scalar<true>;
    case DType::Q6_K: return dot_q6_k_scalar;
    default: return nullptr;
  }
}

// F16C straight from CPUID (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c"
// (GCC's does), and nammkit builds with both (the fuzz build uses clang).
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

bool cpu_has(SimdLevel level) {
  switch (level) {
    case SimdLevel::Scalar: return true;
    case SimdLevel::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case SimdLevel::Avx512:
      return cpu_has(SimdLevel::Avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

}  // namespace

void unpack_k_scales(const uint8_t packed[12], uint8_t scales[8], uint8_t mins[8]) {
  // Bytes 0..3: low 6 bits = sc_0..3, top 2 bits = high bits of sc_4..7; bytes 4..7 the same for the
  // mins; bytes 8..11: low nibble = low bits of sc_4..7, high nibble = low bits of m_4..7.
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
    scales[j + 4] = static_cast<uint8_t>((packed[j + 8] & 0x0f) | ((packed[j] >> 6) << 4));
    mins[j + 4] = static_cast<uint8_t>((packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4));
  }
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Scalar: return "scalar";
    case SimdLevel::Avx2: return "avx2";
    case SimdLevel::Avx512: return "avx512";
  }
  return "?";
}

SimdLevel best_simd_level() {
  static const SimdLevel level = [] {
    SimdLevel cap = SimdLevel::Avx512;
    if (const char* env = std::getenv("NAMMKIT_SIMD"); env && *env) {
      const std::string s = env;
      if (s == "scalar") cap = SimdLevel::Scalar;
      else if (s == "avx2") cap = SimdLevel::Avx2;
      else if (s != "avx512") fail("NAMMKIT_SIMD", "expected scalar, avx2 or avx512, got '" + s + "'");
    }
    for (SimdLevel l : {SimdLevel::Avx512, SimdLevel::Avx2}) {
      if (l <= cap && quant_dot_kernel(DType::Q8_0, l) != nullptr) return l;
    }
    return SimdLevel::Scalar;
  }();
  return level;
}

size_t activation_bytes(DType weight_type, int64_t n) {
  return uses_256_blocks(weight_type) ? static_cast<size_t>(n / 256) * sizeof(ActBlock256)
                                      : static_cast<size_t>(n / 32) * sizeof(ActBlock32);
}

void quantize_activations(DType weight_type, const float* x, int64_t n, void* out) {
  if (uses_256_blocks(weight_type)) {
    auto* blocks = static_cast<ActBlock256*>(out);
    for (int64_t b = 0; b < n / 256; ++b) {
      const float* xb = x + 256 * b;
      float inv;
      blocks[b].d = block_scale(xb, 256, inv);
      for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) {
          const int8_t q = quantize_value(xb[16 * g + i], inv);
          blocks[b].q[16 * g + i] = q;
          sum += q;
        }
        blocks[b].bsums[g] = static_cast<int16_t>(sum);
      }
    }
    return;
  }
  auto* blocks = static_cast<ActBlock32*>(out);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float inv;
    blocks[b].d = block_scale(xb, 32, inv);
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      blocks[b].q[j] = quantize_value(xb[j], inv);
      sum += blocks[b].q[j];
    }
    blocks[b].sum = sum;
  }
}

QuantDotFn quant_dot_kernel(DType weight_type, SimdLevel level) {
  if (!cpu_has(level)) return nullptr;
  switch (level) {
    case SimdLevel::Scalar: return scalar_kernel(weight_type);
    case SimdLevel::Avx2: return quant_dot_kernel_avx2(weight_type);
    case SimdLevel::Avx512: return quant_dot_kernel_avx512(weight_type);
  }
  return nullptr;
}

QuantDotColumnsFn quant_dot_columns_kernel(DType weight_type, SimdLevel level) {
  if (!cpu_has(level)) return nullptr;
  switch (level) {
    case SimdLevel::Scalar: return nullptr;
    case SimdLevel::Avx2: return quant_dot_columns_kernel_avx2(weight_type);
    case SimdLevel::Avx512: return quant_dot_columns_kernel_avx512(weight_type);
  }
  return nullptr;
}

}  // namespace nammkit
