// The AVX2 dot kernels (quant_dot.h): quant_dot_x86.inc with u8 x s8 products from vpmaddubsw
// (pairs -> saturating int16; no pair of our operands reaches the limit: 2 * 63 * 127 < 32767 and
// 2 * 128 * 127 for Q8_0's |w|) and vpmaddwd (int16 pairs -> int32). Compiled with -mavx2 -mfma -mf16c
// (transformer/CMakeLists.txt); returns no kernels when the compiler lacks them.
#include "transformer/quant_dot.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstring>

#include "transformer/quant.h"

namespace nammkit {
namespace {

inline __m256i mul_sum_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

#include "transformer/quant_dot_x86.inc"

}  // namespace

QuantDotFn quant_dot_kernel_avx2(DType weight_type) { return kernel_for(weight_type); }
QuantDotColumnsFn quant_dot_columns_kernel_avx2(DType weight_type) { return columns_kernel_for(weight_type); }

}  // namespace nammkit
#else
namespace nammkit {
QuantDotFn quant_dot_kernel_avx2(DType) { return nullptr; }
QuantDotColumnsFn quant_dot_columns_kernel_avx2(DType) { return nullptr; }
}  // namespace nammkit
#endif
