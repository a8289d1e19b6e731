// matmul(): the linear layers of the CPU backend.
//
// Output rows are computed in fixed blocks (for_row_blocks) on TBB workers. F32 blocks go straight to
// Eigen. F16 / BF16 with a single token (decode) use fused dot kernels that read the stored bytes once
// (decode is memory-bound, so converting to a buffer first would double the traffic); several tokens
// (prefill) convert the block once into a per-thread f32 tile and use an Eigen GEMM, which amortises the
// conversion over the tokens. Block-quantised weights use integer dot products with quantised
// activations (quant_dot.h), for one token and for many.
#include <immintrin.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "transformer/quant.h"
#include "transformer/quant_dot.h"
#include "transformer/tensor.h"

namespace nammkit {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatMap = Eigen::Map<const RowMajor>;
using OutMap = Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>;

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}
#endif

float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i))),
                           _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 16))),
                           _mm512_loadu_ps(x + i + 16), acc1);
  }
  sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 8)));
    acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1);
  }
  sum = hsum(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) sum += f16_to_f32(w[i]) * x[i];
  return sum;
}

float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256i wi = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    __m256 wf = _mm256_castsi256_ps(_mm256_slli_epi32(wi, 16));
    acc = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + i), acc);
  }
  sum = hsum(acc);
#endif
  for (; i < n; ++i) sum += bf16_to_f32(w[i]) * x[i];
  return sum;
}

// One row of an F16 or BF16 matrix times x (the other types have kernels of their own).
float dot_half(const WeightMatrix& W, int64_t r, const float* x) {
  const auto* w = reinterpret_cast<const uint16_t*>(W.row(r));
  return W.dtype == DType::F16 ? dot_f16(w, x, W.cols) : dot_bf16(w, x, W.cols);
}

// out[r] = W[r] . x for nb rows of an f32 matrix: the decode step of f32 models. Four rows share each
// load of x, and the row tail is a masked load, so small models (stories260K: rows of 64 and 172)
// spend their time in FMAs rather than in a generic GEMV's set-up.
void gemv_f32(const float* w, int64_t cols, const float* x, float* out, int64_t nb) {
  int64_t r = 0;
#if defined(__AVX512F__)
  const int64_t full = cols / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (cols - full)) - 1u);
  for (; r + 4 <= nb; r += 4) {
    const float* w0 = w + r * cols;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t c = 0;
    for (; c < full; c += 16) {
      const __m512 xv = _mm512_loadu_ps(x + c);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + c), xv, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + cols + c), xv, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + 2 * cols + c), xv, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + 3 * cols + c), xv, a3);
    }
    if (tail != 0) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, x + c);
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + c), xv, a0);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + cols + c), xv, a1);
      a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + 2 * cols + c), xv, a2);
      a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + 3 * cols + c), xv, a3);
    }
    out[r] = _mm512_reduce_add_ps(a0);
    out[r + 1] = _mm512_reduce_add_ps(a1);
    out[r + 2] = _mm512_reduce_add_ps(a2);
    out[r + 3] = _mm512_reduce_add_ps(a3);
  }
#endif
  for (; r < nb; ++r) {
    const float* wr = w + r * cols;
    int64_t c = 0;
    float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_setzero_ps();
    for (; c + 8 <= cols; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(wr + c), _mm256_loadu_ps(x + c), acc);
    sum = hsum(acc);
#endif
    for (; c < cols; ++c) sum += wr[c] * x[c];
    out[r] = sum;
  }
}

// Output rows are computed in fixed blocks of kRowBlock rows. Eigen's GEMM rounds a row differently
// depending on where it falls in the block it is handed (the last rows of a block take other kernel
// paths, which sum in another order), so blocks that depended on the token count or on TBB's
// scheduling would make a row's value depend on them too: results could change from run to run, and a
// sequence batched with others (matmul_segments) would not match itself alone. 64 rows = 24 + 24 + 16
// (AVX2) or 48 + 16 (AVX-512): whole packets, so only a matrix's own last rows take a tail path.
constexpr int64_t kRowBlock = 64;

// Runs rows(r_begin, r_end) for every fixed block of W's output rows: on this thread below ~64K
// multiply-adds (the task overhead would outweigh a second core), else as TBB tasks of whole blocks,
// at least ~64K multiply-adds each.
template <class Rows>
void for_row_blocks(const WeightMatrix& W, int n_tokens, const Rows& rows) {
  const int64_t work = W.rows * W.cols * n_tokens;
  const int64_t blocks = (W.rows + kRowBlock - 1) / kRowBlock;
  auto run_blocks = [&](int64_t b_begin, int64_t b_end) {
    for (int64_t b = b_begin; b < b_end; ++b) rows(b * kRowBlock, std::min(W.rows, (b + 1) * kRowBlock));
  };
  if (work < (1 << 16)) {
    run_blocks(0, blocks);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, kRowBlock * W.cols * n_tokens));
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, blocks, grain),
                    [&](const tbb::blocked_range<int64_t>& range) { run_blocks(range.begin(), range.end()); });
}

// Computes out[:, r0:r0+nb] for one block of output rows.
void matmul_block(const WeightMatrix& W, const float* x, int n_tokens, float* out, int64_t r0, int64_t nb) {
  const int64_t cols = W.cols;
  Eigen::Map<const RowMajor> X(x, n_tokens, cols);
  OutMap Y(out + r0, n_tokens, nb, Eigen::OuterStride<>(W.rows));
  if (W.dtype == DType::F32 && n_tokens == 1) {
    gemv_f32(reinterpret_cast<const float*>(W.row(r0)), cols, x, out + r0, nb);
    return;
  }
  if (W.dtype == DType::F32) {
    ConstMatMap Wb(reinterpret_cast<const float*>(W.row(r0)), nb, cols);
    Y.noalias() = X * Wb.transpose();
    return;
  }
  if (n_tokens == 1 && (W.dtype == DType::F16 || W.dtype == DType::BF16)) {
    for (int64_t r = 0; r < nb; ++r) out[r0 + r] = dot_half(W, r0 + r, x);
    return;
  }
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(nb * cols));
  dequantize(W.dtype, W.row(r0), tile.data(), nb * cols);
  ConstMatMap Wb(tile.data(), nb, cols);
  Y.noalias() = X * Wb.transpose();
}

// Quantised weights: the activations are quantised once (all segments' tokens), then every (row, token)
// pair is one integer dot product (quant_dot.h). Rows are the outer loop of a block, so the block's
// weights (16 rows of a 576-wide Q4_1 matrix: 6 KB) stay in L1 while every token of every segment passes
// over them. Tokens are grouped per segment exactly as a call with that segment alone would group them.
void matmul_quantized(const WeightMatrix& W, std::span<const MatmulSegment> segments, int total_tokens) {
  const QuantDotFn dot = quant_dot_kernel(W.dtype, best_simd_level());
  const size_t act_row = activation_bytes(W.dtype, W.cols);
  // Not thread_local: while this thread waits in parallel_for below, TBB may run another session's
  // matmul on it. A decode step fits the stack buffer; prefill allocates once per call.
  alignas(64) uint8_t stack_buffer[16384];
  std::vector<uint8_t> heap_buffer;
  const size_t need = act_row * static_cast<size_t>(total_tokens);
  uint8_t* act = stack_buffer;
  if (need > sizeof(stack_buffer)) {
    heap_buffer.resize(need);
    act = heap_buffer.data();
  }
  // The segments' activation rows, one after another in segment order.
  uint8_t* next = act;
  for (const MatmulSegment& segment : segments)
    for (int t = 0; t < segment.n_tokens; ++t, next += act_row)
      quantize_activations(W.dtype, segment.x + static_cast<int64_t>(t) * W.cols, W.cols, next);
  const auto* weights = static_cast<const uint8_t*>(W.data);
  const size_t row_bytes = W.row_bytes();
  const QuantDotColumnsFn dot_columns = quant_dot_columns_kernel(W.dtype, best_simd_level());
  auto rows = [&](int64_t r_begin, int64_t r_end) {
    for (int64_t r0 = r_begin; r0 < r_end; r0 += 16) {
      const int64_t r1 = std::min(r_end, r0 + 16);
      const uint8_t* a = act;  // this segment's first activation row
      for (const MatmulSegment& segment : segments) {
        float* out = segment.out;
        const int n_tokens = segment.n_tokens;
        int t = 0;
        constexpr int kCols = kQuantDotColumns;  // tokens per pass over a weight row
        for (; dot_columns != nullptr && t + kCols <= n_tokens; t += kCols) {
          const void* xs[kCols];
          for (int c = 0; c < kCols; ++c) xs[c] = a + (t + c) * act_row;
          for (int64_t r = r0; r < r1; ++r) {
            float os[kCols];
            dot_columns(weights + r * row_bytes, xs, W.cols, os);
            for (int c = 0; c < kCols; ++c) out[static_cast<int64_t>(t + c) * W.rows + r] = os[c];
          }
        }
        for (; t < n_tokens; ++t) {
          float* o = out + static_cast<int64_t>(t) * W.rows;
          for (int64_t r = r0; r < r1; ++r) o[r] = dot(weights + r * row_bytes, a + t * act_row, W.cols);
        }
        a += static_cast<size_t>(n_tokens) * act_row;
      }
    }
  };
  for_row_blocks(W, total_tokens, rows);
}

}  // namespace

void matmul_segments(const WeightMatrix& W, std::span<const MatmulSegment> segments, Activations activations) {
  int total_tokens = 0;
  for (const MatmulSegment& segment : segments) total_tokens += segment.n_tokens;
  if (total_tokens == 0) return;
  if (is_quantized(W.dtype) && activations == Activations::Int8) {
    matmul_quantized(W, segments, total_tokens);
    return;
  }
  for_row_blocks(W, total_tokens, [&](int64_t r_begin, int64_t r_end) {
    for (const MatmulSegment& s : segments)
      if (s.n_tokens > 0) matmul_block(W, s.x, s.n_tokens, s.out, r_begin, r_end - r_begin);
  });
}

void matmul(const WeightMatrix& W, const float* x, int n_tokens, float* out, Activations activations) {
  const MatmulSegment segment{x, n_tokens, out};
  matmul_segments(W, std::span<const MatmulSegment>(&segment, 1), activations);
}

}  // namespace nammkit
