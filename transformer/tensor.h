// Weight storage types and the matrix products of the CPU backend.
//
// Weights stay in the precision the checkpoint stores (F32, F16, BF16 or one of llama.cpp's block
// quantisations, quant.h); activations are f32 between layers and quantised to 8 bits inside the
// products with quantised weights (quant_dot.h).
// A WeightMatrix does not own its bytes: they live in the Model's storage (a memory map or a buffer).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace nammkit {

enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K };
inline constexpr int kNumDTypes = 11;

// Q8_0 as in GGUF: blocks of 32 weights, one f16 scale then 32 int8 (34 bytes per block).
inline constexpr int kQ8BlockSize = 32;
inline constexpr int kQ8BlockBytes = 34;

const char* dtype_name(DType t);
// Bytes taken by `n` consecutive elements of type `t` (n must be a multiple of the block size: 32, or
// 256 for the K-quants; throws otherwise).
size_t dtype_bytes(DType t, int64_t n);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);  // round to nearest even
// Rounds an f32 to the nearest bf16 value and back (what the reference does to attention probabilities).
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// Converts `n` elements of type `t` starting at `src` to f32.
void dequantize(DType t, const void* src, float* dst, int64_t n);

// A row-major [rows][cols] weight matrix as stored: row r holds the weights of output r
// (PyTorch's nn.Linear layout, GGUF's ne[0] = cols).
struct WeightMatrix {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;

  size_t row_bytes() const { return dtype_bytes(dtype, cols); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(); }
  size_t bytes() const { return row_bytes() * static_cast<size_t>(rows); }
};

// How block-quantised weights meet the activations.
enum class Activations : uint8_t {
  Int8,  // llama.cpp's way: activations rounded to 8 bits per block, integer dot products (fast)
  F32,   // each weight block dequantised to f32 and multiplied in f32 (exact to f32 rounding; slower)
};

// out[t][r] = sum_c x[t][c] * W[r][c] for t < n_tokens: a linear layer without bias.
// x is [n_tokens][W.cols], out is [n_tokens][W.rows], both row-major f32.
// Output rows are split across TBB workers; each worker converts its block of weights once.
// `activations` matters only for block-quantised W.
void matmul(const WeightMatrix& W, const float* x, int n_tokens, float* out,
            Activations activations = Activations::Int8);

// One sequence's rows in a batched matmul: x [n_tokens][W.cols] -> out [n_tokens][W.rows].
struct MatmulSegment {
  const float* x = nullptr;
  int n_tokens = 0;
  float* out = nullptr;
};

// matmul() for several sequences at once, reading W once for all of them: each block of W's rows is
// applied to every segment while it is in cache (decode of B sequences is memory-bound, so this is
// close to B times faster for large weights). Every segment's result is bit-identical to
// matmul(W, s.x, s.n_tokens, s.out, activations): the per-segment arithmetic is the same code.
void matmul_segments(const WeightMatrix& W, std::span<const MatmulSegment> segments,
                     Activations activations = Activations::Int8);

}  // namespace nammkit
