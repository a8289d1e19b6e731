// llama.cpp's block quantisation formats (transformer/quant.h, quant_dot.h):
//  - dequantisation and quantisation bit-exact against the `gguf` PyPI package on random blocks
//    (tests/fixtures/quant_reference.json, made by tools/reference/quant_fixtures.py);
//  - every dot kernel (scalar, AVX2, AVX-512 where the CPU has them) against a float64 reference,
//    within the bound the activation rounding allows, and the integer arithmetic exactly;
//  - matmul on quantised matrices, and a tiny model written and read back in every writable type.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "transformer/backend.h"
#include "transformer/gguf_writer.h"
#include "transformer/loader.h"
#include "transformer/quant.h"
#include "transformer/quant_dot.h"
#include "transformer/tensor.h"

namespace nammkit {
namespace {

using nlohmann::json;

const std::vector<DType> kQuantTypes = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                        DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

const json& reference() {
  static const json j = [] {
    const std::string path = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/quant_reference.json";
    std::ifstream in(path);
    if (!in) fail(path, "missing (make it with tools/reference/quant_fixtures.py)");
    return json::parse(in);
  }();
  return j;
}

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::vector<float> from_bits(const json& bits) {
  std::vector<float> out;
  for (const json& b : bits) out.push_back(std::bit_cast<float>(b.get<uint32_t>()));
  return out;
}

std::vector<SimdLevel> available_levels() {
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512}) {
    if (quant_dot_kernel(DType::Q4_0, l) != nullptr) levels.push_back(l);
  }
  return levels;
}

TEST(Quant, BlockSizesMatchGgml) {
  for (DType t : kQuantTypes) {
    const json& r = reference()["types"][dtype_name(t)];
    EXPECT_EQ(dtype_block_size(t), r["block_size"].get<int>()) << dtype_name(t);
    EXPECT_EQ(dtype_block_bytes(t), r["block_bytes"].get<int>()) << dtype_name(t);
    EXPECT_TRUE(is_quantized(t));
  }
  EXPECT_EQ(dtype_bytes(DType::Q4_K, 512), 288u);
  EXPECT_THROW(dtype_bytes(DType::Q4_K, 576), Error);  // not a multiple of 256
  EXPECT_THROW(dtype_bytes(DType::Q4_1, 33), Error);
  EXPECT_FALSE(is_quantized(DType::F16));
}

TEST(Quant, DequantizationIsBitExactAgainstTheGgufPackage) {
  for (DType t : kQuantTypes) {
    const json& r = reference()["types"][dtype_name(t)];
    const std::vector<uint8_t> blocks = from_hex(r["blocks_hex"]);
    const std::vector<float> expected = from_bits(r["dequant_bits"]);
    std::vector<float> got(expected.size());
    dequantize(t, blocks.data(), got.data(), static_cast<int64_t>(got.size()));
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(expected[i]) && ++mismatches <= 3) {
        ADD_FAILURE() << dtype_name(t) << " value " << i << ": " << got[i] << " != " << expected[i];
      }
    }
    EXPECT_EQ(mismatches, 0) << dtype_name(t) << ": " << got.size() << " values";
  }
}

TEST(Quant, QuantizationIsBitExactAgainstTheGgufPackage) {
  for (DType t : kQuantTypes) {
    const json& r = reference()["types"][dtype_name(t)];
    if (!r.contains("quant_hex")) {
      EXPECT_FALSE(can_quantize(t)) << dtype_name(t);
      std::vector<uint8_t> out(dtype_bytes(t, 256));
      std::vector<float> x(256, 1.0f);
      EXPECT_THROW(quantize_row(t, x.data(), out.data(), 256), Error);
      continue;
    }
    ASSERT_TRUE(can_quantize(t)) << dtype_name(t);
    const std::vector<float> x = from_bits(r["quant_input_bits"]);
    const std::vector<uint8_t> expected = from_hex(r["quant_hex"]);
    std::vector<uint8_t> got(dtype_bytes(t, static_cast<int64_t>(x.size())));
    quantize_row(t, x.data(), got.data(), static_cast<int64_t>(x.size()));
    ASSERT_EQ(got.size(), expected.size()) << dtype_name(t);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], expected[i]) << dtype_name(t) << " byte " << i << " (block " << i / dtype_block_bytes(t) << ")";
    }
  }
}

// Random activations with a spread of magnitudes per block (so block scales differ) and a few zeros.
std::vector<float> random_activations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = normal(rng) * std::exp2(static_cast<float>((i / 32) % 5) - 2.0f);
  x[3] = 0.0f;
  return x;
}

TEST(Quant, DotKernelsAgainstFloat64AtEverySimdLevel) {
  const std::vector<SimdLevel> levels = available_levels();
  ASSERT_FALSE(levels.empty());
  for (DType t : kQuantTypes) {
    const json& r = reference()["types"][dtype_name(t)];
    const std::vector<uint8_t> w = from_hex(r["blocks_hex"]);
    const std::vector<float> wf = from_bits(r["dequant_bits"]);
    const auto n = static_cast<int64_t>(wf.size());
    for (uint32_t seed : {1u, 2u, 3u}) {
      const std::vector<float> x = random_activations(n, seed);
      std::vector<uint8_t> act(activation_bytes(t, n));
      quantize_activations(t, x.data(), n, act.data());
      // Dequantised activations, their per-value rounding bound d/2, and the float64 references.
      const int ab = dtype_block_size(t) == 256 ? 256 : 32;
      double exact = 0, integer_exact = 0, bound = 0, magnitude = 0;
      for (int64_t i = 0; i < n; ++i) {
        double a, d;
        if (ab == 256) {
          const auto* blocks = reinterpret_cast<const ActBlock256*>(act.data());
          d = blocks[i / 256].d, a = d * blocks[i / 256].q[i % 256];
        } else {
          const auto* blocks = reinterpret_cast<const ActBlock32*>(act.data());
          d = blocks[i / 32].d, a = d * blocks[i / 32].q[i % 32];
        }
        ASSERT_LE(std::fabs(a - x[i]), d / 2 * (1 + 1e-6)) << dtype_name(t) << " activation " << i;
        exact += static_cast<double>(wf[i]) * x[i];
        integer_exact += static_cast<double>(wf[i]) * a;
        bound += std::fabs(wf[i]) * d / 2;
        magnitude += std::fabs(static_cast<double>(wf[i]) * a);
      }
      for (SimdLevel level : levels) {
        const QuantDotFn dot = quant_dot_kernel(t, level);
        ASSERT_NE(dot, nullptr) << dtype_name(t) << " " << simd_level_name(level);
        const double got = dot(w.data(), act.data(), n);
        // The kernels' integer sums are exact; what remains is f32 rounding of the block sums and of
        // d_w * d_a (an f16 times an f32): a few ulps of the magnitude.
        EXPECT_NEAR(got, integer_exact, 2e-6 * magnitude + 1e-30)
            << dtype_name(t) << " " << simd_level_name(level) << " seed " << seed;
        EXPECT_NEAR(got, exact, bound + 2e-6 * magnitude)
            << dtype_name(t) << " " << simd_level_name(level) << " seed " << seed;
      }
    }
  }
}

// The multi-column kernels (prefill) compute, column by column, exactly what the 1-column kernel does.
TEST(Quant, ColumnKernelsEqualTheOneColumnKernel) {
  int checked = 0;
  for (SimdLevel level : available_levels()) {
    for (DType t : kQuantTypes) {
      const QuantDotColumnsFn dot_columns = quant_dot_columns_kernel(t, level);
      if (dot_columns == nullptr) continue;
      const json& r = reference()["types"][dtype_name(t)];
      const std::vector<uint8_t> w = from_hex(r["blocks_hex"]);
      const auto n = static_cast<int64_t>(from_bits(r["dequant_bits"]).size());
      std::vector<std::vector<uint8_t>> acts(kQuantDotColumns, std::vector<uint8_t>(activation_bytes(t, n)));
      const void* ptrs[kQuantDotColumns];
      for (int c = 0; c < kQuantDotColumns; ++c) {
        const std::vector<float> x = random_activations(n, 100 + c);
        quantize_activations(t, x.data(), n, acts[c].data());
        ptrs[c] = acts[c].data();
      }
      float out[kQuantDotColumns];
      dot_columns(w.data(), ptrs, n, out);
      for (int c = 0; c < kQuantDotColumns; ++c) {
        EXPECT_EQ(out[c], quant_dot_kernel(t, level)(w.data(), ptrs[c], n))
            << dtype_name(t) << " " << simd_level_name(level) << " column " << c;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(Quant, BestSimdLevelIsAvailable) {
  const SimdLevel best = best_simd_level();
  EXPECT_NE(quant_dot_kernel(DType::Q6_K, best), nullptr) << simd_level_name(best);
  std::printf("best SIMD level here: %s\n", simd_level_name(best));
}

// A quantised matrix times 1 and 7 tokens, against float64 of the dequantised weights.
TEST(Quant, MatmulOnQuantizedMatrices) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (DType t : kQuantTypes) {
    const int64_t rows = 40, cols = 512;
    std::vector<float> wf(static_cast<size_t>(rows * cols));
    for (float& v : wf) v = normal(rng) * 0.05f;
    std::vector<uint8_t> bytes(dtype_bytes(t, rows * cols));
    if (can_quantize(t)) {
      quantize_row(t, wf.data(), bytes.data(), rows * cols);
    } else {  // K-quants: random blocks with small f16 scales
      for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng() & 0xff);
      const int bb = dtype_block_bytes(t);
      for (size_t blk = 0; blk < bytes.size() / bb; ++blk) {
        const uint16_t small = f32_to_f16(0.001f * static_cast<float>(1 + blk % 7));
        const size_t d_at = t == DType::Q6_K ? 208 : 0;
        std::memcpy(&bytes[blk * bb + d_at], &small, 2);
        if (t != DType::Q6_K) std::memcpy(&bytes[blk * bb + 2], &small, 2);
      }
    }
    dequantize(t, bytes.data(), wf.data(), rows * cols);
    const WeightMatrix W{t, rows, cols, bytes.data()};
    for (int tokens : {1, 7}) {
      const std::vector<float> x = random_activations(cols * tokens, 11);
      std::vector<float> out(static_cast<size_t>(rows * tokens));
      matmul(W, x.data(), tokens, out.data());
      for (int k = 0; k < tokens; ++k) {
        for (int64_t r = 0; r < rows; ++r) {
          double ref = 0, scale = 0;
          for (int64_t c = 0; c < cols; ++c) {
            ref += static_cast<double>(wf[r * cols + c]) * x[k * cols + c];
            scale += std::fabs(static_cast<double>(wf[r * cols + c]) * x[k * cols + c]);
          }
          // 8-bit activations: relative error ~ 1/254 per value, far less on the sum.
          ASSERT_NEAR(out[k * rows + r], ref, 0.01 * scale) << dtype_name(t) << " token " << k << " row " << r;
        }
      }
    }
  }
}

// The tiny Llama fixture, written in every writable quantised type and read back: the loader keeps
// the type, and the logits stay close to those of the F32 file.
TEST(Quant, TinyModelInEveryWritableTypeRoundTrips) {
  const std::string f32 = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/tiny_llama_f32.gguf";
  const Model src = load_model(f32);
  const std::vector<int32_t> tokens = {510, 37, 80, 99, 12, 200, 5, 61};
  auto logits_of = [&](const Model& m) {
    const std::unique_ptr<Backend> backend = make_cpu_backend(m);
    const std::unique_ptr<InferenceSession> s = backend->new_session(nullptr, SessionOptions{});
    return s->feed(tokens);
  };
  const std::vector<float> ref = logits_of(src);
  const std::string dir = ::testing::TempDir();
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0}) {
    const std::string path = dir + "/tiny_" + dtype_name(t) + ".gguf";
    save_gguf(src, path, t);
    const Model back = load_model(path);
    EXPECT_EQ(back.layers[0].wq.dtype, t);
    EXPECT_EQ(back.layers[1].w_down.dtype, t);
    const std::vector<float> got = logits_of(back);
    double dot = 0, n_ref = 0, n_got = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      dot += static_cast<double>(got[i]) * ref[i];
      n_ref += static_cast<double>(ref[i]) * ref[i];
      n_got += static_cast<double>(got[i]) * got[i];
    }
    const double cosine = dot / std::sqrt(n_ref * n_got);
    std::printf("%s: cosine similarity of the logits to F32's: %.5f\n", dtype_name(t), cosine);
    // Random-normal weights (no structure to preserve) at 4 bits, with 8-bit activations: a noisier
    // but clearly the same function.
    const double floor = t == DType::Q8_0 ? 0.999 : (t == DType::Q5_0 || t == DType::Q5_1) ? 0.97 : 0.95;
    EXPECT_GT(cosine, floor) << dtype_name(t);
    std::filesystem::remove(path);
  }
}

}  // namespace
}  // namespace nammkit
