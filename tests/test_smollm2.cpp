// SmolLM2-135M-Instruct Q4_1 (fetched by scripts/fetch_models.sh) against Hugging Face transformers,
// which loads the same GGUF and runs its own float64 Llama forward (tests/fixtures/smollm2_logits.json,
// made by tools/reference/smollm2_logits.py). Checks: the loaded configuration, top-1 at every
// position of 5 prompts (one over 4,000 tokens), the logits of the reference's top 40 at 4 positions
// per prompt and the log-partition, and 64 greedy tokens on 3 prompts.
//
// Two arithmetic modes, both tested:
//  - f32 activations (SessionOptions::float_activations): each weight block dequantised and multiplied
//    in f32. Both sides then compute the same function of the same dequantised weights, and only f32
//    vs float64 rounding remains (measured: max |delta logit| 5e-4). Required: top-1 equal at EVERY
//    position, |delta| <= 5e-3 on every checked logit and on log Z, and 64 greedy tokens equal on 3
//    prompts.
//  - 8-bit activations (the default, llama.cpp's arithmetic): the activations are rounded to 8 bits per
//    block of 32 inside every product (211 products deep), |rounding| <= max|x|/254 per value. SwiGLU
//    outputs have outliers, so small entries of a block lose most of their bits; the measured effect on
//    SmolLM2 is 0.26 rms and 1.0 max on logits that span ~40 (f32 mode on the same fixture: 1e-4 rms,
//    which shows it is the activation rounding and not the model). Required: |delta| <= 1.5 on every
//    checked logit and log Z, rms <= 0.4, top-1 equal wherever the reference's top-2 margin exceeds 1.5
//    and at >= 95% of all positions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "core/sha256.h"
#include "shared_model.h"
#include "tests/sanitizers.h"
#include "transformer/backend.h"

namespace nammkit {
namespace {

using nlohmann::json;
using testing::smollm2;
using testing::smollm2_path;

// Under the sanitizers (build-asan, -O1) the 4,442-token prompt would take minutes; the Release build
// checks it, the sanitizer build the four shorter prompts.
#if NAMMKIT_UNDER_ASAN
constexpr size_t kMaxPromptTokens = 1000;
#else
constexpr size_t kMaxPromptTokens = 1 << 20;
#endif

struct Mode {
  const char* name;
  bool float_activations;
  double tolerance;      // on each checked logit and log Z
  double rms;            // on the checked logits
  double min_agreement;  // fraction of positions with the reference's top-1
};
constexpr Mode kF32{"f32 activations", true, 5e-3, 1e-3, 1.0};
constexpr Mode kInt8{"8-bit activations", false, 1.5, 0.4, 0.95};

const json& fixture() {
  static const json j = json::parse(read_file(std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/smollm2_logits.json"));
  return j;
}

const Backend& cpu() {
  static const std::unique_ptr<Backend> backend = make_cpu_backend(smollm2());
  return *backend;
}

TEST(SmolLM2, FileIsTheOneTheFixtureWasMadeFrom) {
  REQUIRE_SMOLLM2();
  EXPECT_EQ(sha256_hex(read_file(smollm2_path())), fixture()["model_sha256"].get<std::string>());
}

TEST(SmolLM2, ConfigFromGgufMetadata) {
  REQUIRE_SMOLLM2();
  const ModelConfig& c = smollm2().config;
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.hidden_dim, 1536);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_seq_len, 8192);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.0f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(smollm2().layers[0].wq.dtype, DType::Q4_1);
  EXPECT_EQ(smollm2().token_embedding.dtype, DType::Q8_0);
  // 4.5-5 bits per weight in memory: the weights stay quantised (Q4_1 = 5 bits, embedding Q8_0 = 8.5).
  EXPECT_LT(smollm2().weight_bytes_per_token(), size_t{100} << 20);
}

struct Agreement {
  int positions = 0, argmax_mismatch = 0, near_tie_flips = 0;
  double worst_logit = 0, worst_lse = 0, sum_sq = 0;
  int entries = 0;
};

SessionOptions options_for(const Mode& mode) {
  SessionOptions o;
  o.float_activations = mode.float_activations;
  return o;
}

void check_prompt(const json& p, const Mode& mode, Agreement& a) {
  const std::vector<int32_t> tokens = p["tokens"].get<std::vector<int32_t>>();
  const std::vector<int32_t> argmax_ref = p["argmax"].get<std::vector<int32_t>>();
  const std::vector<double> margin = p["margin"].get<std::vector<double>>();
  const int V = smollm2().config.vocab_size;
  std::unique_ptr<InferenceSession> s = cpu().new_session(nullptr, options_for(mode));
  std::vector<float> chunk_logits;
  const size_t chunk = 256;  // all-position logits a chunk at a time (4,000 x 49,152 floats would be 786 MB)
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    const size_t end = std::min(tokens.size(), begin + chunk);
    s->feed(std::span<const int32_t>(tokens).subspan(begin, end - begin), &chunk_logits);
    for (size_t pos = begin; pos < end; ++pos) {
      const std::span<const float> row(chunk_logits.data() + (pos - begin) * V, V);
      ++a.positions;
      if (argmax(row) != argmax_ref[pos]) {
        ++a.near_tie_flips;
        if (margin[pos] > mode.tolerance) {
          ++a.argmax_mismatch;
          ADD_FAILURE() << mode.name << ", " << p["name"] << " position " << pos << ": top-1 " << argmax(row)
                        << ", reference " << argmax_ref[pos] << " (reference margin " << margin[pos] << ")";
        }
      }
      for (const json& r : p["rows"]) {
        if (r["position"].get<size_t>() != pos) continue;
        double lse_max = row[0];
        for (float v : row) lse_max = std::max<double>(lse_max, v);
        double z = 0;
        for (float v : row) z += std::exp(v - lse_max);
        const double lse = lse_max + std::log(z);
        a.worst_lse = std::max(a.worst_lse, std::fabs(lse - r["logsumexp"].get<double>()));
        EXPECT_NEAR(lse, r["logsumexp"].get<double>(), mode.tolerance)
            << mode.name << ", " << p["name"] << " position " << pos;
        const auto ids = r["top_ids"].get<std::vector<int32_t>>();
        const auto ref = r["top_logits"].get<std::vector<double>>();
        for (size_t k = 0; k < ids.size(); ++k) {
          const double d = row[ids[k]] - ref[k];
          a.worst_logit = std::max(a.worst_logit, std::fabs(d));
          a.sum_sq += d * d;
          ++a.entries;
          EXPECT_NEAR(row[ids[k]], ref[k], mode.tolerance)
              << mode.name << ", " << p["name"] << " position " << pos << " id " << ids[k];
        }
      }
    }
  }
}

void check_logits(const Mode& mode) {
  Agreement a;
  size_t longest = 0;
  for (const json& p : fixture()["prompts"]) {
    if (p["tokens"].size() > kMaxPromptTokens) continue;
    longest = std::max(longest, p["tokens"].size());
    check_prompt(p, mode, a);
  }
  if (kMaxPromptTokens > 4000) {
    EXPECT_GE(longest, 4000u);
  }
  EXPECT_EQ(a.argmax_mismatch, 0);
  const double rms = std::sqrt(a.sum_sq / std::max(1, a.entries));
  EXPECT_LE(rms, mode.rms);
  EXPECT_GE(1.0 - double(a.near_tie_flips) / a.positions, mode.min_agreement);
  std::printf(
      "%s: %d positions, top-1 differs at %d (reference margin <= %.3g at all of them); %d logits: "
      "max |delta| %.4f, rms %.4f; max |delta log Z| %.4f\n",
      mode.name, a.positions, a.near_tie_flips, mode.tolerance, a.entries, a.worst_logit, rms, a.worst_lse);
}

TEST(SmolLM2, LogitsMatchHuggingFaceWithF32Activations) {
  REQUIRE_SMOLLM2();
  check_logits(kF32);
}

TEST(SmolLM2, LogitsMatchHuggingFaceWith8BitActivations) {
  REQUIRE_SMOLLM2();
  check_logits(kInt8);
}

// f32 mode: exactly the reference's 64 tokens. 8-bit mode: the same tokens up to the first step
// where the reference's top-2 margin is below the mode's tolerance (reported, not required beyond).
TEST(SmolLM2, GreedyTextEqualsHuggingFaceFor64Tokens) {
  REQUIRE_SMOLLM2();
#if NAMMKIT_UNDER_ASAN
  // 430 s under the sanitizers (-O1), a third of their test time; the logits tests above take the same
  // code paths there (the decode steps are the session's single-token path, run by every model's tests).
  GTEST_SKIP() << "SmolLM2's greedy text is checked in the Release build";
#endif
  for (const Mode& mode : {kF32, kInt8}) {
    for (const json& g : fixture()["greedy"]) {
      std::unique_ptr<InferenceSession> s = cpu().new_session(nullptr, options_for(mode));
      GenerateOptions o;
      o.max_new_tokens = 64;
      o.stop_at_eos = false;
      const std::vector<int32_t> prompt = g["prompt"].get<std::vector<int32_t>>();
      const std::vector<int32_t> ref = g["continuation"].get<std::vector<int32_t>>();
      const std::vector<double> margins = g["margins"].get<std::vector<double>>();
      const Generation gen = generate_greedy(*s, prompt, o);
      ASSERT_EQ(gen.tokens.size(), ref.size());
      size_t same = 0;
      while (same < ref.size() && gen.tokens[same] == ref[same]) ++same;
      size_t safe = 0;  // steps before the first reference near-tie (for this mode's tolerance)
      while (safe < margins.size() && margins[safe] > mode.tolerance) ++safe;
      std::printf("%s, %s: first %zu of 64 tokens equal (reference margins above %.3g for the first %zu)\n", mode.name,
                  g["name"].get<std::string>().c_str(), same, mode.tolerance, safe);
      if (mode.float_activations) {
        EXPECT_EQ(gen.tokens, ref) << g["name"];
      } else {
        EXPECT_GE(same, safe) << g["name"];
      }
    }
  }
}

}  // namespace
}  // namespace nammkit
