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
// attention rows, as the CPU's AttentionLog does. With namm_on_device a NAMM's spectrogram, features and
// BAM scores are computed on the device instead (kernels/namm_device.h); only the selection runs on the
// host.
//
// Lockstep: a session made with a CudaLockstepGroup (kernels/cuda_lockstep.h) runs its chunks stacked
// with the group's other sessions (one pass over the weights per step); its policy hook is unchanged,
// except that device NAMM updates of the sessions whose chunks end at an update run batched, in the step.
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

namespace nammkit {
class NammPolicy;
}

namespace nammkit::kernels {

class CudaLockstepGroup;
class DeviceNamm;

struct CudaSessionOptions {
  SessionOptions session;       // prefill_chunk, update_interval, attention_bf16 (sliding_window must be 0)
  DType kv_dtype = DType::F16;  // device KV cache: F32, F16 or BF16
  int reserve_tokens = 0;       // initial capacity of each head's cache (it grows by doubling)
  // A NammPolicy that can take external scores (Evict mode, BAM) runs its spectrogram, features and BAM
  // scores on the device (kernels/namm_device.h), the selection on the host; its per-token spectral state
  // then lives on the device next to the cache. Sessions of a lockstep group have it on and are updated
  // together. Off: the policy runs on the host like any other.
  bool namm_on_device = false;
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
  // Updates of this sequence that ran as a device NAMM (namm_on_device; alone or batched in a group),
  // and those of them the group batched with other sessions' in its step.
  int64_t device_namm_updates() const { return device_namm_updates_; }
  int64_t batched_namm_updates() const { return batched_namm_updates_; }

 private:
  friend class CudaLockstepGroup;
  friend class DeviceNamm;
  // One (layer, KV head) of the device cache: capacity rows allocated, len used.
  struct Head {
    DeviceBuffer<uint8_t> keys, values;  // [capacity][head_dim] of kv_dtype
    DeviceBuffer<int32_t> positions;     // [capacity] (device copy, kept by append and compaction)
    int capacity = 0;
    int len = 0;
    std::vector<int32_t> host_positions;  // [len], authoritative
    // The device NAMM's spectral state of the tokens cached at the last update (namm_on_device):
    // EMA [state_rows][n_bins] and tail [state_rows][overlap], rows in cache order.
    DeviceBuffer<float> ema, tail;
    int state_rows = 0;
  };
  // Host copies a policy window points into.
  struct WindowScratch {
    std::vector<std::vector<float>> keys, values, dense;  // [kv head]
  };
  struct Buffers;
  // One session's chunk in a lockstep step.
  struct ChunkJob {
    CudaSession* session = nullptr;
    std::span<const int32_t> tokens;
    float* logits_out = nullptr;  // null: no logits; else the last row's, or every row's when logits_for_all
    bool logits_for_all = false;
    bool ends_at_update = false;  // the policy updates after this chunk
  };
  void forward_chunk(std::span<const int32_t> tokens, float* logits_out, bool logits_for_all);
  // Appends one layer's attention rows of a chunk of T queries to the host log: probs_KVxTxS is the
  // kernels' [n_kv][T][stride] host copy; row t of head g keeps the n_old + t + 1 keys query t saw.
  void log_attention_rows(int layer, int T, const float* probs_KVxTxS, int stride);
  void allocate();  // cache bookkeeping, initial capacity, reset(); part of the constructor
  void ensure_capacity(int layer, int needed);
  void run_policy();
  // The pieces of an update: a layer's window from the host copies (keys and values copied from the
  // device only when asked for; the attention rows densified into `scratch`); the eviction of one
  // layer (KV compaction on `stream`, host positions, statistics); the end (logs cleared, counters).
  LayerWindow policy_window(int layer, bool with_kv, bool with_attention, WindowScratch& scratch);
  // The attention log of one (layer, KV head) since the last update as [n_queries][len] rows, zeros
  // for the keys a query could not see, into `out_QxN`.
  void densify_attention(int layer, int kv_head, float* out_QxN) const;
  void apply_keep(int layer, const KeepLists& keep, cudaStream_t stream);
  void finish_policy_update(double seconds);
  // The policy as a device NAMM, or null when it runs on the host (namm_on_device off, another policy,
  // or a mode whose scores cannot come from outside).
  NammPolicy* device_namm_policy() const;

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
  std::unique_ptr<DeviceNamm> namm_engine_;  // the device NAMM when it runs outside a group
  bool policy_ran_in_step_ = false;          // the group ran this chunk's update (batched device NAMM)
  int64_t device_namm_updates_ = 0, batched_namm_updates_ = 0;
};

}  // namespace nammkit::kernels
