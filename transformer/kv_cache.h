// The KV cache: one growable [len][head_dim] key and value store per (layer, KV head), each with its
// own length, plus the absolute position of every cached token.
//
// Keys are stored after RoPE. Eviction keeps a subset of rows in place (a forward gather), so the
// cache never has holes; positions keep counting from the absolute token count, not the cache length.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace nammkit {

struct HeadCache {
  std::vector<float> keys;         // [len][head_dim]
  std::vector<float> values;       // [len][head_dim]
  std::vector<int32_t> positions;  // [len]
  // 1 for "memory" entries that stay visible outside a sliding attention window: tokens a policy
  // kept after they left the window (B'MOJO's eidetic memory) and injected entries (Memory3).
  std::vector<uint8_t> memory;  // [len]
  int len = 0;
};

class KVCache {
 public:
  KVCache() = default;
  KVCache(int n_layers, int n_kv_heads, int head_dim, int reserve_tokens = 0);

  int n_layers() const { return n_layers_; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }

  HeadCache& head(int layer, int kv_head) { return heads_[layer * n_kv_heads_ + kv_head]; }
  const HeadCache& head(int layer, int kv_head) const { return heads_[layer * n_kv_heads_ + kv_head]; }

  // Appends one token's key and value (head_dim floats each) to one head.
  void append(int layer, int kv_head, const float* key, const float* value, int32_t position, bool memory = false);
  // Keeps only rows `keep` (ascending, unique, in range) of one head; throws Error otherwise.
  void keep(int layer, int kv_head, std::span<const int32_t> keep);

  void clear();
  size_t total_tokens() const;  // summed over layers and heads
  size_t bytes() const;         // keys + values, f32

 private:
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0;
  std::vector<HeadCache> heads_;
};

}  // namespace nammkit
