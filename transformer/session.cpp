// The CPU forward pass (llama2.c's structure, batched over a chunk of tokens) and the policy hook.
#include "transformer/session.h"

#include <immintrin.h>
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

// Softmax over row[0..visible) in place (entries of -inf get 0); row[visible..n) is set to 0.
void softmax_visible(float* row, int visible, int n) {
  Eigen::Map<Eigen::ArrayXf> p(row, visible);  // Eigen's exp is vectorised; std::exp is not
  p = (p - p.maxCoeff()).exp();
  p *= 1.0f / p.sum();
  std::fill(row + visible, row + n, 0.0f);
}

// One new query per head of a group sharing a KV head (decode): scores[h][j] = scale * q_h . k_j for
// the `group` query heads at q (contiguous, d floats each) and the n cached keys. D is the head size
// when it is one of the common ones (compile-time loops), else 0 (any size, plain loops).
template <int D>
void decode_scores(const float* q, int group, const float* keys, int n, int d_runtime, float scale, float* scores) {
  const int d = D > 0 ? D : d_runtime;
  int j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (D > 0 && D % 8 == 0) {
    // 8 keys at a time: the 8 products k_j * q_h (D/8 vectors each) are summed to one vector per key,
    // and three levels of hadd transpose the 8 vectors' sums into one vector of 8 scores.
    for (; j + 8 <= n; j += 8) {
      for (int h = 0; h < group; ++h) {
        const float* qh = q + static_cast<size_t>(h) * D;
        __m256 prod[8];
        for (int k = 0; k < 8; ++k) {
          const float* key = keys + static_cast<size_t>(j + k) * D;
          __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(key), _mm256_loadu_ps(qh));
          for (int i = 8; i < D; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(key + i), _mm256_loadu_ps(qh + i), acc);
          prod[k] = acc;
        }
        const __m256 s01 = _mm256_hadd_ps(prod[0], prod[1]), s23 = _mm256_hadd_ps(prod[2], prod[3]);
        const __m256 s45 = _mm256_hadd_ps(prod[4], prod[5]), s67 = _mm256_hadd_ps(prod[6], prod[7]);
        const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
        const __m256 sums =
            _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
        _mm256_storeu_ps(scores + static_cast<size_t>(h) * n + j, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
      }
    }
  }
#endif
  for (; j < n; ++j) {
    const float* k = keys + static_cast<size_t>(j) * d;
    for (int h = 0; h < group; ++h) {
      const float* qh = q + static_cast<size_t>(h) * d;
      float sum = 0.0f;
      for (int i = 0; i < d; ++i) sum += qh[i] * k[i];
      scores[static_cast<size_t>(h) * n + j] = sum * scale;
    }
  }
}

// out_h = sum_j probs[h][j] * v_j for the group's heads (out contiguous, d floats per head).
template <int D>
void decode_values(const float* probs, int group, const float* values, int n, int d_runtime, float* out) {
  const int d = D > 0 ? D : d_runtime;
  for (int h = 0; h < group; ++h) {
    const float* ph = probs + static_cast<size_t>(h) * n;
    float* oh = out + static_cast<size_t>(h) * d;
#if defined(__AVX2__) && defined(__FMA__)
    if constexpr (D > 0 && D % 8 == 0 && D <= 64) {  // the accumulators stay in registers
      // U independent sets of accumulators over interleaved keys hide the FMA latency when a head
      // is only one or two vectors wide.
      constexpr int V = D / 8, U = V >= 4 ? 1 : 4 / V;
      __m256 acc[U][V];
      for (int u = 0; u < U; ++u)
        for (int i = 0; i < V; ++i) acc[u][i] = _mm256_setzero_ps();
      int j = 0;
      for (; j + U <= n; j += U) {
        for (int u = 0; u < U; ++u) {
          const __m256 pj = _mm256_set1_ps(ph[j + u]);
          const float* v = values + static_cast<size_t>(j + u) * D;
          for (int i = 0; i < V; ++i) acc[u][i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8 * i), acc[u][i]);
        }
      }
      for (; j < n; ++j) {
        const __m256 pj = _mm256_set1_ps(ph[j]);
        const float* v = values + static_cast<size_t>(j) * D;
        for (int i = 0; i < V; ++i) acc[0][i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8 * i), acc[0][i]);
      }
      for (int u = 1; u < U; ++u)
        for (int i = 0; i < V; ++i) acc[0][i] = _mm256_add_ps(acc[0][i], acc[u][i]);
      for (int i = 0; i < V; ++i) _mm256_storeu_ps(oh + 8 * i, acc[0][i]);
      continue;
    }
#endif
    std::fill(oh, oh + d, 0.0f);
    for (int j = 0; j < n; ++j) {
      const float pj = ph[j];
      const float* v = values + static_cast<size_t>(j) * d;
      for (int i = 0; i < d; ++i) oh[i] += pj * v[i];
    }
  }
}

// The decode attention kernels for head size d: compile-time loops for the common sizes.
struct DecodeAttention {
  void (*scores)(const float*, int, const float*, int, int, float, float*);
  void (*values)(const float*, int, const float*, int, int, float*);
};

template <int D>
constexpr DecodeAttention decode_attention_kernels() {
  return {decode_scores<D>, decode_values<D>};
}

DecodeAttention decode_attention_for(int d) {
  switch (d) {
    case 8: return decode_attention_kernels<8>();
    case 16: return decode_attention_kernels<16>();
    case 32: return decode_attention_kernels<32>();
    case 64: return decode_attention_kernels<64>();
    case 128: return decode_attention_kernels<128>();
    default: return decode_attention_kernels<0>();
  }
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
  // Capacity for the model's context (at most 8K tokens) up front: growing by doubling would copy the
  // cache and leave the freed buffers in the heap, which measured as 1.5x the cache in peak RSS.
  // Reserved pages that are never written cost address space, not memory.
  const int reserve = std::clamp(c.max_seq_len, 0, 8192);
  cache_ = KVCache(c.n_layers, c.n_kv_heads, c.head_dim, reserve);
  attn_log_->reset(c.n_layers, c.n_kv_heads);
  position_ = 0;
  stats_ = {};
  last_logits_.assign(c.vocab_size, 0.0f);
  next_log_probs_.clear();
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
  const DecodeAttention decode = decode_attention_for(d);  // the T == 1 kernels for this head size
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
      // Masks the keys a query at absolute position `pos` must not see through the sliding window.
      auto mask_window = [&](float* row, int visible, int64_t pos) {
        if (window <= 0) return;
        const int64_t oldest_visible = pos - window + 1;
        for (int j = 0; j < visible; ++j)
          if (hc.positions[j] < oldest_visible && !hc.memory[j]) row[j] = -INFINITY;
      };
      Eigen::Map<const RowMajor> K(hc.keys.data(), n, d);
      Eigen::Map<const RowMajor> V(hc.values.data(), n, d);
      RowMajor mean_probs;
      if (log_attention) mean_probs = RowMajor::Zero(T, n);
      if (T == 1) {
        // Decode: all query heads of the group in one pass over the keys, then over the values;
        // the scores live in a per-thread buffer (no nested parallelism here, so it is not shared).
        thread_local std::vector<float> probs;
        probs.resize(static_cast<size_t>(group) * n);
        const float* q = s.q.data() + size_t(g) * group * d;
        decode.scores(q, group, hc.keys.data(), n, d, scale, probs.data());
        for (int h = 0; h < group; ++h) {
          float* row = probs.data() + size_t(h) * n;
          mask_window(row, n, position_);
          softmax_visible(row, n, n);
          if (log_attention) {
            Eigen::Map<Eigen::ArrayXf> r(row, n);
            if (options_.attention_bf16)
              mean_probs.row(0).array() += r.unaryExpr([](float p) { return round_to_bf16(p); }).transpose();
            else mean_probs.row(0).array() += r.transpose();
          }
        }
        decode.values(probs.data(), group, hc.values.data(), n, d, s.attn_out.data() + size_t(g) * group * d);
      } else {
        RowMajor scores(T, n);
        for (int hq = g * group; hq < (g + 1) * group; ++hq) {
          ConstStridedMap Q(s.q.data() + size_t(hq) * d, T, d, Eigen::OuterStride<>(c.q_dim()));
          scores.noalias() = (Q * K.transpose()) * scale;
          for (int t = 0; t < T; ++t) {
            // Query t sees every retained old token and the chunk's tokens up to itself.
            const int visible = n_old + t + 1;
            float* row = scores.data() + size_t(t) * n;
            mask_window(row, visible, position_ + t);
            softmax_visible(row, visible, n);
          }
          StridedMap O(s.attn_out.data() + size_t(hq) * d, T, d, Eigen::OuterStride<>(c.q_dim()));
          O.noalias() = scores * V;
          if (log_attention) {
            if (options_.attention_bf16) mean_probs += scores.unaryExpr([](float p) { return round_to_bf16(p); });
            else mean_probs += scores;
          }
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
  if (policy_ && policy_->needs_surprisal()) report_surprisal(tokens, position_);
  position_ += T;

  if (!logits_out) return;
  // Only the rows someone reads go through the (vocabulary-sized) output layer.
  const int first = logits_for_all ? 0 : T - 1;
  const int rows = T - first;
  rms_norm(s.x.data() + size_t(first) * c.dim, model_.final_norm, c.norm_eps, rows, c.dim, s.xn.data());
  matmul(model_.output, s.xn.data(), rows, logits_out, activations);
}

// The chunk's surprisals from its final hidden states (s.x): row t's logits predict token t + 1, and
// the last row's become next_log_probs_ for the next chunk's first token. The output layer runs over
// blocks of rows to bound the [rows][vocab] buffer; the logits_out rows are computed again after
// this, which costs one extra row per chunk when the caller asked for logits too.
void Session::report_surprisal(std::span<const int32_t> tokens, int64_t first_position) {
  const ModelConfig& c = model_.config;
  const int T = static_cast<int>(tokens.size()), vocab = c.vocab_size;
  const Activations activations = options_.float_activations ? Activations::F32 : Activations::Int8;
  Scratch& s = *scratch_;
  std::vector<float> surprisal(T, std::numeric_limits<float>::infinity());
  if (!next_log_probs_.empty()) surprisal[0] = -next_log_probs_[tokens[0]];
  constexpr int kBlock = 32;
  s.logits.resize(size_t(std::min(T, kBlock)) * vocab);
  for (int first = 0; first < T; first += kBlock) {
    const int rows = std::min(kBlock, T - first);
    rms_norm(s.x.data() + size_t(first) * c.dim, model_.final_norm, c.norm_eps, rows, c.dim, s.xn.data());
    matmul(model_.output, s.xn.data(), rows, s.logits.data(), activations);
    for (int r = 0; r < rows; ++r) {
      Eigen::Map<Eigen::ArrayXf> row(s.logits.data() + size_t(r) * vocab, vocab);
      const float max = row.maxCoeff();
      const float log_sum = max + std::log((row - max).exp().sum());
      const int t = first + r;
      if (t + 1 < T) {
        surprisal[t + 1] = -(row[tokens[t + 1]] - log_sum);  // the same arithmetic as surprisal[0]
      } else {
        next_log_probs_.resize(vocab);
        Eigen::Map<Eigen::ArrayXf>(next_log_probs_.data(), vocab) = row - log_sum;
      }
    }
  }
  policy_->observe_surprisal(first_position, surprisal);
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
