// The GPU forward pass and policy hook; see cuda_session.h. Mirrors transformer/session.cpp step by step.
#include "kernels/cuda_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <utility>

#include "kernels/cuda_lockstep.h"
#include "kernels/kv_compact.h"
#include "kernels/layer_ops.h"
#include "kernels/layer_pass.h"
#include "kernels/namm_device.h"
#include "namm/namm_policy.h"
#include "transformer/session.h"

namespace nammkit::kernels {

// Activations for the largest chunk so far, the per-layer pointer / length arrays the attention
// kernels read, and scratch.
struct CudaSession::Buffers {
  RowActivations act;
  DeviceBuffer<float> logits;
  DeviceBuffer<int32_t> tokens;
  DeviceBuffer<void*> key_ptrs, value_ptrs;  // [n_layers * n_kv]
  DeviceBuffer<int32_t*> pos_ptrs;           // [n_layers * n_kv]
  DeviceBuffer<int> lens;                    // [n_layers * n_kv]
  std::vector<void*> key_ptrs_host, value_ptrs_host;
  std::vector<int32_t*> pos_ptrs_host;
  std::vector<int> lens_host;
  DeviceBuffer<float> probs;
  DeviceBuffer<uint8_t> decode_ws, compact_ws;
  std::vector<float> probs_host;
  std::vector<uint8_t> kv_host;
};

namespace {

constexpr const char* kWhere = "cuda session";

}  // namespace

CudaSession::CudaSession(const CudaModel& model, MemoryPolicy* policy, CudaSessionOptions options,
                         CudaLockstepGroup* group)
    : model_(model), policy_(policy), options_(options), group_(group), buf_(std::make_unique<Buffers>()) {
  const ModelConfig& c = model_.config();
  const SessionOptions& so = options_.session;
  if (so.prefill_chunk < 1) fail(kWhere, "prefill_chunk must be >= 1");
  if (so.update_interval < 1) fail(kWhere, "update_interval must be >= 1");
  if (so.sliding_window != 0) fail(kWhere, "sliding_window is not supported on the GPU (use the CPU Session)");
  if (options_.reserve_tokens < 0) fail(kWhere, "reserve_tokens must be >= 0");
  kv_element_bytes(options_.kv_dtype, kWhere);
  if (c.head_dim > 256 || c.head_dim % 2 != 0) fail(kWhere, "head_dim must be even and <= 256");
  if (c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0 || c.group_size() > 32)
    fail(kWhere, "n_heads must be a multiple of n_kv_heads with at most 32 query heads per KV head");
  if (group_ && &group_->model() != &model_) fail(kWhere, "a session of another model joined the lockstep group");
  cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  // A grouped session's forward passes run on the group's handle: no cuBLAS handle (and its workspace)
  // per sequence.
  const cublasStatus_t created = group_ ? CUBLAS_STATUS_SUCCESS : cublasCreate(&cublas_);
  if (created != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream_);
    cublas_check(created, "cublasCreate");
  }
  try {
    if (cublas_) cublas_check(cublasSetStream(cublas_, stream_), "cublasSetStream");
    allocate();
  } catch (...) {  // the destructor does not run for a constructor that throws
    if (cublas_) cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
    throw;
  }
  if (group_) group_->join();
}

void CudaSession::allocate() {
  const ModelConfig& c = model_.config();
  const size_t n_heads = size_t(c.n_layers) * c.n_kv_heads;
  heads_.resize(n_heads);
  Buffers& b = *buf_;
  b.key_ptrs.resize(n_heads);
  b.value_ptrs.resize(n_heads);
  b.pos_ptrs.resize(n_heads);
  b.lens.resize(n_heads);
  b.key_ptrs_host.assign(n_heads, nullptr);
  b.value_ptrs_host.assign(n_heads, nullptr);
  b.pos_ptrs_host.assign(n_heads, nullptr);
  b.lens_host.assign(n_heads, 0);
  if (options_.reserve_tokens > 0)
    for (int l = 0; l < c.n_layers; ++l) ensure_capacity(l, options_.reserve_tokens);
  reset();
}

CudaSession::~CudaSession() {
  if (group_) group_->leave();
  // Nothing to report from a destructor; buffers are freed after this by their own destructors.
  if (stream_) cudaStreamSynchronize(stream_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaSession::reset() {
  const ModelConfig& c = model_.config();
  for (Head& h : heads_) {
    h.len = 0;
    h.state_rows = 0;
    h.host_positions.clear();
  }
  policy_ran_in_step_ = false;
  device_namm_updates_ = 0;
  batched_namm_updates_ = 0;
  std::fill(buf_->lens_host.begin(), buf_->lens_host.end(), 0);
  log_rows_.assign(heads_.size(), {});
  log_offsets_.assign(heads_.size(), {});
  query_positions_.clear();
  position_ = 0;
  broken_ = false;
  stats_ = {};
  last_logits_.assign(c.vocab_size, 0.0f);
  if (policy_) policy_->begin_sequence(c);
}

void CudaSession::set_position(int64_t position) {
  if (position < 0) fail(kWhere, "set_position: negative position");
  position_ = position;
}

int CudaSession::head_len(int layer, int kv_head) const {
  const ModelConfig& c = model_.config();
  if (layer < 0 || layer >= c.n_layers || kv_head < 0 || kv_head >= c.n_kv_heads)
    fail(kWhere,
         "head_len: layer " + std::to_string(layer) + " / KV head " + std::to_string(kv_head) + " out of range");
  return heads_[size_t(layer) * c.n_kv_heads + kv_head].len;
}

const std::vector<int32_t>& CudaSession::head_positions(int layer, int kv_head) const {
  head_len(layer, kv_head);  // range check
  return heads_[size_t(layer) * model_.config().n_kv_heads + kv_head].host_positions;
}

size_t CudaSession::total_tokens() const {
  size_t n = 0;
  for (const Head& h : heads_) n += size_t(h.len);
  return n;
}

const std::vector<float>& CudaSession::feed(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
  const int vocab = model_.config().vocab_size;
  if (broken_)
    fail(kWhere,
         "a lockstep step this session was in failed midway, so its cache no longer matches its "
         "positions: reset() it");
  check_token_ids(tokens, vocab, kWhere);
  if (all_logits) all_logits->assign(tokens.size() * size_t(vocab), 0.0f);

  for (const ChunkSpan& chunk : plan_chunks(position_, tokens.size(), options_.session)) {
    const bool last = chunk.begin + chunk.size == tokens.size();
    float* out = all_logits ? all_logits->data() + chunk.begin * vocab : (last ? last_logits_.data() : nullptr);
    const std::span<const int32_t> part = tokens.subspan(chunk.begin, chunk.size);
    if (group_) group_->forward(ChunkJob{this, part, out, all_logits != nullptr, chunk.ends_at_update});
    else forward_chunk(part, out, all_logits != nullptr);
    // The group may have run this update already, batched with its other sessions' (device NAMM).
    if (policy_ && chunk.ends_at_update && !std::exchange(policy_ran_in_step_, false)) run_policy();
  }
  if (all_logits && !tokens.empty())
    std::copy_n(all_logits->data() + (tokens.size() - 1) * vocab, vocab, last_logits_.data());
  cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (feed)");
  return last_logits_;
}

// Makes room for `needed` rows in every KV head of `layer`: doubling, old rows copied over.
void CudaSession::ensure_capacity(int layer, int needed) {
  const ModelConfig& c = model_.config();
  const size_t row_bytes = size_t(c.head_dim) * kv_element_bytes(options_.kv_dtype, kWhere);
  Buffers& b = *buf_;
  bool changed = false;
  for (int g = 0; g < c.n_kv_heads; ++g) {
    const size_t idx = size_t(layer) * c.n_kv_heads + g;
    Head& h = heads_[idx];
    if (needed <= h.capacity) continue;
    const int cap = std::max({needed, 2 * h.capacity, options_.reserve_tokens, 64});
    DeviceBuffer<uint8_t> keys(size_t(cap) * row_bytes), values(size_t(cap) * row_bytes);
    DeviceBuffer<int32_t> positions{size_t(cap)};
    if (h.len > 0) {
      cuda_check(
          cudaMemcpyAsync(keys.get(), h.keys.get(), size_t(h.len) * row_bytes, cudaMemcpyDeviceToDevice, stream_),
          "cudaMemcpyAsync (grow keys)");
      cuda_check(
          cudaMemcpyAsync(values.get(), h.values.get(), size_t(h.len) * row_bytes, cudaMemcpyDeviceToDevice, stream_),
          "cudaMemcpyAsync (grow values)");
      cuda_check(cudaMemcpyAsync(positions.get(), h.positions.get(), size_t(h.len) * sizeof(int32_t),
                                 cudaMemcpyDeviceToDevice, stream_),
                 "cudaMemcpyAsync (grow positions)");
    }
    // The old buffers are freed below: wait until the copies (and earlier kernels) are done with them.
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (grow)");
    h.keys = std::move(keys);
    h.values = std::move(values);
    h.positions = std::move(positions);
    h.capacity = cap;
    b.key_ptrs_host[idx] = h.keys.get();
    b.value_ptrs_host[idx] = h.values.get();
    b.pos_ptrs_host[idx] = h.positions.get();
    changed = true;
  }
  if (!changed) return;
  const size_t off = size_t(layer) * c.n_kv_heads;
  const size_t n = size_t(c.n_kv_heads);
  cuda_check(cudaMemcpyAsync(b.key_ptrs.get() + off, b.key_ptrs_host.data() + off, n * sizeof(void*),
                             cudaMemcpyHostToDevice, stream_),
             "cudaMemcpyAsync (key pointers)");
  cuda_check(cudaMemcpyAsync(b.value_ptrs.get() + off, b.value_ptrs_host.data() + off, n * sizeof(void*),
                             cudaMemcpyHostToDevice, stream_),
             "cudaMemcpyAsync (value pointers)");
  cuda_check(cudaMemcpyAsync(b.pos_ptrs.get() + off, b.pos_ptrs_host.data() + off, n * sizeof(int32_t*),
                             cudaMemcpyHostToDevice, stream_),
             "cudaMemcpyAsync (position pointers)");
}

void CudaSession::forward_chunk(std::span<const int32_t> tokens, float* logits_out, bool logits_for_all) {
  const ModelConfig& c = model_.config();
  const int T = static_cast<int>(tokens.size());
  const int d = c.head_dim, n_kv = c.n_kv_heads;
  Buffers& b = *buf_;
  RowActivations& a = b.act;
  const bool log_attention = policy_ && policy_->needs_attention();

  a.reserve(c, T, stream_);
  grow(b.tokens, size_t(T), stream_);
  cuda_check(cudaMemcpyAsync(b.tokens.get(), tokens.data(), sizeof(int32_t) * T, cudaMemcpyHostToDevice, stream_),
             "cudaMemcpyAsync (tokens)");
  embedding_gather(model_.token_embedding().data.get(), model_.token_embedding().dtype, b.tokens.get(), T, c.dim,
                   a.x.get(), stream_);
  for (int t = 0; t < T; ++t) query_positions_.push_back(int32_t(position_ + t));

  const float scale = 1.0f / std::sqrt(float(d));
  for (int l = 0; l < c.n_layers; ++l) {
    project_qkv(cublas_, model_, l, a, T, stream_);
    rope_rows(a.q.get(), T, c.n_heads, d, c.q_dim(), position_, model_.inv_freq(), c.rope_style, stream_);
    rope_rows(a.k.get(), T, n_kv, d, c.kv_dim(), position_, model_.inv_freq(), c.rope_style, stream_);

    // Append the chunk's keys and values to every head of this layer.
    const size_t off = size_t(l) * n_kv;
    int max_len = 0;
    for (int g = 0; g < n_kv; ++g) max_len = std::max(max_len, heads_[off + g].len + T);
    ensure_capacity(l, max_len);
    for (int g = 0; g < n_kv; ++g) {
      Head& h = heads_[off + g];
      for (int t = 0; t < T; ++t) h.host_positions.push_back(int32_t(position_ + t));
      h.len += T;
      b.lens_host[off + g] = h.len;
    }
    cuda_check(cudaMemcpyAsync(b.lens.get() + off, b.lens_host.data() + off, sizeof(int) * n_kv, cudaMemcpyHostToDevice,
                               stream_),
               "cudaMemcpyAsync (lens)");
    append_kv(a.k.get(), a.v.get(), T, n_kv, d, options_.kv_dtype, b.key_ptrs.get() + off, b.value_ptrs.get() + off,
              b.pos_ptrs.get() + off, b.lens.get() + off, position_, stream_);

    // Attention over the cache (max_len now includes the chunk).
    const size_t probs_n = size_t(n_kv) * T * max_len;
    if (log_attention) grow(b.probs, probs_n, stream_);
    AttentionCall call;
    call.kv_dtype = options_.kv_dtype;
    call.n_q_heads = c.n_heads;
    call.n_kv_heads = n_kv;
    call.head_dim = d;
    call.n_queries = T;
    call.max_len = max_len;
    call.q = a.q.get();
    call.keys = b.key_ptrs.get() + off;
    call.values = b.value_ptrs.get() + off;
    call.lens = b.lens.get() + off;
    call.scale = scale;
    call.out = a.attn.get();
    call.probs = log_attention ? b.probs.get() : nullptr;
    attend(call, b.decode_ws, stream_);
    if (log_attention) {
      b.probs_host.resize(probs_n);
      cuda_check(
          cudaMemcpyAsync(b.probs_host.data(), b.probs.get(), probs_n * sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync (attention probabilities)");
      cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (attention probabilities)");
      log_attention_rows(l, T, b.probs_host.data(), max_len);
    }
    finish_layer(cublas_, model_, l, a, T, stream_);
  }
  position_ += T;

  if (!logits_out) return;
  // Only the rows someone reads go through the (vocabulary-sized) output layer.
  const int first = logits_for_all ? 0 : T - 1;
  const int rows = T - first;
  const size_t n_logits = size_t(rows) * c.vocab_size;
  grow(b.logits, n_logits, stream_);
  output_logits(cublas_, model_, a.x.get() + size_t(first) * c.dim, rows, a, b.logits.get(), stream_);
  cuda_check(cudaMemcpyAsync(logits_out, b.logits.get(), n_logits * sizeof(float), cudaMemcpyDeviceToHost, stream_),
             "cudaMemcpyAsync (logits)");
  cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (logits)");
}

void CudaSession::log_attention_rows(int layer, int T, const float* probs_KVxTxS, int stride) {
  const int n_kv = model_.config().n_kv_heads;
  const size_t off = size_t(layer) * n_kv;
  for (int g = 0; g < n_kv; ++g) {
    const int n_old = heads_[off + g].len - T;
    std::vector<float>& rows = log_rows_[off + g];
    std::vector<size_t>& offsets = log_offsets_[off + g];
    for (int t = 0; t < T; ++t) {
      offsets.push_back(rows.size());
      const float* src = probs_KVxTxS + (size_t(g) * T + t) * stride;
      const int visible = n_old + t + 1;
      for (int j = 0; j < visible; ++j)
        rows.push_back(options_.session.attention_bf16 ? round_to_bf16(src[j]) : src[j]);
    }
  }
}

LayerWindow CudaSession::policy_window(int layer, bool with_kv, bool with_attention, WindowScratch& scratch) {
  const ModelConfig& c = model_.config();
  const int d = c.head_dim, n_kv = c.n_kv_heads;
  const size_t elem = kv_element_bytes(options_.kv_dtype, kWhere);
  const int n_q = static_cast<int>(query_positions_.size());
  Buffers& b = *buf_;
  scratch.keys.resize(n_kv);
  scratch.values.resize(n_kv);
  scratch.dense.resize(n_kv);
  const size_t off = size_t(layer) * n_kv;
  LayerWindow window;
  window.layer = layer;
  window.head_dim = d;
  window.n_queries = n_q;
  window.query_positions = query_positions_.data();
  for (int g = 0; g < n_kv; ++g) {
    const Head& h = heads_[off + g];
    std::vector<float>& keys = scratch.keys[g];
    std::vector<float>& values = scratch.values[g];
    const size_t n = with_kv ? size_t(h.len) * d : 0;
    keys.resize(n);
    values.resize(n);
    b.kv_host.resize(n * elem);
    if (n > 0) {
      cuda_check(cudaMemcpy(b.kv_host.data(), h.keys.get(), n * elem, cudaMemcpyDeviceToHost), "cudaMemcpy (keys)");
      dequantize(options_.kv_dtype, b.kv_host.data(), keys.data(), int64_t(n));
      cuda_check(cudaMemcpy(b.kv_host.data(), h.values.get(), n * elem, cudaMemcpyDeviceToHost), "cudaMemcpy (values)");
      dequantize(options_.kv_dtype, b.kv_host.data(), values.data(), int64_t(n));
    }
    HeadWindow hw;
    hw.n_keys = h.len;
    hw.keys = with_kv ? keys.data() : nullptr;
    hw.values = with_kv ? values.data() : nullptr;
    hw.positions = h.host_positions.data();
    if (with_attention) {
      std::vector<float>& dense = scratch.dense[g];
      dense.resize(size_t(n_q) * h.len);
      densify_attention(layer, g, dense.data());
      hw.attention = dense.data();
    }
    window.heads.push_back(hw);
  }
  return window;
}

void CudaSession::densify_attention(int layer, int kv_head, float* out_QxN) const {
  const size_t i = size_t(layer) * model_.config().n_kv_heads + kv_head;
  const int len = heads_[i].len, n_q = static_cast<int>(query_positions_.size());
  const std::vector<float>& rows = log_rows_[i];
  const std::vector<size_t>& offsets = log_offsets_[i];
  if (int(offsets.size()) != n_q) fail(kWhere, "attention log out of step with the query positions");
  std::fill_n(out_QxN, size_t(n_q) * len, 0.0f);
  for (int t = 0; t < n_q; ++t) {
    const size_t begin = offsets[t];
    const size_t end = t + 1 < n_q ? offsets[t + 1] : rows.size();
    if (end - begin > size_t(len)) fail(kWhere, "attention row longer than the cache");
    std::copy(rows.begin() + begin, rows.begin() + end, out_QxN + size_t(t) * len);
  }
}

void CudaSession::apply_keep(int layer, const KeepLists& keep, cudaStream_t stream) {
  if (keep.empty()) return;
  const ModelConfig& c = model_.config();
  const int d = c.head_dim, n_kv = c.n_kv_heads;
  Buffers& b = *buf_;
  if (int(keep.size()) != n_kv)
    fail("policy " + policy_->name(), "layer " + std::to_string(layer) + ": returned " + std::to_string(keep.size()) +
                                          " keep lists for " + std::to_string(n_kv) + " KV heads");
  const size_t off = size_t(layer) * n_kv;
  for (int g = 0; g < n_kv; ++g) {
    Head& h = heads_[off + g];
    const std::vector<int32_t>& kg = keep[g];
    const int n_keep = static_cast<int>(kg.size());
    if (n_keep > 0) {
      const size_t ws = kv_compact_workspace_bytes(options_.kv_dtype, d, n_keep);
      grow(b.compact_ws, ws, stream);
      // Validates the list (ascending, unique, in range) before anything changes.
      kv_compact_head(options_.kv_dtype, d, h.len, h.keys.get(), h.values.get(), h.positions.get(), kg,
                      b.compact_ws.get(), b.compact_ws.size(), stream);
    }
    std::vector<int32_t> kept(static_cast<size_t>(n_keep));
    for (int i = 0; i < n_keep; ++i) kept[i] = h.host_positions[size_t(kg[i])];
    stats_.tokens_evicted += h.len - n_keep;
    h.host_positions = std::move(kept);
    h.len = n_keep;
    b.lens_host[off + g] = n_keep;
  }
}

void CudaSession::finish_policy_update(double seconds) {
  for (auto& r : log_rows_) r.clear();
  for (auto& o : log_offsets_) o.clear();
  query_positions_.clear();
  ++stats_.policy_updates;
  stats_.policy_seconds += seconds;
}

NammPolicy* CudaSession::device_namm_policy() const {
  if (!options_.namm_on_device) return nullptr;
  auto* namm = dynamic_cast<NammPolicy*>(policy_);
  return namm && namm->takes_external_scores() ? namm : nullptr;
}

void CudaSession::run_policy() {
  if (NammPolicy* namm = device_namm_policy()) {
    if (!namm_engine_ || !namm_engine_->serves(*namm))
      namm_engine_ = std::make_unique<DeviceNamm>(namm->config(), namm->normalizer());
    CudaSession* self = this;
    try {
      namm_engine_->update({&self, 1}, stream_);
    } catch (...) {
      broken_ = true;  // some layers may be compacted, others not
      throw;
    }
    return;
  }
  for (const Head& h : heads_)
    if (h.state_rows > 0)
      fail(kWhere,
           "the NAMM ran on the device earlier in this sequence and cannot go on on the host (its mode "
           "or scorer changed): reset() the session first");
  const auto start = std::chrono::steady_clock::now();
  cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (policy)");
  WindowScratch scratch;
  for (int l = 0; l < model_.config().n_layers; ++l) {
    // Keys and values go to the host only for policies that read them (a copy of the whole cache).
    const LayerWindow window = policy_window(l, policy_->needs_keys_values(), policy_->needs_attention(), scratch);
    apply_keep(l, policy_->update(window), stream_);
  }
  cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (compaction)");
  finish_policy_update(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace nammkit::kernels
