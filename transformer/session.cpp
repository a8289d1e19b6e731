// The CPU forward pass (llama2.c's structure, batched over a chunk of tokens, and over the chunks of
// several sessions for a LockstepGroup) and the policy hook.
#include "transformer/session.h"

#include <immintrin.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "transformer/lockstep.h"
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

// fn(r_begin, r_end) over rows [0, n_rows) of row_cost operations each: on this thread when small, else
// as TBB tasks. For row-wise steps (norms, biases, RoPE, activations, residuals), whose results do not
// depend on how the rows are split; they would otherwise leave the other cores idle in a lockstep step
// of many sequences.
template <class Fn>
void for_row_ranges(int n_rows, int64_t row_cost, const Fn& fn) {
  constexpr int64_t kTaskCost = 1 << 15;
  if (int64_t(n_rows) * row_cost < 2 * kTaskCost) {
    fn(0, n_rows);
    return;
  }
  const int grain = int(std::max<int64_t>(1, kTaskCost / std::max<int64_t>(1, row_cost)));
  tbb::parallel_for(tbb::blocked_range<int>(0, n_rows, grain),
                    [&](const tbb::blocked_range<int>& r) { fn(r.begin(), r.end()); });
}

void add_bias(float* x, const std::vector<float>& bias, int n_tokens) {
  if (bias.empty()) return;
  const size_t n = bias.size();
  for (int t = 0; t < n_tokens; ++t)
    for (size_t i = 0; i < n; ++i) x[t * n + i] += bias[i];
}

// x[0] + ... + x[n-1] in an order that depends on n alone: eight running lanes (which the compiler
// vectorises), then the lanes, then the tail. Eigen's vectorised sum starts its packets at the first
// aligned element, so its rounding depends on where the buffer lies in memory: heap buffers of
// different sessions and threads then gave different softmax denominators, and greedy decoding
// drifted between runs of the same seed (seen on SmolLM2 with AVX-512).
float sum_in_fixed_order(const float* x, int n) {
  float lanes[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) lanes[k] += x[i + k];
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; i < n; ++i) sum += x[i];
  return sum;
}

// x[i] = exp(x[i] - shift) for i < n, every element through Eigen's packet exp (vectorised; std::exp is
// not). Eigen's own loops over a buffer of unknown alignment take the scalar std::exp for the elements
// before the first aligned one, which rounds differently: the same row would get other values at
// another address. Here full packets use unaligned loads and the tail goes through a padded packet.
void exp_shifted(float* x, int n, float shift) {
  namespace ei = Eigen::internal;
  using Packet = ei::packet_traits<float>::type;
  constexpr int kWidth = ei::packet_traits<float>::size;
  const Packet s = ei::pset1<Packet>(shift);
  int i = 0;
  for (; i + kWidth <= n; i += kWidth) ei::pstoreu(x + i, ei::pexp(ei::psub(ei::ploadu<Packet>(x + i), s)));
  if (i == n) return;
  float tail[kWidth] = {};
  std::copy(x + i, x + n, tail);
  ei::pstoreu(tail, ei::pexp(ei::psub(ei::ploadu<Packet>(tail), s)));
  std::copy(tail, tail + (n - i), x + i);
}

// Softmax over row[0..visible) in place (entries of -inf get 0); row[visible..n) is set to 0. Every
// step gives the same bits wherever the row lies in memory (the max and the scaling are exact; the exp
// and the sum are done in an address-independent order), so a sequence decodes the same alone, in a
// lockstep batch, or on another thread.
void softmax_visible(float* row, int visible, int n) {
  const float max = Eigen::Map<Eigen::ArrayXf>(row, visible).maxCoeff();
  exp_shifted(row, visible, max);
  const float scale = 1.0f / sum_in_fixed_order(row, visible);
  for (int j = 0; j < visible; ++j) row[j] *= scale;
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
  explicit Scratch(const ModelConfig& c) : inv_freq(rope_inverse_frequencies(c)) {}

  int capacity = 0;
  std::vector<float> x, xn, q, k, v, attn_out, proj, gate, up, logits;
  std::vector<double> inv_freq;
  // forward_jobs' per-step bookkeeping, kept here so that a warm step allocates nothing: each job's
  // first stacked row ([jobs + 1]), every row's position ([rows]), the matmul segments of the dense
  // layers and of the output layer ([jobs]).
  std::vector<int> first_row;
  std::vector<int64_t> row_position;
  std::vector<MatmulSegment> segments, outputs;

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

std::shared_ptr<Session::Scratch> Session::make_scratch(const ModelConfig& config) {
  return std::make_shared<Scratch>(config);
}

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

Session::Session(const Model& model, MemoryPolicy* policy, SessionOptions options, LockstepGroup* group)
    : model_(model),
      policy_(policy),
      options_(options),
      group_(group),
      scratch_(make_scratch(model.config)),
      attn_log_(std::make_shared<AttentionLog>()) {
  if (options_.prefill_chunk < 1) fail("session options", "prefill_chunk must be >= 1");
  if (options_.update_interval < 1) fail("session options", "update_interval must be >= 1");
  reset();
  if (group_) group_->join();
}

Session::~Session() {
  if (group_) group_->leave();
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
  const ChunkJob job{this, tokens, logits_out, logits_for_all};
  if (group_) group_->forward(job);
  else forward_jobs(std::span<const ChunkJob>(&job, 1), *scratch_);
}

void Session::forward_jobs(std::span<const ChunkJob> jobs, Scratch& s) {
  if (jobs.empty()) return;
  const Model& model = jobs[0].session->model_;
  const ModelConfig& c = model.config;
  const Activations activations = jobs[0].session->options_.float_activations ? Activations::F32 : Activations::Int8;
  for (const ChunkJob& job : jobs)
    if (&job.session->model_ != &model || job.session->options_.float_activations != (activations == Activations::F32))
      fail("session", "a batched forward needs one model and one float_activations setting");
  // Job i owns rows [first_row[i], first_row[i + 1]) of every stacked buffer.
  std::vector<int>& first_row = s.first_row;
  first_row.assign(jobs.size() + 1, 0);
  for (size_t i = 0; i < jobs.size(); ++i) first_row[i + 1] = first_row[i] + int(jobs[i].tokens.size());
  const int R = first_row.back();
  s.ensure(c, R);
  // The per-job views of a stacked [R][in_width] input and [R][out_width] output for matmul_segments.
  std::vector<MatmulSegment>& segments = s.segments;
  segments.resize(jobs.size());
  auto segments_of = [&](const float* in, int64_t in_width, float* out, int64_t out_width) {
    for (size_t i = 0; i < jobs.size(); ++i)
      segments[i] = {in + first_row[i] * in_width, int(jobs[i].tokens.size()), out + first_row[i] * out_width};
    return std::span<const MatmulSegment>(segments);
  };

  // Every row's absolute position, for RoPE.
  std::vector<int64_t>& row_position = s.row_position;
  row_position.assign(size_t(R), 0);
  for (size_t i = 0; i < jobs.size(); ++i) {
    Session& session = *jobs[i].session;
    for (size_t t = 0; t < jobs[i].tokens.size(); ++t) {
      const WeightMatrix& E = model.token_embedding;
      dequantize(E.dtype, E.row(jobs[i].tokens[t]), s.x.data() + size_t(first_row[i] + t) * c.dim, c.dim);
      row_position[size_t(first_row[i]) + t] = session.position_ + int64_t(t);
      session.attn_log_->query_positions.push_back(int32_t(session.position_ + int64_t(t)));
    }
  }
  // xn = rms_norm(x) * weight over all rows.
  auto norm_rows = [&](const std::vector<float>& weight) {
    for_row_ranges(R, c.dim, [&](int r0, int r1) {
      rms_norm(s.x.data() + size_t(r0) * c.dim, weight, c.norm_eps, r1 - r0, c.dim, s.xn.data() + size_t(r0) * c.dim);
    });
  };
  // x += proj over all rows (the residual connections).
  auto add_residual = [&] {
    for_row_ranges(R, c.dim, [&](int r0, int r1) {
      for (size_t i = size_t(r0) * c.dim; i < size_t(r1) * c.dim; ++i) s.x[i] += s.proj[i];
    });
  };

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = model.layers[l];
    norm_rows(L.attn_norm);
    matmul_segments(L.wq, segments_of(s.xn.data(), c.dim, s.q.data(), c.q_dim()), activations);
    matmul_segments(L.wk, segments_of(s.xn.data(), c.dim, s.k.data(), c.kv_dim()), activations);
    matmul_segments(L.wv, segments_of(s.xn.data(), c.dim, s.v.data(), c.kv_dim()), activations);
    add_bias(s.q.data(), L.bq, R);
    add_bias(s.k.data(), L.bk, R);
    add_bias(s.v.data(), L.bv, R);
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Session& session = *jobs[i].session;
      if (!session.projection_observer_) continue;
      const size_t row = size_t(first_row[i]);
      session.projection_observer_(l, int(jobs[i].tokens.size()), session.position_, s.q.data() + row * c.q_dim(),
                                   s.k.data() + row * c.kv_dim(), s.v.data() + row * c.kv_dim());
    }
    for_row_ranges(R, c.q_dim() + c.kv_dim(), [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        apply_rope(s.q.data() + size_t(r) * c.q_dim(), c.n_heads, c.head_dim, row_position[size_t(r)], s.inv_freq,
                   c.rope_style);
        apply_rope(s.k.data() + size_t(r) * c.kv_dim(), c.n_kv_heads, c.head_dim, row_position[size_t(r)], s.inv_freq,
                   c.rope_style);
      }
    });
    // Attention, one task per (job, KV head): each job has its own cache; a KV head's query heads
    // share its keys and its attention log row.
    tbb::parallel_for(0, int(jobs.size()) * c.n_kv_heads, [&](int task) {
      const size_t i = size_t(task / c.n_kv_heads);
      const size_t row = size_t(first_row[i]);
      jobs[i].session->attend(l, task % c.n_kv_heads, int(jobs[i].tokens.size()), s.q.data() + row * c.q_dim(),
                              s.k.data() + row * c.kv_dim(), s.v.data() + row * c.kv_dim(),
                              s.attn_out.data() + row * c.q_dim());
    });

    matmul_segments(L.wo, segments_of(s.attn_out.data(), c.q_dim(), s.proj.data(), c.dim), activations);
    add_residual();

    norm_rows(L.ffn_norm);
    matmul_segments(L.w_gate, segments_of(s.xn.data(), c.dim, s.gate.data(), c.hidden_dim), activations);
    matmul_segments(L.w_up, segments_of(s.xn.data(), c.dim, s.up.data(), c.hidden_dim), activations);
    for_row_ranges(R, c.hidden_dim, [&](int r0, int r1) {
      for (size_t i = size_t(r0) * c.hidden_dim; i < size_t(r1) * c.hidden_dim; ++i) {
        const float g = s.gate[i];
        s.gate[i] = g / (1.0f + std::exp(-g)) * s.up[i];  // SwiGLU: silu(gate) * up
      }
    });
    matmul_segments(L.w_down, segments_of(s.gate.data(), c.hidden_dim, s.proj.data(), c.dim), activations);
    add_residual();
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    Session& session = *jobs[i].session;
    if (session.policy_ && session.policy_->needs_surprisal())
      session.report_surprisal(jobs[i].tokens, session.position_, s.x.data() + size_t(first_row[i]) * c.dim, s);
    session.position_ += int64_t(jobs[i].tokens.size());
  }

  // Only the rows someone reads go through the (vocabulary-sized) output layer: all of a job's rows, its
  // last one, or none. They are normed into consecutive rows of s.xn.
  std::vector<MatmulSegment>& outputs = s.outputs;
  outputs.clear();
  int normed = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!jobs[i].logits_out || jobs[i].tokens.empty()) continue;
    const int T = int(jobs[i].tokens.size());
    const int first = jobs[i].logits_for_all ? 0 : T - 1;
    const int rows = T - first;
    float* xn = s.xn.data() + size_t(normed) * c.dim;
    rms_norm(s.x.data() + size_t(first_row[i] + first) * c.dim, model.final_norm, c.norm_eps, rows, c.dim, xn);
    outputs.push_back({xn, rows, jobs[i].logits_out});
    normed += rows;
  }
  matmul_segments(model.output, outputs, activations);
}

// The attention of one job's chunk for one (layer, KV head): appends the chunk's keys and values to the
// cache, writes the group's query heads' outputs, and logs the mean attention rows for the policy.
// q, k, v and attn_out point at the job's first row ([T][q_dim], [T][kv_dim], [T][kv_dim], [T][q_dim]).
void Session::attend(int l, int g, int T, const float* q_rows, const float* k_rows, const float* v_rows,
                     float* attn_out) {
  const ModelConfig& c = model_.config;
  const int d = c.head_dim, group = c.group_size();
  const float scale = 1.0f / std::sqrt(float(d));
  const bool log_attention = policy_ && policy_->needs_attention();
  const int window = options_.sliding_window;
  for (int t = 0; t < T; ++t)
    cache_.append(l, g, k_rows + size_t(t) * c.kv_dim() + g * d, v_rows + size_t(t) * c.kv_dim() + g * d,
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
    // Decode: all query heads of the group in one pass over the keys, then over the values; the
    // scores live in a per-thread buffer (no nested parallelism here, so it is not shared).
    const DecodeAttention decode = decode_attention_for(d);
    thread_local std::vector<float> probs;
    probs.resize(static_cast<size_t>(group) * n);
    decode.scores(q_rows + size_t(g) * group * d, group, hc.keys.data(), n, d, scale, probs.data());
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
    decode.values(probs.data(), group, hc.values.data(), n, d, attn_out + size_t(g) * group * d);
  } else {
    RowMajor scores(T, n);
    for (int hq = g * group; hq < (g + 1) * group; ++hq) {
      ConstStridedMap Q(q_rows + size_t(hq) * d, T, d, Eigen::OuterStride<>(c.q_dim()));
      scores.noalias() = (Q * K.transpose()) * scale;
      for (int t = 0; t < T; ++t) {
        // Query t sees every retained old token and the chunk's tokens up to itself.
        const int visible = n_old + t + 1;
        float* row = scores.data() + size_t(t) * n;
        mask_window(row, visible, position_ + t);
        softmax_visible(row, visible, n);
      }
      StridedMap O(attn_out + size_t(hq) * d, T, d, Eigen::OuterStride<>(c.q_dim()));
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
      for (int j = 0; j < visible; ++j) rows.data.push_back(options_.attention_bf16 ? round_to_bf16(src[j]) : src[j]);
    }
  }
}

// The chunk's surprisals from its final hidden states (`hidden`, [T][dim]): row t's logits predict token t + 1, and
// the last row's become next_log_probs_ for the next chunk's first token. The output layer runs over
// blocks of rows to bound the [rows][vocab] buffer; the logits_out rows are computed again after
// this, which costs one extra row per chunk when the caller asked for logits too.
void Session::report_surprisal(std::span<const int32_t> tokens, int64_t first_position, const float* hidden,
                               Scratch& s) {
  const ModelConfig& c = model_.config;
  const int T = static_cast<int>(tokens.size()), vocab = c.vocab_size;
  const Activations activations = options_.float_activations ? Activations::F32 : Activations::Int8;
  std::vector<float> surprisal(T, std::numeric_limits<float>::infinity());
  if (!next_log_probs_.empty()) surprisal[0] = -next_log_probs_[tokens[0]];
  constexpr int kBlock = 32;
  s.logits.resize(size_t(std::min(T, kBlock)) * vocab);
  std::vector<float> shifted;  // exp(row - max) of one row
  for (int first = 0; first < T; first += kBlock) {
    const int rows = std::min(kBlock, T - first);
    rms_norm(hidden + size_t(first) * c.dim, model_.final_norm, c.norm_eps, rows, c.dim, s.xn.data());
    matmul(model_.output, s.xn.data(), rows, s.logits.data(), activations);
    for (int r = 0; r < rows; ++r) {
      Eigen::Map<Eigen::ArrayXf> row(s.logits.data() + size_t(r) * vocab, vocab);
      const float max = row.maxCoeff();
      shifted.assign(row.data(), row.data() + vocab);
      exp_shifted(shifted.data(), vocab, max);
      const float log_sum = max + std::log(sum_in_fixed_order(shifted.data(), vocab));
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
