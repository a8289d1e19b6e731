// Memory3 export target (spec memory3_bmojo.md §2.2-2.4, §5.2): explicit memories.
//
// Write path. Each reference chunk (≤ 128 tokens) is encoded on its own as
//   [BOS] [prefix tokens ("Reference:")] [chunk tokens]       at positions 0 .. P + n - 1,
// and for every memory layer and KV head a selector keeps EXACTLY k chunk tokens (all n when
// n < k; valid_count records how many). BOS and prefix tokens are never candidates. Their post-RoPE
// keys and values are stored in a memory bank file; the prefix KV (the same for every chunk,
// attention is causal) is stored once for all layers, because Memory3 prepends the modified BOS at
// every layer during inference.
//
// Selectors (scores over the chunk's n tokens; top-k by score, ties to the lower index, the kept
// indices sorted ascending):
//   namm         NAMM features over the chunk's own causal attention (GQA-averaged, RoPE; what the
//                encoder forward pass produces and what NAMM was trained on), the chunk being one
//                update window of a fresh spectrogram state; then BAM scores (namm_bam) or the linear
//                read-out (namm_mlp) with the policy's parameters and normalisation statistics.
//                The STFT needs n_q % hop == 0: the [n, n] matrix is zero-padded to [n_q, n_q],
//                n_q = n rounded up to a multiple of hop; padding keys receive no attention and
//                padding queries give none, and both are dropped before scoring.
//                Recency: r_j = (n - 1) - j.
//   exp-sum      Memory3 as implemented: w_j = Σ_i exp(q_i·k_j/√d), pre-RoPE q and k, no causal mask,
//                queries and keys = the chunk tokens. Per query head, then the MEAN over the query
//                heads of the KV group (the paper leaves GQA open; the bank records "mean"). Computed
//                in log space, so large logits cannot overflow.
//   softmax-sum  Memory3's stated rule: w_j = Σ_i softmax_j(q_i·k_j/√d), same inputs and aggregation.
//   random       seeded uniform scores per (chunk tokens, layer, head): reproducible.
//   first / last the k oldest / newest chunk tokens.
//
// Pre-RoPE q and k are not in the runtime's cache (it stores post-RoPE keys only), so the chunk is
// encoded by encode_reference(): the chunk runs through a Session as one prefill chunk, its
// projection observer records q/k (before RoPE) and v per layer, RoPE is applied with the Session's
// own functions, and a capturing policy, updated once right after the chunk, records the causal
// attention the runtime hands to memory policies. Tests check its keys/values against a Session's
// cache and the read path against feeding the chunk in context.
//
// Read path: inject_memories() puts the prefix KV (all layers) and the selected KV of the chosen
// chunks (memory layers) into a freshly reset Session as memory entries, at their stored positions
// (parallel positions: every memory's chunk tokens lie in P .. P + 127), then moves the Session to
// P + the longest injected chunk, so the prompt continues right after them.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "namm/export_bank.pb.h"
#include "namm/namm_policy.h"
#include "namm/policy.pb.h"
#include "core/file_io.h"
#include "transformer/model.h"
#include "transformer/session.h"

namespace nammkit {

inline constexpr uint32_t kBankFormatVersion = 1;
inline constexpr int kBankHeaderBytes = 24;  // magic 8 + version 4 + CRC 4 + index length 8
inline constexpr int kBankAlignment = 64;    // tensor blocks start at multiples of this

enum class Memory3Selector : uint8_t { Namm, ExpSum, SoftmaxSum, Random, First, Last };
const char* memory3_selector_name(Memory3Selector s);  // "namm", "exp-sum", ...
Memory3Selector parse_memory3_selector(const std::string& name, const std::string& where);

// "first-half" (default: [0, L/2), at least 1), "all", "middle-half" ([L/4, 3L/4)), "A-B"
// (inclusive) or a comma list "0,2,4". Returns ascending unique layers; Error naming `where`.
std::vector<int> parse_memory_layers(const std::string& spec, int n_layers, const std::string& where);

struct Memory3Options {
  int k = 8;                         // tokens per (memory layer, KV head)
  std::vector<int> layers;           // memory layers; empty = first half
  Memory3Selector selector = Memory3Selector::Namm;
  std::string prefix = "Reference:"; // text after BOS, encoded without BOS
  int max_chunk_tokens = 128;        // chunk tokens after the prefix
  uint64_t seed = 0;                 // random selector
};

// The NAMM pieces the namm selector needs, from a (validated) NAMM policy file.
struct NammScoring {
  NammConfig config;
  std::vector<float> params;
  FeatureNormalizer normalizer;
  static NammScoring from(const PolicyFile& file);
};

// Per-layer tensors of one sequence run on its own (T tokens from position 0).
struct ReferenceForward {
  int n_tokens = 0;
  std::vector<std::vector<float>> q_pre, q_rope;  // [layer][T][q_dim]
  std::vector<std::vector<float>> k_pre, k_rope;  // [layer][T][kv_dim]
  std::vector<std::vector<float>> v;              // [layer][T][kv_dim]
  // [layer][kv_head][T][T]: causal post-softmax attention averaged over the group's query heads
  // (0 above the diagonal); empty unless requested.
  std::vector<std::vector<std::vector<float>>> attention;
  std::vector<float> last_logits;                 // [vocab] after the last token
};
ReferenceForward encode_reference(const Model& model, std::span<const int32_t> tokens, bool with_attention);

struct ReferenceChunk {
  std::string id;
  std::string text;
};
// JSONL with one {"id": string|number, "text": string} per line (blank lines skipped). Errors name
// the file and line.
std::vector<ReferenceChunk> read_reference_chunks(const std::string& path);

struct EncodedReference {
  std::string id;
  std::vector<int32_t> tokens;  // BOS + prefix + chunk
  int prefix_len = 0;           // P: BOS + prefix tokens
  int n_chunk() const { return static_cast<int>(tokens.size()) - prefix_len; }
  ReferenceForward forward;
};
// Tokenises and encodes one chunk. A chunk longer than max_chunk_tokens (or empty) is an Error
// "<where>: chunk '<id>': ...", where `where` names the file and line.
EncodedReference encode_chunk(const Model& model, const ReferenceChunk& chunk, const Memory3Options& options,
                              const std::string& where);

// Per-token scores of the chunk's n tokens for one (layer, KV head) under a selector. `namm` is
// required for Memory3Selector::Namm.
std::vector<float> score_reference(const EncodedReference& ref, int layer, int kv_head, const ModelConfig& config,
                                   const Memory3Options& options, const NammScoring* namm);
// The min(k, n) indices with the highest scores, ties to the lower index, ascending. NaN ranks last.
std::vector<int32_t> top_k_lower_index(std::span<const float> scores, int k);
// Both of the above. Chunk-relative indices (0 = the first token after the prefix).
std::vector<int32_t> select_reference_tokens(const EncodedReference& ref, int layer, int kv_head,
                                             const ModelConfig& config, const Memory3Options& options,
                                             const NammScoring* namm);

// Attention-output fidelity (model-free, spec §5.4 metric 1): the queries `queries_TxQ` (post-RoPE,
// [T][q_dim]) of one layer attend, per query head, over (a) the chunk's n keys/values of its KV head
// and (b) only the `selected` ones; returns mean over query heads and queries of
// ‖o_sparse − o_full‖ / ‖o_full‖. keys/values are [n][kv_dim] (post-RoPE), selected[g] per KV head.
double attention_output_error(const ModelConfig& config, const float* queries_TxQ, int n_queries, const float* keys_NxKV,
                              const float* values_NxKV, int n, const std::vector<std::vector<int32_t>>& selected);

// Builds a bank in memory, chunk by chunk, and serialises it.
class MemoryBankWriter {
 public:
  // `policy_sha256` identifies the policy file that drove selection ("" for policy-free selectors).
  MemoryBankWriter(const Model& model, Memory3Options options, std::string policy_sha256);
  // Selects and stores one chunk. Ids must be unique.
  void add(const EncodedReference& ref, const NammScoring* namm);
  int size() const { return index_.chunks_size(); }
  std::string serialize() const;
  void save(const std::string& path) const;  // atomic

 private:
  const Model& model_;
  Memory3Options options_;
  bank::BankIndex index_;
  std::vector<float> prefix_kv_;             // [layers][2][kv][P][d]
  std::vector<std::vector<float>> blocks_;   // one [mem layer][2][kv][k][d] per chunk
};

// A bank read back: memory-mapped from a file, or held in memory. Construction validates the
// header, CRC, index fields, sizes and every offset; problems are Errors "<file>: <field>: ...".
class MemoryBank {
 public:
  static MemoryBank open(const std::string& path);
  static MemoryBank from_bytes(std::string bytes, const std::string& name);
  MemoryBank(MemoryBank&&) noexcept = default;
  MemoryBank& operator=(MemoryBank&&) noexcept = default;

  const bank::BankIndex& index() const { return index_; }
  const std::string& name() const { return name_; }
  int n_chunks() const { return index_.chunks_size(); }
  int find(const std::string& id) const;  // -1 when absent
  // The stored [d] key or value (kv = 0 key, 1 value) of slot `slot` of memory-layer slot `m`.
  const float* chunk_vector(int chunk, int m, int kv, int kv_head, int slot) const;
  const float* prefix_vector(int layer, int kv, int kv_head, int pos) const;
  // Errors unless the bank was written for a model of this shape.
  void check_model(const ModelConfig& config) const;

 private:
  MemoryBank() = default;
  void parse_and_validate();
  const uint8_t* data() const { return mapped_.data() ? mapped_.data() : reinterpret_cast<const uint8_t*>(owned_.data()); }
  size_t size() const { return mapped_.data() ? mapped_.size() : owned_.size(); }

  std::string name_;
  MappedFile mapped_;
  std::string owned_;
  bank::BankIndex index_;
};

// The read path: session.reset(), then the prefix KV at every layer and the selected KV of the
// chunks `chunk_indices` at the memory layers (Session::inject), then set_position(P + the longest
// injected chunk). Returns that position. The Session must have no policy that could evict them
// before the prompt (none is needed for Memory3).
int64_t inject_memories(Session& session, const MemoryBank& bank, std::span<const int> chunk_indices);

// SHA-256 of `bytes`, lower-case hex (identifies the policy file in the bank).
std::string sha256_hex(std::string_view bytes);
// FNV-1a 64 of token ids, 16 hex digits.
std::string token_hash_hex(std::span<const int32_t> tokens);

}  // namespace nammkit
