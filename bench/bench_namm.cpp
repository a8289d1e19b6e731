// NAMM update cost relative to decoding: for each context C, the time of the one NAMM update that
// fires after decoding 512 tokens from C (it scores C + 512 cached tokens in every layer and KV
// head) against the time of decoding those 512 tokens with a plain full cache.
//
// Prints one JSON object per line:
//   {"bench":"namm_update","context":C,"update_ms":...,"decode_512_ms":...,"ratio":...,...}
//
// Model: by default a synthetic Llama-3-8B-shaped model (dim 4096, 32 heads, 8 KV heads, head_dim
// 128, SwiGLU 14336, f32 random weights) with --layers layers (default 1) and a 256-token vocabulary.
// Both costs are per layer, so the ratio of one layer is that of the full 32-layer model, minus the
// LM head (left out here, which makes the ratio conservative). `--model stories260K` runs the shared
// stories260K checkpoint instead, beyond its 512-token training context (RoPE extrapolates
// numerically; only cost is measured) - its layers are so small that the ratio is meaningless for
// real models.
//   bench_namm [--contexts 2048,4096] [--layers 1] [--model synthetic|stories260K]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "namm/namm_policy.h"
#include "transformer/loader.h"
#include "transformer/session.h"

using namespace nammkit;

namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// xorshift64*: fast deterministic weights.
struct Rng {
  uint64_t s;
  float uniform() {  // [-1, 1)
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return static_cast<float>(static_cast<int64_t>((s * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 4503599627370496.0) -
                              1.0);
  }
};

Model synthetic_model(int n_layers) {
  Model m;
  ModelConfig& c = m.config;
  c.name = "synthetic-llama3-8b-shape";
  c.dim = 4096, c.hidden_dim = 14336, c.n_layers = n_layers, c.n_heads = 32, c.n_kv_heads = 8, c.head_dim = 128;
  c.vocab_size = 256, c.max_seq_len = 8192, c.rope_theta = 500000.0f, c.rope_style = RopeStyle::HalfSplit;
  Rng rng{0x1234567};
  auto matrix = [&](int64_t rows, int64_t cols) {
    auto buf = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * cols));
    const float scale = 1.0f / std::sqrt(static_cast<float>(cols));  // keeps activations O(1)
    for (float& x : *buf) x = scale * rng.uniform();
    m.storage.push_back(buf);
    return WeightMatrix{DType::F32, rows, cols, buf->data()};
  };
  m.token_embedding = matrix(c.vocab_size, c.dim);
  m.output = m.token_embedding;
  c.tied_embeddings = true;
  for (int l = 0; l < n_layers; ++l) {
    LayerWeights w;
    w.attn_norm.assign(c.dim, 1.0f);
    w.ffn_norm.assign(c.dim, 1.0f);
    w.wq = matrix(c.q_dim(), c.dim), w.wk = matrix(c.kv_dim(), c.dim), w.wv = matrix(c.kv_dim(), c.dim);
    w.wo = matrix(c.dim, c.q_dim());
    w.w_gate = matrix(c.hidden_dim, c.dim), w.w_up = matrix(c.hidden_dim, c.dim),
    w.w_down = matrix(c.dim, c.hidden_dim);
    m.layers.push_back(std::move(w));
  }
  m.final_norm.assign(c.dim, 1.0f);
  m.path = "(synthetic)";
  m.format = "synthetic";
  m.validate();
  return m;
}

struct Run {
  double decode_ms = 0;  // wall time of the 512 single-token feeds, policy time excluded
  double update_ms = 0;  // policy time during those feeds (the one update at C + 512)
  int64_t updates = 0;
};

Run decode_after_prefill(const Model& model, MemoryPolicy* policy, int context) {
  Session s(model, policy, SessionOptions{.prefill_chunk = 128, .update_interval = 512});
  const int vocab = model.config.vocab_size;
  std::vector<int32_t> prompt(context);
  for (int i = 0; i < context; ++i) prompt[i] = (i * 7919 + 13) % vocab;
  s.feed(prompt);
  const double policy_before = s.stats().policy_seconds;
  const int64_t updates_before = s.stats().policy_updates;
  int32_t next = 1;
  const double t0 = now_ms();
  for (int i = 0; i < 512; ++i) {
    const int32_t one[1] = {next};
    next = argmax(s.feed(one));
  }
  Run r;
  r.update_ms = (s.stats().policy_seconds - policy_before) * 1000.0;
  r.decode_ms = now_ms() - t0 - r.update_ms;
  r.updates = s.stats().policy_updates - updates_before;
  return r;
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<int> contexts = {2048, 4096};
  int layers = 1;
  std::string which = "synthetic";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--contexts" && i + 1 < argc) {
      contexts.clear();
      std::stringstream ss(argv[++i]);
      for (std::string c; std::getline(ss, c, ',');) contexts.push_back(std::stoi(c));
    } else if (a == "--layers" && i + 1 < argc) {
      layers = std::stoi(argv[++i]);
    } else if (a == "--model" && i + 1 < argc) {
      which = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_namm [--contexts 2048,4096] [--layers 1] [--model synthetic|stories260K]\n");
      return 2;
    }
  }
  const Model model = which == "stories260K"
                          ? load_model(std::string(NAMMKIT_SHARED_DIR) + "/models/stories260K/stories260K.bin")
                          : synthetic_model(layers);
  const ModelConfig& c = model.config;
  for (int context : contexts) {
    // Plain decoding: no policy, no attention recorded.
    const Run plain = decode_after_prefill(model, nullptr, context);
    // NAMM with zero parameters: keeps everything, so the cache matches the plain run, and costs
    // exactly what any parameter vector costs at that cache size.
    NammPolicy namm(NammConfig::reference(), std::vector<float>(4172, 0.0f), FeatureNormalizer::identity(17));
    const Run with_namm = decode_after_prefill(model, &namm, context);
    std::printf(
        "{\"bench\":\"namm_update\",\"context\":%d,\"cached_tokens_at_update\":%d,\"update_ms\":%.2f,"
        "\"decode_512_ms\":%.2f,\"ratio\":%.4f,\"decode_512_with_attention_log_ms\":%.2f,\"updates\":%lld,"
        "\"model\":\"%s\",\"layers\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"dim\":%d,\"note\":\"%s\"}\n",
        context, context + 512, with_namm.update_ms, plain.decode_ms, with_namm.update_ms / plain.decode_ms,
        with_namm.decode_ms, static_cast<long long>(with_namm.updates), c.name.c_str(), c.n_layers, c.n_kv_heads,
        c.head_dim, c.dim,
        which == "stories260K" ? "stories260K beyond its 512-token context; tiny layers, ratio not representative"
                               : "synthetic random f32 weights, Llama-3-8B layer shape, LM head excluded");
    std::fflush(stdout);
  }
  return 0;
}
