#include "transformer/kv_cache.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace nammkit {

KVCache::KVCache(int n_layers, int n_kv_heads, int head_dim, int reserve_tokens)
    : n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim), heads_(size_t(n_layers) * n_kv_heads) {
  for (auto& h : heads_) {
    h.keys.reserve(size_t(reserve_tokens) * head_dim);
    h.values.reserve(size_t(reserve_tokens) * head_dim);
    h.positions.reserve(reserve_tokens);
    h.memory.reserve(reserve_tokens);
  }
}

void KVCache::append(int layer, int kv_head, const float* key, const float* value, int32_t position, bool memory) {
  HeadCache& h = head(layer, kv_head);
  h.keys.insert(h.keys.end(), key, key + head_dim_);
  h.values.insert(h.values.end(), value, value + head_dim_);
  h.positions.push_back(position);
  h.memory.push_back(memory ? 1 : 0);
  ++h.len;
}

void KVCache::keep(int layer, int kv_head, std::span<const int32_t> keep) {
  HeadCache& h = head(layer, kv_head);
  const std::string where = "kv cache: layer " + std::to_string(layer) + " head " + std::to_string(kv_head);
  int32_t prev = -1;
  for (int32_t idx : keep) {
    if (idx <= prev || idx >= h.len)
      fail(where, "kept indices must be ascending, unique and < " + std::to_string(h.len) + " (got " +
                      std::to_string(idx) + ")");
    prev = idx;
  }
  // Forward gather: keep[i] >= i, so each row moves to a slot that was already read.
  const size_t d = static_cast<size_t>(head_dim_);
  for (size_t i = 0; i < keep.size(); ++i) {
    const size_t src = static_cast<size_t>(keep[i]);
    if (src == i) continue;
    std::copy_n(h.keys.begin() + src * d, d, h.keys.begin() + i * d);
    std::copy_n(h.values.begin() + src * d, d, h.values.begin() + i * d);
    h.positions[i] = h.positions[src];
    h.memory[i] = h.memory[src];
  }
  h.len = static_cast<int>(keep.size());
  h.keys.resize(h.len * d);
  h.values.resize(h.len * d);
  h.positions.resize(h.len);
  h.memory.resize(h.len);
}

void KVCache::clear() {
  for (auto& h : heads_) {
    h.keys.clear();
    h.values.clear();
    h.positions.clear();
    h.memory.clear();
    h.len = 0;
  }
}

size_t KVCache::total_tokens() const {
  size_t n = 0;
  for (const auto& h : heads_) n += h.len;
  return n;
}

size_t KVCache::bytes() const { return total_tokens() * size_t(head_dim_) * 2 * sizeof(float); }

}  // namespace nammkit
