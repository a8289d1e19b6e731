// The CPU forward pass (llama2.c's structure, batched over a chunk of tokens) and the policy hook.
#include "transformer/session.h"

#include <tbb/parallel_for.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "transformer/rope.h"

namespace nammkit {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using StridedMap = Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>;
using ConstStridedMap = Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>>;

// x[t] = x[t] / rms(x[t]) * weight, for n_tokens rows of `dim`.
void rms_norm(const float* x, const std::vector<float>& weight, float eps, int n_tokens, int dim, float* out) {
  for (int t = 0; t < n_tokens; ++t) {
    const float* xt = x + size_t(t) * dim;
    float* ot = out + size_t(t) * dim;
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += double(xt[i]) * xt[i];
    const float scale = 1.0f / std::sqrt(float(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) ot[i] = xt[i] * scale * weight[i];
  }
}

void add_bias(float* x, const std::vector<float>& bias, int n_tokens) {
  if (bias.empty()) return;
  const size_t n = bias.size();
  for (int t = 0; t < n_tokens; ++t)
    for (size_t i = 0; i < n; ++i) x[t * n + i] += bias[i];
}

}  // namespace

// Per-session work buffers, sized for the largest chunk.
struct Session::Scratch {
  int capacity = 0;
  std::vector<float> x, xn, q, k, v, attn_out, proj, gate, up, logits;
  std::vector<double> inv_freq;

  void ensure(const ModelConfig& c, int n_tokens) {
    if (n_tokens <= capacity) return;
    capacity = n_tokens;
    const size_t T = size_t(n_tokens);
    x.resize(T * c.dim);
    xn.resize(T * c.dim);
    q.resize(T * c.q_dim());
    k.resize(T * c.kv_dim());
    v.resize(T * c.kv_dim());
    attn_out.resize(T * c.q_dim());
    proj.resize(T * c.dim);
    gate.resize(T * c.hidden_dim);
    up.resize(T * c.hidden_dim);
  }
};

// The attention rows the policy will see at the next update, per (layer, KV head). Between updates
// the cache only grows, so key index j of an early row is still key j at the update.
struct Session::AttentionLog {
  struct Rows {
    std::vector<float> data;      // concatenated rows, each as long as the cache was then
    std::vector<size_t> offsets;  // start of each row in data
  };
  std::vector<Rows> heads;               // [layer * n_kv + kv_head]
  std::vector<int32_t> query_positions;  // absolute positions of the logged queries

  void reset(int n_layers, int n_kv) {
    heads.assign(size_t(n_layers) * n_kv, Rows{});
    query_positions.clear();
  }
};

Session::Session(const Model& model, MemoryPolicy* policy, SessionOptions options)
    : model_(model),
      policy_(policy),
      options_(options),
      scratch_(std::make_shared<Scratch>()),
      attn_log_(std::make_shared<AttentionLog>()) {
  if (options_.prefill_chunk < 1) fail("session options", "prefill_chunk must be >= 1");
  if (options_.update_interval < 1) fail("session options", "update_interval must be >= 1");
  scratch_->inv_freq = rope_inverse_frequencies(model_.config);
  reset();
}

void Session::reset() {
  const ModelConfig& c = model_.config;
  cache_ = KVCache(c.n_layers, c.n_kv_heads, c.head_dim);
  attn_log_->reset(c.n_layers, c.n_kv_heads);
  position_ = 0;
  stats_ = {};
  last_logits_.assign(c.vocab_size, 0.0f);
  if (policy_) policy_->begin_sequence(c);
}

std::vector<ChunkSpan> plan_chunks(int64_t position, size_t n_tokens, const SessionOptions& options) {
  std::vector<ChunkSpan> plan;
  size_t done = 0;
  while (done < n_tokens) {
    const int64_t to_chunk = options.prefill_chunk - position % options.prefill_chunk;
    const int64_t to_update = options.update_interval - position % options.update_interval;
    const size_t n = std::min<size_t>({n_tokens - done, size_t(to_chunk), size_t(to_update)});
    position += int64_t(n);
    plan.push_back({done, n, position % options.update_interval == 0});
    done += n;
  }
  return plan;
}

void check_token_ids(std::span<const int32_t> tokens, int vocab_size, const std::string& where) {
  for (int32_t id : tokens)
    if (id < 0 || id >= vocab_size)
      fail(where, "token id " + std::to_string(id) + " outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
}

const std::vector<float>& Session::feed(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
  const int vocab = model_.config.vocab_size;
  check_token_ids(tokens, vocab, "session");
  if (all_logits) all_logits->assign(tokens.size() * size_t(vocab), 0.0f);
  for (const ChunkSpan& chunk : plan_chunks(position_, tokens.size(), options_)) {
    const bool last = chunk.begin + chunk.size == tokens.size();
    float* out = all_logits ? all_logits->data() + chunk.begin * vocab : (last ? last_logits_.data() : nullptr);
    forward_chunk(tokens.subspan(chunk.begin, chunk.size), out, all_logits != nullptr);
    if (policy_ && chunk.ends_at_update) run_policy();
  }
  if (all_logits && !tokens.empty())
    std::copy_n(all_logits->data() + (tokens.size() - 1) * vocab, vocab, last_logits_.data());
  return last_logits_;
}

void Session::forward_chunk(std::span<const int32_t> tokens, float* logits_out, bool logits_for_all) {
  const ModelConfig& c = model_.config;
  const int T = static_cast<int>(tokens.size());
  const int d = c.head_dim, group = c.group_size();
  Scratch& s = *scratch_;
  s.ensure(c, T);
  const bool log_attention = policy_ && policy_->needs_attention();
  const Activations activations = options_.float_activations ? Activations::F32 : Activations::Int8;

  for (int t = 0; t < T; ++t) {
    const WeightMatrix& E = model_.token_embedding;
    dequantize(E.dtype, E.row(tokens[t]), s.x.data() + size_t(t) * c.dim, c.dim);
  }
  for (int t = 0; t < T; ++t) attn_log_->query_positions.push_back(int32_t(position_ + t));

  const float scale = 1.0f / std::sqrt(float(d));
  const int window = options_.sliding_window;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = model_.layers[l];
    rms_norm(s.x.data(), L.attn_norm, c.norm_eps, T, c.dim, s.xn.data());
    matmul(L.wq, s.xn.data(), T, s.q.data(), activations);
    matmul(L.wk, s.xn.data(), T, s.k.data(), activations);
    matmul(L.wv, s.xn.data(), T, s.v.data(), activations);
    add_bias(s.q.data(), L.bq, T);
    add_bias(s.k.data(), L.bk, T);
    add_bias(s.v.data(), L.bv, T);
    if (projection_observer_) projection_observer_(l, T, position_, s.q.data(), s.k.data(), s.v.data());
    for (int t = 0; t < T; ++t) {
      apply_rope(s.q.data() + size_t(t) * c.q_dim(), c.n_heads, d, position_ + t, s.inv_freq, c.rope_style);
      apply_rope(s.k.data() + size_t(t) * c.kv_dim(), c.n_kv_heads, d, position_ + t, s.inv_freq, c.rope_style);
    }

    // Attention, one task per KV head (its query heads share the keys and the attention log row).
    tbb::parallel_for(0, c.n_kv_heads, [&](int g) {
      for (int t = 0; t < T; ++t)
        cache_.append(l, g, s.k.data() + size_t(t) * c.kv_dim() + g * d, s.v.data() + size_t(t) * c.kv_dim() + g * d,
                      int32_t(position_ + t));
      const HeadCache& hc = cache_.head(l, g);
      const int n = hc.len, n_old = n - T;
      Eigen::Map<const RowMajor> K(hc.keys.data(), n, d);
      Eigen::Map<const RowMajor> V(hc.values.data(), n, d);
      RowMajor scores(T, n);
      RowMajor mean_probs;
      if (log_attention) mean_probs = RowMajor::Zero(T, n);
      for (int hq = g * group; hq < (g + 1) * group; ++hq) {
        ConstStridedMap Q(s.q.data() + size_t(hq) * d, T, d, Eigen::OuterStride<>(c.q_dim()));
        scores.noalias() = (Q * K.transpose()) * scale;
        for (int t = 0; t < T; ++t) {
          // Query t sees every retained old token and the chunk's tokens up to itself.
          const int visible = n_old + t + 1;
          float* row = scores.data() + size_t(t) * n;
          if (window > 0) {
            const int64_t oldest_visible = position_ + t - window + 1;
            for (int j = 0; j < visible; ++j)
              if (hc.positions[j] < oldest_visible && !hc.memory[j]) row[j] = -INFINITY;
          }
          Eigen::Map<Eigen::ArrayXf> p(row, visible);  // Eigen's exp is vectorised; std::exp is not
          p = (p - p.maxCoeff()).exp();
          p *= 1.0f / p.sum();
          std::fill(row + visible, row + n, 0.0f);
        }
        StridedMap O(s.attn_out.data() + size_t(hq) * d, T, d, Eigen::OuterStride<>(c.q_dim()));
        O.noalias() = scores * V;
        if (log_attention) {
          if (options_.attention_bf16) mean_probs += scores.unaryExpr([](float p) { return round_to_bf16(p); });
          else mean_probs += scores;
        }
      }
      if (log_attention) {
        mean_probs /= float(group);
        auto& rows = attn_log_->heads[size_t(l) * c.n_kv_heads + g];
        for (int t = 0; t < T; ++t) {
          const int visible = n_old + t + 1;
          rows.offsets.push_back(rows.data.size());
          const float* src = mean_probs.data() + size_t(t) * n;
          for (int j = 0; j < visible; ++j)
            rows.data.push_back(options_.attention_bf16 ? round_to_bf16(src[j]) : src[j]);
        }
      }
    });

    matmul(L.wo, s.attn_out.data(), T, s.proj.data(), activations);
    for (size_t i = 0; i < size_t(T) * c.dim; ++i) s.x[i] += s.proj[i];

    rms_norm(s.x.data(), L.ffn_norm, c.norm_eps, T, c.dim, s.xn.data());
    matmul(L.w_gate, s.xn.data(), T, s.gate.data(), activations);
    matmul(L.w_up, s.xn.data(), T, s.up.data(), activations);
    for (size_t i = 0; i < size_t(T) * c.hidden_dim; ++i) {
      const float g = s.gate[i];
      s.gate[i] = g / (1.0f + std::exp(-g)) * s.up[i];  // SwiGLU: silu(gate) * up
    }
    matmul(L.w_down, s.gate.data(), T, s.proj.data(), activations);
    for (size_t i = 0; i < size_t(T) * c.dim; ++i) s.x[i] += s.proj[i];
  }
  position_ += T;

  if (!logits_out) return;
  // Only the rows someone reads go through the (vocabulary-sized) output layer.
  const int first = logits_for_all ? 0 : T - 1;
  const int rows = T - first;
  rms_norm(s.x.data() + size_t(first) * c.dim, model_.final_norm, c.norm_eps, rows, c.dim, s.xn.data());
  matmul(model_.output, s.xn.data(), rows, logits_out, activations);
}

void Session::run_policy() {
  const auto start = std::chrono::steady_clock::now();
  const ModelConfig& c = model_.config;
  const bool with_attention = policy_->needs_attention();
  AttentionLog& log = *attn_log_;
  const int n_q = static_cast<int>(log.query_positions.size());
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWindow window;
    window.layer = l;
    window.head_dim = c.head_dim;
    window.n_queries = n_q;
    window.query_positions = log.query_positions.data();
    std::vector<std::vector<float>> dense_heads(c.n_kv_heads);
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const HeadCache& hc = cache_.head(l, g);
      HeadWindow hw;
      hw.n_keys = hc.len;
      hw.keys = hc.keys.data();
      hw.values = hc.values.data();
      hw.positions = hc.positions.data();
      if (with_attention) {
        const auto& rows = log.heads[size_t(l) * c.n_kv_heads + g];
        std::vector<float>& m = dense_heads[g];
        m.assign(size_t(n_q) * hc.len, 0.0f);
        for (int t = 0; t < n_q; ++t) {
          const size_t begin = rows.offsets[t];
          const size_t end = t + 1 < n_q ? rows.offsets[t + 1] : rows.data.size();
          std::copy(rows.data.begin() + begin, rows.data.begin() + end, m.begin() + size_t(t) * hc.len);
        }
        hw.attention = m.data();
      }
      window.heads.push_back(hw);
    }
    KeepLists keep = policy_->update(window);
    if (keep.empty()) continue;
    if (int(keep.size()) != c.n_kv_heads)
      fail("policy " + policy_->name(), "layer " + std::to_string(l) + ": returned " + std::to_string(keep.size()) +
                                            " keep lists for " + std::to_string(c.n_kv_heads) + " KV heads");
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const int before = cache_.head(l, g).len;
      cache_.keep(l, g, keep[g]);
      stats_.tokens_evicted += before - cache_.head(l, g).len;
    }
  }
  if (options_.sliding_window > 0) {
    // What the policy kept outside the window is now (eidetic) memory.
    const int64_t oldest_in_window = position_ - options_.sliding_window;
    for (int l = 0; l < c.n_layers; ++l)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        HeadCache& h = cache_.head(l, g);
        for (int j = 0; j < h.len; ++j)
          if (h.positions[j] < oldest_in_window) h.memory[j] = 1;
      }
  }
  log.reset(c.n_layers, c.n_kv_heads);
  ++stats_.policy_updates;
  stats_.policy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Session::inject(int layer, int kv_head, const float* key, const float* value, int32_t position) {
  const ModelConfig& c = model_.config;
  if (layer < 0 || layer >= c.n_layers || kv_head < 0 || kv_head >= c.n_kv_heads)
    fail("session", "inject: layer " + std::to_string(layer) + " / KV head " + std::to_string(kv_head) +
                        " outside the model (" + std::to_string(c.n_layers) + " layers, " +
                        std::to_string(c.n_kv_heads) + " KV heads)");
  if (!attn_log_->query_positions.empty())
    fail("session", "inject: entries can only be added right after reset() or a policy update");
  cache_.append(layer, kv_head, key, value, position, /*memory=*/true);
}

void Session::set_position(int64_t position) {
  if (position < 0) fail("session", "set_position: negative position");
  position_ = position;
}

}  // namespace nammkit
