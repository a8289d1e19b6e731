// Helpers shared by the benchmarks: JSON-line output, peak RSS, copy bandwidth, synthetic models.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "transformer/gguf_writer.h"
#include "transformer/model.h"

namespace nammkit::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux reports KiB
}

inline void emit(const nlohmann::json& line) {
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

// Sustained copy bandwidth in bytes/s over buffers far larger than the caches, counting bytes read
// plus bytes written as STREAM's "copy" does. Measured in a child process so its 1 GiB of buffers
// does not show up in this process's peak RSS.
inline double copy_bandwidth_bytes_per_s() {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  const pid_t child = fork();
  if (child == 0) {
    const size_t n = size_t(512) << 20;
    std::vector<char> a(n, 1), b(n, 0);
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const double t0 = now_seconds();
      std::memcpy(b.data(), a.data(), n);
      best = std::max(best, 2.0 * n / (now_seconds() - t0));
    }
    (void)!write(fds[1], &best, sizeof best);
    _exit(0);
  }
  double best = 0;
  (void)!read(fds[0], &best, sizeof best);
  close(fds[0]);
  close(fds[1]);
  waitpid(child, nullptr, 0);
  return best;
}

// A Llama-shaped model with random weights of the given storage type, for cost benchmarks only.
inline Model synthetic_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, DType type,
                             uint32_t seed = 1) {
  Model m;
  ModelConfig& c = m.config;
  c.name = "synthetic-" + std::to_string(dim) + "x" + std::to_string(layers) + "-" + dtype_name(type);
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.max_seq_len = 32768;
  m.format = "synthetic";
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  auto matrix = [&](int64_t rows, int64_t cols) {
    std::vector<float> f(size_t(rows * cols));
    for (float& v : f) v = normal(rng);
    auto bytes = std::make_shared<std::string>(encode_f32(f.data(), rows * cols, type));
    m.storage.push_back(bytes);
    return WeightMatrix{type, rows, cols, bytes->data()};
  };
  m.token_embedding = matrix(vocab, dim);
  m.output = matrix(vocab, dim);
  for (int l = 0; l < layers; ++l) {
    LayerWeights L;
    L.attn_norm.assign(dim, 1.0f);
    L.ffn_norm.assign(dim, 1.0f);
    L.wq = matrix(c.q_dim(), dim);
    L.wk = matrix(c.kv_dim(), dim);
    L.wv = matrix(c.kv_dim(), dim);
    L.wo = matrix(dim, c.q_dim());
    L.w_gate = matrix(hidden, dim);
    L.w_up = matrix(hidden, dim);
    L.w_down = matrix(dim, hidden);
    m.layers.push_back(std::move(L));
  }
  m.final_norm.assign(dim, 1.0f);
  return m;
}

}  // namespace nammkit::bench
