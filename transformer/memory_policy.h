// The memory-policy hook: how a policy sees the KV cache and tells the runtime what to keep.
//
// Every `update_interval` absolute tokens (default 512, prefill and decode alike) the Session calls
// MemoryPolicy::update() once per layer with everything that happened since the previous call:
// the post-softmax attention of the new queries (averaged over the query heads sharing a KV head),
// and each KV head's cached keys, values and absolute positions. The policy answers with the indices
// to keep per KV head; the Session compacts its cache accordingly (no holes are ever scanned).
//
// A policy keeps its own per-token state (e.g. NAMM's EMA) and must gather it with the same indices
// it returns. One MemoryPolicy object serves one sequence at a time; begin_sequence() resets it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "transformer/model.h"

namespace nammkit {

// One KV head of one layer at an update. Pointers are valid only during the update() call.
struct HeadWindow {
  int n_keys = 0;                      // N: cached tokens of this head, including the new ones
  const float* keys = nullptr;         // [N][head_dim], post-RoPE; may be nullptr unless needs_keys_values()
  const float* values = nullptr;       // [N][head_dim]; likewise
  const int32_t* positions = nullptr;  // [N] absolute positions, ascending
  // [n_queries][N] GQA-averaged post-softmax attention; row t is the t-th query since the previous
  // update. Entries a query could not see (keys newer than it) are 0. nullptr unless the policy
  // needs_attention().
  const float* attention = nullptr;
};

struct LayerWindow {
  int layer = 0;
  int head_dim = 0;
  int n_queries = 0;                         // queries since the previous update (= interval)
  const int32_t* query_positions = nullptr;  // [n_queries] absolute positions of those queries
  std::vector<HeadWindow> heads;             // one per KV head

  // Tokens the sequence has seen so far: the position after the newest query (0 before any).
  int64_t tokens_seen() const { return n_queries > 0 ? int64_t{query_positions[n_queries - 1]} + 1 : 0; }
};

// Indices to keep for each KV head: ascending, unique, each < n_keys. An empty outer vector means
// "keep everything" for this layer.
using KeepLists = std::vector<std::vector<int32_t>>;

class MemoryPolicy {
 public:
  virtual ~MemoryPolicy() = default;
  virtual std::string name() const = 0;
  // Whether update() reads HeadWindow::attention. Recording it costs memory and time, so policies
  // that do not need it (full cache, StreamingLLM, L2, random) leave this false.
  virtual bool needs_attention() const { return false; }
  // Whether update() reads HeadWindow::keys and values. The CPU Session hands them over for free; the
  // GPU session must copy the whole cache to the host for them, so policies that score from attention
  // and positions alone (NAMM, H2O, StreamingLLM, random, full) say false and get nullptr there.
  virtual bool needs_keys_values() const { return true; }
  // Whether the policy reads the LM's surprisal of each token (B'MOJO's innovation test). The CPU
  // Session then runs the output layer over every fed position, which prefill otherwise skips, and
  // calls observe_surprisal() once per forward chunk, before any update() that chunk triggers. The
  // GPU session does not report it.
  virtual bool needs_surprisal() const { return false; }
  // surprisal[i] = −log p(x_p | x_<p) in nats for the token at absolute position p = first_position + i,
  // from the logits of the position before it; +inf where the Session has no such logits (the
  // first token after reset(): nothing predicted it).
  virtual void observe_surprisal(int64_t first_position, std::span<const float> surprisal) {}
  // A new sequence starts: drop all per-sequence state.
  virtual void begin_sequence(const ModelConfig& config) {}
  virtual KeepLists update(const LayerWindow& window) = 0;
};

// Keeps every token: the default, and bit-identical to running without a policy.
class FullCachePolicy final : public MemoryPolicy {
 public:
  std::string name() const override { return "full"; }
  bool needs_keys_values() const override { return false; }
  KeepLists update(const LayerWindow&) override { return {}; }
};

}  // namespace nammkit
