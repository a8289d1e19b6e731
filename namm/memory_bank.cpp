#include "namm/memory_bank.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <set>

#include "core/byte_io.h"
#include "core/error.h"

namespace nammkit {
namespace {

constexpr char kBankMagic[8] = {'N', 'A', 'M', 'M', 'B', 'A', 'N', 'K'};

// `n` raw bytes at `p` (tensor blocks) as a view for crc32().
std::string_view byte_view(const void* p, size_t n) { return {static_cast<const char*>(p), n}; }

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// The product of block dimensions, or an Error naming `field` when it does not fit 64 bits.
uint64_t checked_product(std::initializer_list<uint64_t> factors, const std::string& where, const std::string& field) {
  uint64_t p = 1;
  for (uint64_t f : factors)
    if (__builtin_mul_overflow(p, f, &p)) fail(where, field + ": the block size overflows 64 bits (implausible shape)");
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writing

std::string serialize_bank(bank::BankIndex idx, std::span<const float> prefix_kv,
                           const std::vector<std::vector<float>>& blocks) {
  if (blocks.empty()) fail("memory bank", "no chunks");
  if (int(blocks.size()) != idx.chunks_size()) fail("memory bank", "index: chunk count differs from the blocks");
  idx.set_format_version(kBankFormatVersion);
  const uint64_t prefix_bytes = prefix_kv.size() * sizeof(float);
  const uint64_t stride = align_up(idx.chunk_bytes(), kBankAlignment);
  // Offsets live inside the index, whose length depends on them (varints): iterate to a fixed point.
  std::string payload;
  uint64_t data_start = align_up(kBankHeaderBytes, kBankAlignment);
  for (int iter = 0; iter < 16; ++iter) {
    idx.set_prefix_offset(data_start);
    const uint64_t first = align_up(data_start + prefix_bytes, kBankAlignment);
    for (int i = 0; i < idx.chunks_size(); ++i) idx.mutable_chunks(i)->set_offset(first + i * stride);
    payload.clear();
    if (!idx.SerializeToString(&payload)) fail("memory bank", "index: serialisation failed");
    const uint64_t need = align_up(kBankHeaderBytes + payload.size(), kBankAlignment);
    if (need == data_start) break;
    data_start = need;
  }
  std::string out;
  out.append(kBankMagic, sizeof kBankMagic);
  put_le<uint32_t>(out, kBankFormatVersion);
  put_le<uint32_t>(out, crc32(payload));
  put_le<uint64_t>(out, payload.size());
  out += payload;
  if (out.size() > idx.prefix_offset()) fail("memory bank", "index: layout did not converge");
  out.resize(idx.prefix_offset(), '\0');
  out.append(reinterpret_cast<const char*>(prefix_kv.data()), prefix_bytes);
  for (size_t i = 0; i < blocks.size(); ++i) {
    out.resize(idx.chunks(static_cast<int>(i)).offset(), '\0');
    out.append(reinterpret_cast<const char*>(blocks[i].data()), blocks[i].size() * sizeof(float));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading

MemoryBank MemoryBank::open(const std::string& path) {
  MemoryBank b;
  b.name_ = path;
  b.mapped_ = MappedFile(path);
  b.parse_and_validate();
  return b;
}

MemoryBank MemoryBank::from_bytes(std::string bytes, const std::string& name) {
  MemoryBank b;
  b.name_ = name;
  b.owned_ = std::move(bytes);
  b.parse_and_validate();
  return b;
}

void MemoryBank::parse_and_validate() {
  const std::string& w = name_;
  const uint8_t* p = data();
  const uint64_t size = this->size();
  if (size < uint64_t(kBankHeaderBytes))
    fail(w, "header: truncated (" + std::to_string(size) + " bytes, the header alone is " +
                std::to_string(kBankHeaderBytes) + ")");
  if (std::memcmp(p, kBankMagic, sizeof kBankMagic) != 0)
    fail(w, "magic: not a nammkit memory bank (expected NAMMBANK)");
  const uint32_t version = get_le<uint32_t>(p + 8);
  if (version != kBankFormatVersion)
    fail(w, "format_version: expected " + std::to_string(kBankFormatVersion) + ", got " + std::to_string(version));
  const uint32_t crc = get_le<uint32_t>(p + 12);
  const uint64_t len = get_le<uint64_t>(p + 16);
  if (len > size - kBankHeaderBytes)
    fail(w, "index: " + std::to_string(len) + " bytes declared, " + std::to_string(size - kBankHeaderBytes) +
                " present (truncated file?)");
  if (crc32(byte_view(p + kBankHeaderBytes, len)) != crc) fail(w, "index: CRC-32 mismatch (corrupted file)");
  if (!index_.ParseFromArray(p + kBankHeaderBytes, static_cast<int>(len))) fail(w, "index: not a valid BankIndex");
  const bank::BankIndex& x = index_;
  if (x.format_version() != version) fail(w, "index.format_version: differs from the header");
  const bank::BankModel& m = x.model();
  if (m.n_layers() < 1 || m.n_heads() < 1 || m.n_kv_heads() < 1 || m.head_dim() < 1 || m.n_heads() % m.n_kv_heads())
    fail(w, "model: bad shape");
  if (m.vocab_size() < 1) fail(w, "model.vocab_size: expected >= 1, got " + std::to_string(m.vocab_size()));
  if (x.k() < 1 || x.k() > x.max_chunk_tokens())
    fail(w, "k: expected 1 .. max_chunk_tokens, got " + std::to_string(x.k()));
  if (x.layers_size() < 1) fail(w, "layers: empty");
  for (int i = 0; i < x.layers_size(); ++i)
    if (x.layers(i) < 0 || x.layers(i) >= m.n_layers() || (i && x.layers(i) <= x.layers(i - 1)))
      fail(w, "layers: expected ascending layers in [0, " + std::to_string(m.n_layers()) + ")");
  if (x.n_kv_heads() != m.n_kv_heads()) fail(w, "n_kv_heads: differs from model.n_kv_heads");
  if (x.head_dim() != m.head_dim()) fail(w, "head_dim: differs from model.head_dim");
  if (x.dtype() != "f32") fail(w, "dtype: expected f32, got '" + x.dtype() + "'");
  if (x.gqa_aggregation() != "mean") fail(w, "gqa_aggregation: expected \"mean\", got '" + x.gqa_aggregation() + "'");
  if (x.attn_mode().empty()) fail(w, "attn_mode: missing");
  const uint64_t L = x.layers_size(), H = x.n_kv_heads(), K = x.k(), D = x.head_dim();
  if (x.chunk_bytes() != checked_product({L, 2, H, K, D, sizeof(float)}, w, "chunk_bytes"))
    fail(w, "chunk_bytes: inconsistent with the shape");
  const uint64_t data_start = kBankHeaderBytes + len;
  const uint64_t P = x.prefix_tokens_size();
  if (P < 1) fail(w, "prefix_tokens: empty (BOS at least)");
  for (int i = 0; i < x.prefix_tokens_size(); ++i)
    if (x.prefix_tokens(i) < 0 || x.prefix_tokens(i) >= m.vocab_size())
      fail(w, "prefix_tokens[" + std::to_string(i) + "]: id " + std::to_string(x.prefix_tokens(i)) +
                  " outside the vocabulary of " + std::to_string(m.vocab_size()));
  const uint64_t prefix_bytes = checked_product({uint64_t(m.n_layers()), 2, H, P, D, sizeof(float)}, w, "prefix");
  auto in_file = [&](uint64_t off, uint64_t bytes, const std::string& field) {
    if (off < data_start || off % sizeof(float) != 0 || off > size || bytes > size - off)
      fail(w, field + ": offset " + std::to_string(off) + " + " + std::to_string(bytes) +
                  " bytes outside the data of a " + std::to_string(size) + "-byte file (truncated?)");
  };
  in_file(x.prefix_offset(), prefix_bytes, "prefix_offset");
  struct Block {
    uint64_t offset, bytes;
    std::string field;
    bool operator<(const Block& o) const { return offset < o.offset; }
  };
  std::vector<Block> blocks = {{x.prefix_offset(), prefix_bytes, "prefix_offset"}};
  if (x.max_chunk_tokens() < 1) fail(w, "max_chunk_tokens: expected >= 1");
  std::set<std::string> ids;
  for (int c = 0; c < x.chunks_size(); ++c) {
    const bank::BankChunk& ch = x.chunks(c);
    const std::string f = "chunks[" + std::to_string(c) + "]";
    if (ch.id().empty() || !ids.insert(ch.id()).second) fail(w, f + ".id: empty or duplicate");
    if (ch.n_tokens() < 1 || ch.n_tokens() > x.max_chunk_tokens()) fail(w, f + ".n_tokens: out of range");
    if (uint64_t(ch.valid_count_size()) != L * H)
      fail(w, f + ".valid_count: expected " + std::to_string(L * H) + " values");
    if (uint64_t(ch.selected_size()) != L * H * K)
      fail(w, f + ".selected: expected " + std::to_string(L * H * K) + " values");
    const int valid = std::min<int>(x.k(), ch.n_tokens());
    for (uint64_t s = 0; s < L * H; ++s) {
      if (ch.valid_count(int(s)) != valid)
        fail(w, f + ".valid_count: expected min(k, n_tokens) = " + std::to_string(valid));
      for (int i = 0; i < x.k(); ++i) {
        const int32_t v = ch.selected(int(s * K + i));
        const bool ok =
            i < valid ? (v >= 0 && v < ch.n_tokens() && (i == 0 || v > ch.selected(int(s * K + i - 1)))) : v == -1;
        if (!ok) fail(w, f + ".selected: not ascending in [0, n_tokens) then -1 padding");
      }
    }
    // Texts are all there (a bank written with them) or all absent (one written before them).
    if (ch.text().empty() != x.chunks(0).text().empty())
      fail(w, f + ".text: " +
                  (ch.text().empty() ? "missing while chunks[0] has one" : "present while chunks[0] has none"));
    in_file(ch.offset(), x.chunk_bytes(), f + ".offset");
    blocks.push_back({ch.offset(), x.chunk_bytes(), f + ".offset"});
  }
  // Every tensor block has bytes of its own: no chunk shares (or overlaps) another's or the prefix's.
  std::sort(blocks.begin(), blocks.end());
  for (size_t i = 1; i < blocks.size(); ++i)
    if (blocks[i].offset < blocks[i - 1].offset + blocks[i - 1].bytes)
      fail(w, blocks[i].field + ": block at " + std::to_string(blocks[i].offset) + " overlaps " + blocks[i - 1].field +
                  "'s");
}

const float* MemoryBank::chunk_vector(int chunk, int m, int kv, int g, int slot) const {
  const auto& x = index_;
  const size_t off =
      x.chunks(chunk).offset() + bank_vector_index(m, kv, g, slot, x.n_kv_heads(), x.k(), x.head_dim()) * sizeof(float);
  return reinterpret_cast<const float*>(data() + off);
}

const float* MemoryBank::prefix_vector(int layer, int kv, int g, int pos) const {
  const auto& x = index_;
  const int P = x.prefix_tokens_size();
  const size_t off =
      x.prefix_offset() + bank_vector_index(layer, kv, g, pos, x.n_kv_heads(), P, x.head_dim()) * sizeof(float);
  return reinterpret_cast<const float*>(data() + off);
}

void MemoryBank::verify_chunk(int ci) const {
  if (ci < 0 || ci >= n_chunks()) fail(name_, "chunk index " + std::to_string(ci) + " out of range");
  const bank::BankChunk& ch = index_.chunks(ci);
  if (crc32(byte_view(chunk_vector(ci, 0, 0, 0, 0), index_.chunk_bytes())) != ch.block_crc())
    fail(name_, "chunks[" + std::to_string(ci) + "] ('" + ch.id() + "'): tensor block CRC-32 mismatch (corrupted)");
}

void MemoryBank::check_model(const ModelConfig& c) const {
  const bank::BankModel& m = index_.model();
  if (m.n_layers() != c.n_layers || m.n_heads() != c.n_heads || m.n_kv_heads() != c.n_kv_heads ||
      m.head_dim() != c.head_dim)
    fail(name_, "model: written for " + m.name() + " (" + std::to_string(m.n_layers()) + " layers, " +
                    std::to_string(m.n_kv_heads()) + " KV heads, head_dim " + std::to_string(m.head_dim()) +
                    "), not for this model");
}

}  // namespace nammkit
