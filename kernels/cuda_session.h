// CudaSession: nammkit::Session on the GPU. One sequence through a CudaModel with a device KV cache
// per (layer, KV head), each with its own length, managed by a MemoryPolicy exactly as the CPU
// Session does it (transformer/session.h, transformer/memory_policy.h).
//
// Forward pass: embedding gather, RMSNorm, Q/K/V/O and the SwiGLU MLP through cuBLAS (f16/bf16 inputs,
// f32 accumulation; activations are f32 and rounded to the weights' type before each product), RoPE,
// bias and residual kernels (kernels/layer_ops.h); attention through attention_prefill (chunks of more
// than one token) and attention_decode (one token) over the device cache.
//
// Policy hook: feed() splits its input at absolute multiples of prefill_chunk and update_interval,
// like Session::feed. When the token count reaches a multiple of update_interval, every layer's
// keys, values, positions and (only if policy->needs_attention()) the GQA-averaged attention rows of
// the queries since the last update are copied to the host, policy->update(LayerWindow) runs, and the
// KeepLists are applied on the device with kv_compact_head. Between updates the host keeps the
// attention rows, as the CPU's AttentionLog does.
//
// Lockstep: a session made with a CudaLockstepGroup (kernels/cuda_lockstep.h) runs its chunks stacked
// with the group's other sessions (one pass over the weights per step); its policy hook is unchanged.
//
// Not supported (Error at construction / call): sliding_window > 0 and inject() (B'MOJO / Memory3
// entries). attention_bf16 rounds the GQA average to bf16 (the CPU rounds each head's probability
// before averaging, then the average): a difference of at most one bf16 ulp.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kernels/cuda_model.h"
#include "kernels/cuda_util.h"
#include "transformer/backend.h"
#include "transformer/memory_policy.h"

namespace nammkit::kernels {

class CudaLockstepGroup;

struct CudaSessionOptions {
  SessionOptions session;       // prefill_chunk, update_interval, attention_bf16 (sliding_window must be 0)
  DType kv_dtype = DType::F16;  // device KV cache: F32, F16 or BF16
  int reserve_tokens = 0;       // initial capacity of each head's cache (it grows by doubling)
};

class CudaSession final : public InferenceSession {
 public:
  // `model` and `policy` (may be null: full cache) must outlive the session. Uses the current device.
  // With a `group` (kernels/cuda_lockstep.h; it must outlive the session too) every forward pass waits
  // for, and runs stacked with, the group's other sessions.
  CudaSession(const CudaModel& model, MemoryPolicy* policy = nullptr, CudaSessionOptions options = {},
              CudaLockstepGroup* group = nullptr);
  ~CudaSession() override;
  CudaSession(const CudaSession&) = delete;
  CudaSession& operator=(const CudaSession&) = delete;

  // Forgets the sequence: empty cache, position 0, policy->begin_sequence().
  void reset() override;

  // As Session::feed: runs `tokens`, returns the logits after the last one ([vocab]); `all_logits`, when
  // given, receives [tokens.size()][vocab]. Synchronises with the device before returning.
  const std::vector<float>& feed(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr) override;

  // Sets the absolute position of the next token.
  void set_position(int64_t position) override;

  int64_t position() const override { return position_; }
  const SessionStats& stats() const override { return stats_; }
  const ModelConfig& config() const override { return model_.config(); }
  const CudaSessionOptions& options() const { return options_; }

  // The cache as the policy sees it: lengths and absolute positions per (layer, KV head), host copies.
  int head_len(int layer, int kv_head) const override;
  const std::vector<int32_t>& head_positions(int layer, int kv_head) const;
  size_t total_tokens() const override;  // summed over layers and KV heads

 private:
  friend class CudaLockstepGroup;
  // One (layer, KV head) of the device cache: capacity rows allocated, len used.
  struct Head {
    DeviceBuffer<uint8_t> keys, values;  // [capacity][head_dim] of kv_dtype
    DeviceBuffer<int32_t> positions;     // [capacity] (device copy, kept by append and compaction)
    int capacity = 0;
    int len = 0;
    std::vector<int32_t> host_positions;  // [len], authoritative
  };
  struct Buffers;
  // One session's chunk in a lockstep step.
  struct ChunkJob {
    CudaSession* session = nullptr;
    std::span<const int32_t> tokens;
    float* logits_out = nullptr;  // null: no logits; else the last row's, or every row's when logits_for_all
    bool logits_for_all = false;
  };
  void forward_chunk(std::span<const int32_t> tokens, float* logits_out, bool logits_for_all);
  // Appends one layer's attention rows of a chunk of T queries to the host log: probs_KVxTxS is the
  // kernels' [n_kv][T][stride] host copy; row t of head g keeps the n_old + t + 1 keys query t saw.
  void log_attention_rows(int layer, int T, const float* probs_KVxTxS, int stride);
  void allocate();  // cache bookkeeping, initial capacity, reset(); part of the constructor
  void ensure_capacity(int layer, int needed);
  void run_policy();

  const CudaModel& model_;
  MemoryPolicy* policy_;
  CudaSessionOptions options_;
  CudaLockstepGroup* group_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;  // null in a group (the group's handle runs the forward passes)
  std::vector<Head> heads_;          // [layer * n_kv + kv_head]
  std::unique_ptr<Buffers> buf_;
  int64_t position_ = 0;
  bool broken_ = false;  // a lockstep step with this session failed midway: feed() refuses until reset()
  std::vector<float> last_logits_;
  SessionStats stats_;
  // Attention rows since the last update, per (layer, KV head): concatenated rows, each as long as
  // the head's cache was when it was computed (the cache only grows between updates).
  std::vector<std::vector<float>> log_rows_;
  std::vector<std::vector<size_t>> log_offsets_;
  std::vector<int32_t> query_positions_;
};

}  // namespace nammkit::kernels
