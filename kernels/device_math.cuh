// Device helpers shared by the kernels (.cu files only): reading KV elements as float and warp-wide
// reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace nammkit::kernels::detail {

// KV storage types: float, or the raw bits of an f16 / bf16 value.
struct F16Bits {
  uint16_t bits;
};
struct BF16Bits {
  uint16_t bits;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(F16Bits x) { return __half2float(__ushort_as_half(x.bits)); }
__device__ __forceinline__ float to_float(BF16Bits x) { return __bfloat162float(__ushort_as_bfloat16(x.bits)); }

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

}  // namespace nammkit::kernels::detail
