// A Session runs one sequence through a frozen Model on the CPU: chunked prefill and greedy decode
// with a per-(layer, KV head) KV cache managed by a MemoryPolicy.
//
// Sessions share the Model (const) and own everything per sequence, so many can run in parallel
// (one per population member or prompt). Compute: Eigen for products, TBB across heads and rows.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "transformer/kv_cache.h"
#include "transformer/memory_policy.h"
#include "transformer/model.h"

namespace nammkit {

struct SessionOptions {
  int prefill_chunk = 128;      // tokens per forward during prefill (bounds the attention matrix)
  int update_interval = 512;    // the policy runs whenever the absolute token count hits a multiple
  bool attention_bf16 = false;  // round the probabilities handed to the policy to bf16 (the reference does)
  // Sliding-window attention (B'MOJO's in-context window): a query at position p sees the keys at
  // positions > p - sliding_window plus the cache's memory entries. 0 = no window. After each policy
  // update, every kept token that is already outside the window becomes a memory entry; tokens that
  // leave the window between updates are hidden until the policy decides on them.
  int sliding_window = 0;
};

// Counters a caller can read after a run.
struct SessionStats {
  int64_t policy_updates = 0;   // update rounds (each covers all layers)
  int64_t tokens_evicted = 0;   // summed over layers and KV heads
  double policy_seconds = 0;    // time spent inside MemoryPolicy::update and compaction
};

class Session {
 public:
  // `policy` may be null (full cache). It must outlive the Session.
  Session(const Model& model, MemoryPolicy* policy = nullptr, SessionOptions options = {});

  // Forgets the sequence: empty cache, position 0, policy->begin_sequence().
  void reset();

  // Runs `tokens` through the model (split into prefill chunks and at update boundaries) and
  // returns the logits after the last one ([vocab]). When `all_logits` is given it receives
  // [tokens.size()][vocab] logits, one row per input token.
  const std::vector<float>& feed(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr);

  // Adds an entry to one head's cache outside the token stream (e.g. a Memory3 explicit memory):
  // key (post-RoPE) and value of head_dim floats each, at `position`. It is a memory entry: always
  // visible, also outside a sliding window. Policies see it like any cached token.
  void inject(int layer, int kv_head, const float* key, const float* value, int32_t position);
  // Sets the absolute position of the next token (e.g. after the positions injected memories use).
  void set_position(int64_t position);

  // Sees every layer's projections of each chunk before RoPE: q [n][q_dim], k and v [n][kv_dim]
  // (biases added), for the tokens at positions first_position .. first_position + n - 1. For tools
  // that need pre-RoPE queries and keys (Memory3's selection rule). Called on the caller's thread.
  using ProjectionObserver = std::function<void(int layer, int n, int64_t first_position, const float* q,
                                                const float* k, const float* v)>;
  void set_projection_observer(ProjectionObserver observer) { projection_observer_ = std::move(observer); }

  int64_t position() const { return position_; }  // absolute tokens processed so far
  const KVCache& cache() const { return cache_; }
  const SessionStats& stats() const { return stats_; }
  const Model& model() const { return model_; }
  const SessionOptions& options() const { return options_; }

 private:
  struct Scratch;
  struct AttentionLog;
  void forward_chunk(std::span<const int32_t> tokens, float* logits_out, bool logits_for_all);
  void run_policy();

  const Model& model_;
  MemoryPolicy* policy_;
  SessionOptions options_;
  KVCache cache_;
  int64_t position_ = 0;
  std::vector<float> last_logits_;
  SessionStats stats_;
  std::shared_ptr<Scratch> scratch_;
  std::shared_ptr<AttentionLog> attn_log_;
  ProjectionObserver projection_observer_;
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

struct GenerateOptions {
  int max_new_tokens = 64;
  bool stop_at_eos = true;
};

// Greedy decoding: feeds `prompt`, then argmax tokens until EOS or max_new_tokens. `on_token` (may be
// empty) sees each new id as it is produced. Returns the generated ids (without the prompt).
std::vector<int32_t> generate_greedy(Session& session, std::span<const int32_t> prompt, const GenerateOptions& options,
                                     const std::function<void(int32_t)>& on_token = {});

int32_t argmax(std::span<const float> logits);

}  // namespace nammkit
