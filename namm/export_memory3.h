// Memory3 export target (spec memory3_bmojo.md §2.2-2.4, §5.2): explicit memories. This module is
// the pipeline (options, encoding reference chunks, building a bank, injecting one into a Session);
// the selectors are namm/memory3_selectors.h, the bank file format namm/memory_bank.h.
//
// Write path. Each reference chunk (≤ 128 tokens) is encoded on its own as
//   [BOS] [prefix tokens ("Reference:")] [chunk tokens]       at positions 0 .. P + n - 1,
// and for every memory layer and KV head a selector keeps EXACTLY k chunk tokens (all n when
// n < k; valid_count records how many). BOS and prefix tokens are never candidates. Their post-RoPE
// keys and values are stored in a memory bank file (namm/memory_bank.h); the prefix KV (the same for
// every chunk, attention is causal) is stored once for all layers, because Memory3 prepends the
// modified BOS at every layer during inference.
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
#include <vector>

#include "namm/export_bank.pb.h"
#include "namm/memory_bank.h"
#include "namm/namm_scoring.h"
#include "transformer/model.h"
#include "transformer/session.h"

namespace nammkit {

enum class Memory3Selector : uint8_t { Namm, ExpSum, SoftmaxSum, Random, First, Last };
const char* memory3_selector_name(Memory3Selector s);  // "namm", "exp-sum", ...
Memory3Selector parse_memory3_selector(const std::string& name, const std::string& where);

// "first-half" (default: [0, L/2), at least 1), "all", "middle-half" ([L/4, 3L/4)), "A-B"
// (inclusive) or a comma list "0,2,4". Returns ascending unique layers; Error naming `where`.
std::vector<int> parse_memory_layers(const std::string& spec, int n_layers, const std::string& where);

struct Memory3Options {
  int k = 8;                // tokens per (memory layer, KV head)
  std::vector<int> layers;  // memory layers; empty = first half
  Memory3Selector selector = Memory3Selector::Namm;
  std::string prefix = "Reference:";  // text after BOS, encoded without BOS
  int max_chunk_tokens = 128;         // chunk tokens after the prefix
  uint64_t seed = 0;                  // random selector
  bool attention_bf16 = false;        // NAMM selector: round the attention it scores (the policy file's flag)
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
  std::vector<float> last_logits;  // [vocab] after the last token
};
// attention_bf16: round the captured attention to bf16, as a policy evolved on bf16 attention saw it.
ReferenceForward encode_reference(const Model& model, std::span<const int32_t> tokens, bool with_attention,
                                  bool attention_bf16 = false);

struct ReferenceChunk {
  std::string id;
  std::string text;
};
// JSONL with one {"id": string|number, "text": string} per line (blank lines skipped). Errors name
// the file and line.
std::vector<ReferenceChunk> read_reference_chunks(const std::string& path);

struct EncodedReference {
  std::string id;
  std::string text;             // the chunk's text (stored in the bank for the retriever)
  std::vector<int32_t> tokens;  // BOS + prefix + chunk
  int prefix_len = 0;           // P: BOS + prefix tokens
  int n_chunk() const { return static_cast<int>(tokens.size()) - prefix_len; }
  ReferenceForward forward;
};
// Tokenises and encodes one chunk. A chunk longer than max_chunk_tokens (or empty) is an Error
// "<where>: chunk '<id>': ...", where `where` names the file and line.
EncodedReference encode_chunk(const Model& model, const ReferenceChunk& chunk, const Memory3Options& options,
                              const std::string& where);

// Builds a bank in memory, chunk by chunk, and serialises it.
class MemoryBankWriter {
 public:
  // `policy_sha256` identifies the policy file that drove selection ("" for policy-free selectors).
  MemoryBankWriter(const Model& model, Memory3Options options, std::string policy_sha256);
  // Selects its tokens (namm/memory3_selectors.h; `namm` for the namm selector) and stores one
  // chunk. Ids must be unique; every chunk must share the first chunk's prefix tokens.
  void add(const EncodedReference& ref, const NammScoring* namm);
  std::string serialize() const;
  void save(const std::string& path) const;  // atomic

 private:
  const Model& model_;
  Memory3Options options_;
  bank::BankIndex index_;
  std::vector<float> prefix_kv_;            // [layers][2][kv][P][d]
  std::vector<std::vector<float>> blocks_;  // one [mem layer][2][kv][k][d] per chunk
};

// The read path: session.reset(), then the prefix KV at every layer and the selected KV of the
// chunks `chunk_indices` at the memory layers (Session::inject), then set_position(P + the longest
// injected chunk). Returns that position. The Session must have no policy that could evict them
// before the prompt (none is needed for Memory3).
int64_t inject_memories(Session& session, const MemoryBank& bank, std::span<const int> chunk_indices);

}  // namespace nammkit
