// The Memory3 memory-bank file: its layout, serialisation, and the validating reader. What goes into
// a bank (which chunk tokens, chosen how) is namm/export_memory3.h; this module only knows bytes.
//
//   "NAMMBANK" | u32 format version | u32 CRC-32 of the index | u64 index bytes | index |
//   zero padding to 64 | prefix block | chunk blocks (each 64-byte aligned)
//
// The index is a bank::BankIndex (namm/export_bank.proto) holding every field and the absolute
// offset of every tensor block. Tensors are raw little-endian f32 so that a bank can be memory-mapped
// and used in place:
//   prefix block  [all layers][K,V][KV head][P][head_dim]      the KV of BOS + prefix tokens
//   chunk block   [memory layer][K,V][KV head][k][head_dim]    the selected tokens' post-RoPE KV
// The index CRC is checked on open; a chunk block's own CRC only when the chunk is used
// (verify_chunk), because opening a large mapped bank must not read every tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "namm/export_bank.pb.h"
#include "transformer/model.h"

namespace nammkit {

inline constexpr uint32_t kBankFormatVersion = 1;
inline constexpr int kBankHeaderBytes = 24;  // magic 8 + version 4 + CRC 4 + index length 8
inline constexpr int kBankAlignment = 64;    // tensor blocks start at multiples of this

// The float index of one [head_dim] vector in a block laid out [outer][K,V][KV head][slot][head_dim]
// (outer = layer for the prefix block, memory-layer slot for a chunk block; kv = 0 key, 1 value).
// Writer and reader both use it, so the layout is stated once.
inline size_t bank_vector_index(int outer, int kv, int kv_head, int slot, int n_kv_heads, int n_slots, int head_dim) {
  return (((size_t(outer) * 2 + kv) * n_kv_heads + kv_head) * n_slots + slot) * head_dim;
}

// The file bytes for `index` (every field but format_version and the offsets filled in) with the
// prefix block and one block per index chunk, in order. Sets those fields in the written index.
// Errors "memory bank: ..." when there are no chunks or the layout cannot be made.
std::string serialize_bank(bank::BankIndex index, std::span<const float> prefix_kv,
                           const std::vector<std::vector<float>>& blocks);

// A bank read back: memory-mapped from a file, or held in memory. Construction validates the
// header, CRC, index fields, sizes and every offset; problems are Errors "<file>: <field>: ...".
class MemoryBank {
 public:
  static MemoryBank open(const std::string& path);
  static MemoryBank from_bytes(std::string bytes, const std::string& name);
  MemoryBank(MemoryBank&&) noexcept = default;
  MemoryBank& operator=(MemoryBank&&) noexcept = default;

  const bank::BankIndex& index() const { return index_; }
  int n_chunks() const { return index_.chunks_size(); }
  // Whether the chunks' texts are stored (every chunk has one, or none does: checked on open).
  bool has_texts() const { return n_chunks() > 0 && !index_.chunks(0).text().empty(); }
  const std::string& name() const { return name_; }
  // The stored [d] key or value (kv = 0 key, 1 value) of slot `slot` of memory-layer slot `m`.
  const float* chunk_vector(int chunk, int m, int kv, int kv_head, int slot) const;
  const float* prefix_vector(int layer, int kv, int kv_head, int pos) const;
  // Errors unless `chunk` is in range and its tensor block matches its CRC-32 (call before using it).
  void verify_chunk(int chunk) const;
  // Errors unless the bank was written for a model of this shape.
  void check_model(const ModelConfig& config) const;

 private:
  MemoryBank() = default;
  void parse_and_validate();
  const uint8_t* data() const {
    return mapped_.data() ? mapped_.data() : reinterpret_cast<const uint8_t*>(owned_.data());
  }
  size_t size() const { return mapped_.data() ? mapped_.size() : owned_.size(); }

  std::string name_;
  MappedFile mapped_;
  std::string owned_;
  bank::BankIndex index_;
};

}  // namespace nammkit
