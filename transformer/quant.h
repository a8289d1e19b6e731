// llama.cpp's block-quantised weight formats: their byte layouts, dequantisation and quantisation.
//
// A quantised row is a sequence of blocks; each block holds `block_size` weights as small integers
// plus one or two f16 scales. The layouts are GGML's (ggml-common.h), bit for bit, so GGUF files from
// llama.cpp load as they are. Values (q = the stored integer of one weight):
//
//   type  block bytes  layout (in order)                                  value
//   Q4_0    32    18   d f16, qs[16] (nibbles: low = weights 0..15,       d * (q - 8)
//                      high = weights 16..31)
//   Q4_1    32    20   d f16, m f16, qs[16]                               d * q + m
//   Q5_0    32    22   d f16, qh u32 (bit j = 5th bit of weight j), qs[16] d * (q - 16)
//   Q5_1    32    24   d f16, m f16, qh u32, qs[16]                       d * q + m
//   Q8_0    32    34   d f16, qs[32] int8                                 d * q
//   Q4_K   256   144   d f16, dmin f16, scales[12] (8 six-bit scales sc_j (d * sc_j) * q - (dmin * m_j)
//                      and mins m_j), qs[128]: per 64 weights 32 bytes,
//                      low nibbles = sub-block 2c, high = 2c+1
//   Q5_K   256   176   as Q4_K, then qh[32] before qs: bit j of qh[l] is  (d * sc_j) * q - (dmin * m_j)
//                      the 5th bit of weight l of sub-block j
//   Q6_K   256   210   ql[128], qh[64], scales[16] int8, d f16; per 128   (d * sc_g) * (q - 32), g = one
//                      weights: 4 bits from ql, 2 from qh                 of 16 groups of 16 weights
//
// The arithmetic order of each formula (which product is rounded first) is the reference's (ggml's C
// code and the `gguf` Python package agree), so dequantisation is bit-exact; quant.cpp is compiled
// without FMA contraction for that reason.
#pragma once
#include <cstdint>

#include "transformer/tensor.h"

namespace nammkit {

// Weights per block and bytes per block of a quantised type (1 and the element size for F32/F16/BF16).
int dtype_block_size(DType t);
int dtype_block_bytes(DType t);
bool is_quantized(DType t);
// Types quantize_row() can write (the K-quants need llama.cpp's iterative scale search: read only).
bool can_quantize(DType t);

// The 32 stored integers of one block of a 32-weight type (Q4_0 .. Q8_0; before the offset o of
// Q4_0 / Q5_0), its scale d and its min m (0 for the types without one).
void unpack_block32(DType t, const uint8_t* block, int q[32], float& d, float& m);

// Dequantises `n` weights (a multiple of the block size) stored as `t` at `src`.
void dequantize_blocks(DType t, const uint8_t* src, float* dst, int64_t n);

// Quantises `n` floats (a multiple of the block size) into `dst` (dtype_bytes(t, n) bytes) with the
// reference rounding of ggml's quantize_row_*_ref: Q4_0 / Q5_0 take d = (the value of largest
// magnitude) / -8 (-16); Q4_1 / Q5_1 take d = (max - min) / 15 (31) and m = min; Q8_0 d = amax / 127.
// Throws for a type can_quantize() rejects.
void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n);

}  // namespace nammkit
