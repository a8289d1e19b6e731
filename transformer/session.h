// A Session runs one sequence through a frozen Model on the CPU: chunked prefill and greedy decode
// with a per-(layer, KV head) KV cache managed by a MemoryPolicy.
//
// Sessions share the Model (const) and own everything per sequence, so many can run in parallel
// (one per population member or prompt). Compute: Eigen for products, TBB across heads and rows.
// Sessions of one LockstepGroup (transformer/lockstep.h) run their forward passes together: one pass
// over the weights for all of them, with results bit-identical to running each alone.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "transformer/backend.h"
#include "transformer/kv_cache.h"
#include "transformer/memory_policy.h"
#include "transformer/model.h"

namespace nammkit {

class LockstepGroup;

class Session final : public InferenceSession {
 public:
  // `policy` may be null (full cache). It must outlive the Session. With a `group` (which must outlive
  // the Session too) every forward pass waits for, and runs with, the group's other sessions.
  Session(const Model& model, MemoryPolicy* policy = nullptr, SessionOptions options = {},
          LockstepGroup* group = nullptr);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Forgets the sequence: empty cache, position 0, policy->begin_sequence().
  void reset() override;

  // Runs `tokens` through the model (split into prefill chunks and at update boundaries) and
  // returns the logits after the last one ([vocab]). When `all_logits` is given it receives
  // [tokens.size()][vocab] logits, one row per input token.
  const std::vector<float>& feed(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr) override;

  // Adds an entry to one head's cache outside the token stream (e.g. a Memory3 explicit memory):
  // key (post-RoPE) and value of head_dim floats each, at `position`. It is a memory entry: always
  // visible, also outside a sliding window. Policies see it like any cached token.
  void inject(int layer, int kv_head, const float* key, const float* value, int32_t position);
  // Sets the absolute position of the next token (e.g. after the positions injected memories use).
  void set_position(int64_t position) override;

  // Sees every layer's projections of each chunk before RoPE: q [n][q_dim], k and v [n][kv_dim]
  // (biases added), for the tokens at positions first_position .. first_position + n - 1. For tools
  // that need pre-RoPE queries and keys (Memory3's selection rule). Called on the caller's thread.
  using ProjectionObserver =
      std::function<void(int layer, int n, int64_t first_position, const float* q, const float* k, const float* v)>;
  void set_projection_observer(ProjectionObserver observer) { projection_observer_ = std::move(observer); }

  int64_t position() const override { return position_; }  // absolute tokens processed so far
  const KVCache& cache() const { return cache_; }
  const SessionStats& stats() const override { return stats_; }
  const ModelConfig& config() const override { return model_.config; }
  int head_len(int layer, int kv_head) const override { return cache_.head(layer, kv_head).len; }
  size_t total_tokens() const override { return cache_.total_tokens(); }
  const Model& model() const { return model_; }
  const SessionOptions& options() const { return options_; }

 private:
  friend class LockstepGroup;
  struct Scratch;
  struct AttentionLog;
  // One session's chunk in a forward pass over several sessions.
  struct ChunkJob {
    Session* session = nullptr;
    std::span<const int32_t> tokens;
    float* logits_out = nullptr;  // null: no logits; else the last row's, or every row's when logits_for_all
    bool logits_for_all = false;
  };
  void forward_chunk(std::span<const int32_t> tokens, float* logits_out, bool logits_for_all);
  // The forward pass of every job's chunk, stacked: the dense layers read the weights once for all
  // jobs (matmul_segments), attention runs per (job, KV head) against each job's own cache.
  static void forward_jobs(std::span<const ChunkJob> jobs, Scratch& scratch);
  static std::shared_ptr<Scratch> make_scratch(const ModelConfig& config);
  void attend(int layer, int kv_head, int n_tokens, const float* q_rows, const float* k_rows, const float* v_rows,
              float* attn_out);
  void report_surprisal(std::span<const int32_t> tokens, int64_t first_position, const float* hidden, Scratch& scratch);
  void run_policy();

  const Model& model_;
  MemoryPolicy* policy_;
  SessionOptions options_;
  LockstepGroup* group_;
  KVCache cache_;
  int64_t position_ = 0;
  std::vector<float> last_logits_;
  SessionStats stats_;
  std::shared_ptr<Scratch> scratch_;
  std::shared_ptr<AttentionLog> attn_log_;
  ProjectionObserver projection_observer_;
  // For a policy that needs_surprisal(): log p(· | everything fed so far), from the last position's
  // logits ([vocab]); empty until a position has been fed.
  std::vector<float> next_log_probs_;
};

// How a Session (and the CUDA backend) cuts a token stream into forward passes: chunks end at
// absolute multiples of prefill_chunk and of update_interval, so a policy always runs after exactly
// update_interval tokens however the input is split. ends_at_update marks the chunks after which
// the policy runs.
struct ChunkSpan {
  size_t begin = 0;
  size_t size = 0;
  bool ends_at_update = false;
};
std::vector<ChunkSpan> plan_chunks(int64_t position, size_t n_tokens, const SessionOptions& options);

// Throws Error("<where>: token id ... outside the vocabulary ...") for the first bad id.
void check_token_ids(std::span<const int32_t> tokens, int vocab_size, const std::string& where);

}  // namespace nammkit
