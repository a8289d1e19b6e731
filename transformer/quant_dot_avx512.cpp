// The AVX-512 dot kernels (quant_dot.h): quant_dot_x86.inc with u8 x s8 products from VNNI vpdpbusd on
// 256-bit vectors (AVX512-VL), which sums 4 products into int32 in one instruction, without the int16
// step. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni (transformer/CMakeLists.txt);
// returns no kernels when the compiler lacks them.
#include "transformer/quant_dot.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#include <cstring>

#include "transformer/quant.h"

namespace nammkit {
namespace {

inline __m256i mul_sum_u8s8(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }

#include "transformer/quant_dot_x86.inc"

}  // namespace

QuantDotFn quant_dot_kernel_avx512(DType weight_type) { return kernel_for(weight_type); }
QuantDotColumnsFn quant_dot_columns_kernel_avx512(DType weight_type) { return columns_kernel_for(weight_type); }

}  // namespace nammkit
#else
namespace nammkit {
QuantDotFn quant_dot_kernel_avx512(DType) { return nullptr; }
QuantDotColumnsFn quant_dot_columns_kernel_avx512(DType) { return nullptr; }
}  // namespace nammkit
#endif
