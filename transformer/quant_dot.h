// Dot products of quantised weight rows with 8-bit quantised activations: the inner loop of every
// linear layer on quantised weights (matmul.cpp), computed the way llama.cpp computes it.
//
// An activation vector is quantised once per layer input, per block of 32 (for the 32-weight formats
// Q4_0 .. Q8_0) or 256 (K-quants) values: q = round(x / d) with d = max|x| / 127. A weight block and an
// activation block then multiply as integers (u8 x s8 products summed in int32) and only the block
// sums are scaled to float:
//
//   Q4_0, Q5_0:  sum_j (q_j - o) * a_j       = sum_j q_j a_j - o * sum_j a_j      (o = 8, 16)
//   Q4_1, Q5_1:  sum_j (d q_j + m) * da a_j  = d da sum_j q_j a_j + m da sum_j a_j
//   Q4_K, Q5_K:  per sub-block of 32: sc_j * sum q a, and dmin m_j * (sum of a over the sub-block)
//   Q6_K:        per group of 16: sc_g * (sum q a - 32 sum a)
//   Q8_0:        |w| * sign(a, w), so the u8 x s8 instruction applies to signed weights
//
// which is why the activation blocks carry their integer sums. The error against the float product is
// that of the activation rounding: at most d/2 per value, i.e. |err| <= sum_j |w_j| * d(block of j) / 2.
//
// Three implementations of every kernel, chosen at run time (best_simd_level): scalar C++, AVX2
// (vpmaddubsw + vpmaddwd) and AVX-512 (VNNI vpdpbusd on 256-bit vectors). All three compute the same
// integer sums; they differ only in the order the float block sums are added.
#pragma once
#include <cstddef>
#include <cstdint>

#include "transformer/tensor.h"

namespace nammkit {

// One block of 32 quantised activations: values q[j] * d, and sum = sum_j q[j].
struct ActBlock32 {
  float d;
  int32_t sum;
  int8_t q[32];
};

// One block of 256 quantised activations (K-quants): values q[j] * d; bsums[g] = sum of q over the
// 16 values of group g.
struct ActBlock256 {
  float d;
  int16_t bsums[16];
  int8_t q[256];
};

enum class SimdLevel : uint8_t { Scalar, Avx2, Avx512 };
const char* simd_level_name(SimdLevel level);  // "scalar", "avx2", "avx512"
// The fastest level compiled into this binary that this CPU runs ($NAMMKIT_SIMD = scalar|avx2|avx512
// caps it, for comparisons).
SimdLevel best_simd_level();

// Bytes of the quantised activations for an `n`-vector multiplied with weights of type `weight_type`.
size_t activation_bytes(DType weight_type, int64_t n);
// Quantises x[0..n) into `out` (activation_bytes(weight_type, n) bytes, ActBlock32 or ActBlock256).
void quantize_activations(DType weight_type, const float* x, int64_t n, void* out);

// sum_j w_j * a_j over one weight row of `n` values (a multiple of the block size) and its quantised
// activations.
using QuantDotFn = float (*)(const uint8_t* weights, const void* activations, int64_t n);
// The kernel for a quantised type at `level`, or nullptr when that level is not compiled in or the
// CPU lacks it.
QuantDotFn quant_dot_kernel(DType weight_type, SimdLevel level);

// The same for one weight row and kQuantDotColumns activation vectors at once (prefill): out[c] = the
// dot product with activations[c]. Each weight block is unpacked once for all of them.
inline constexpr int kQuantDotColumns = 8;
using QuantDotColumnsFn = void (*)(const uint8_t* weights, const void* const* activations, int64_t n, float* out);
// nullptr when the level is not compiled in, the CPU lacks it, or the type has no multi-column kernel
// (K-quants, and the scalar level: callers then use quant_dot_kernel per vector).
QuantDotColumnsFn quant_dot_columns_kernel(DType weight_type, SimdLevel level);

// Unpacks the 8 six-bit scales and mins of a Q4_K / Q5_K super-block from its 12 packed bytes.
void unpack_k_scales(const uint8_t packed[12], uint8_t scales[8], uint8_t mins[8]);

}  // namespace nammkit
