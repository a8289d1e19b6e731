#include "namm/export_memory3.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "namm/memory3_selectors.h"
#include "transformer/rope.h"

namespace nammkit {
namespace {

// `n` raw bytes at `p` (tensor blocks, token ids) as a view for crc32() and fnv1a64().
std::string_view byte_view(const void* p, size_t n) { return {static_cast<const char*>(p), n}; }

// The bank's token_hash: FNV-1a 64 over the ids' little-endian bytes (the host's layout: byte_io.h
// checks it is little-endian), 16 hex digits.
std::string token_hash_hex(std::span<const int32_t> tokens) {
  return hex64(fnv1a64(byte_view(tokens.data(), tokens.size_bytes())));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names and options

const char* memory3_selector_name(Memory3Selector s) {
  switch (s) {
    case Memory3Selector::Namm: return "namm";
    case Memory3Selector::ExpSum: return "exp-sum";
    case Memory3Selector::SoftmaxSum: return "softmax-sum";
    case Memory3Selector::Random: return "random";
    case Memory3Selector::First: return "first";
    case Memory3Selector::Last: return "last";
  }
  return "?";
}

Memory3Selector parse_memory3_selector(const std::string& name, const std::string& where) {
  for (Memory3Selector s : {Memory3Selector::Namm, Memory3Selector::ExpSum, Memory3Selector::SoftmaxSum,
                            Memory3Selector::Random, Memory3Selector::First, Memory3Selector::Last})
    if (name == memory3_selector_name(s)) return s;
  fail(where, "selector: expected namm|exp-sum|softmax-sum|random|first|last, got '" + name + "'");
}

std::vector<int> parse_memory_layers(const std::string& spec, int n_layers, const std::string& where) {
  std::vector<int> layers;
  auto to_int = [&](const std::string& s) { return static_cast<int>(parse_int(s, where, "layers", 0, n_layers - 1)); };
  if (spec.empty() || spec == "first-half") {
    for (int l = 0; l < std::max(1, n_layers / 2); ++l) layers.push_back(l);
  } else if (spec == "all") {
    for (int l = 0; l < n_layers; ++l) layers.push_back(l);
  } else if (spec == "middle-half") {
    for (int l = n_layers / 4; l < std::max(n_layers / 4 + 1, 3 * n_layers / 4); ++l) layers.push_back(l);
  } else if (const size_t dash = spec.find('-'); dash != std::string::npos) {
    const int a = to_int(spec.substr(0, dash)), b = to_int(spec.substr(dash + 1));
    if (b < a) fail(where, "layers: empty range '" + spec + "'");
    for (int l = a; l <= b; ++l) layers.push_back(l);
  } else {
    std::stringstream ss(spec);
    for (std::string item; std::getline(ss, item, ',');) layers.push_back(to_int(item));
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

// ---------------------------------------------------------------------------------------------
// Encoding one reference

namespace {

// A MemoryPolicy that keeps everything and copies, per KV head, the GQA-averaged causal attention
// the runtime hands to policies: with the whole sequence in one update window it is [T][T].
class AttentionCapture final : public MemoryPolicy {
 public:
  explicit AttentionCapture(std::vector<std::vector<std::vector<float>>>& out) : out_(out) {}
  std::string name() const override { return "attention-capture"; }
  bool needs_attention() const override { return true; }
  KeepLists update(const LayerWindow& w) override {
    auto& layer = out_.at(w.layer);
    layer.resize(w.heads.size());
    for (size_t g = 0; g < w.heads.size(); ++g) {
      const HeadWindow& h = w.heads[g];
      if (h.n_keys != w.n_queries)  // a fresh sequence in one window: every key is one of its queries
        fail("encode_reference",
             "attention window: " + std::to_string(w.n_queries) + " queries, " + std::to_string(h.n_keys) + " keys");
      layer[g].assign(h.attention, h.attention + size_t(w.n_queries) * h.n_keys);
    }
    return {};
  }

 private:
  std::vector<std::vector<std::vector<float>>>& out_;
};

}  // namespace

// The runtime's own forward pass (Session), observed: pre-RoPE projections from the projection
// observer, RoPE applied with the Session's functions, attention from a capturing policy that runs
// once, right after the single chunk.
ReferenceForward encode_reference(const Model& model, std::span<const int32_t> tokens, bool with_attention,
                                  bool attention_bf16) {
  const ModelConfig& c = model.config;
  const int T = static_cast<int>(tokens.size());
  if (T < 1) fail("encode_reference", "tokens: empty sequence");
  ReferenceForward f;
  f.n_tokens = T;
  f.q_pre.resize(c.n_layers), f.k_pre.resize(c.n_layers), f.v.resize(c.n_layers);
  if (with_attention) f.attention.resize(c.n_layers);

  AttentionCapture capture(f.attention);
  SessionOptions options;
  options.prefill_chunk = T;    // one chunk: every observer call covers the whole sequence
  options.update_interval = T;  // one policy update, right after it, over all T queries
  options.attention_bf16 = attention_bf16;
  Session session(model, with_attention ? &capture : nullptr, options);
  session.set_projection_observer([&](int l, int n, int64_t first, const float* q, const float* k, const float* v) {
    if (n != T || first != 0) fail("encode_reference", "expected the sequence as one chunk from position 0");
    f.q_pre[l].assign(q, q + size_t(T) * c.q_dim());
    f.k_pre[l].assign(k, k + size_t(T) * c.kv_dim());
    f.v[l].assign(v, v + size_t(T) * c.kv_dim());
  });
  f.last_logits = session.feed(tokens);

  const std::vector<double> inv_freq = rope_inverse_frequencies(c);
  f.q_rope = f.q_pre;
  f.k_rope = f.k_pre;
  for (int l = 0; l < c.n_layers; ++l)
    for (int t = 0; t < T; ++t) {
      apply_rope(f.q_rope[l].data() + size_t(t) * c.q_dim(), c.n_heads, c.head_dim, t, inv_freq, c.rope_style);
      apply_rope(f.k_rope[l].data() + size_t(t) * c.kv_dim(), c.n_kv_heads, c.head_dim, t, inv_freq, c.rope_style);
    }
  return f;
}

std::vector<ReferenceChunk> read_reference_chunks(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<ReferenceChunk> chunks;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ": line " + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) fail(where, "expected an object {\"id\": ..., \"text\": ...}");
    ReferenceChunk c;
    if (!j.contains("id")) fail(where, "id: missing");
    if (j["id"].is_string()) c.id = j["id"].get<std::string>();
    else if (j["id"].is_number_integer()) c.id = std::to_string(j["id"].get<int64_t>());
    else fail(where, "id: expected a string or an integer");
    if (c.id.empty()) fail(where, "id: empty");
    if (!j.contains("text") || !j["text"].is_string()) fail(where, "text: missing or not a string");
    c.text = j["text"].get<std::string>();
    chunks.push_back(std::move(c));
  }
  if (chunks.empty()) fail(path, "no chunks");
  return chunks;
}

EncodedReference encode_chunk(const Model& model, const ReferenceChunk& chunk, const Memory3Options& options,
                              const std::string& where) {
  const Tokenizer& tok = model.tokenizer;
  if (tok.empty()) fail(model.path, "tokenizer: the model has none (needed to encode reference chunks)");
  EncodedReference r;
  r.id = chunk.id;
  r.text = chunk.text;
  if (tok.adds_bos()) r.tokens.push_back(tok.bos_id());
  for (int32_t t : tok.encode(options.prefix, false)) r.tokens.push_back(t);
  r.prefix_len = static_cast<int>(r.tokens.size());
  const std::vector<int32_t> body = tok.encode(chunk.text, false);
  if (body.empty()) fail(where, "chunk '" + chunk.id + "': text: no tokens");
  if (static_cast<int>(body.size()) > options.max_chunk_tokens)
    fail(where, "chunk '" + chunk.id + "': text: " + std::to_string(body.size()) + " tokens after the prefix, limit " +
                    std::to_string(options.max_chunk_tokens));
  r.tokens.insert(r.tokens.end(), body.begin(), body.end());
  if (static_cast<int>(r.tokens.size()) > model.config.max_seq_len && model.config.max_seq_len > 0)
    fail(where, "chunk '" + chunk.id + "': prefix + chunk exceed the model context " +
                    std::to_string(model.config.max_seq_len));
  r.forward = encode_reference(model, r.tokens, options.selector == Memory3Selector::Namm, options.attention_bf16);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Writing

MemoryBankWriter::MemoryBankWriter(const Model& model, Memory3Options options, std::string policy_sha256)
    : model_(model), options_(std::move(options)) {
  const ModelConfig& c = model.config;
  if (options_.max_chunk_tokens < 1) fail("memory bank", "max_chunk_tokens: expected >= 1");
  if (options_.k < 1 || options_.k > options_.max_chunk_tokens)  // the reader refuses any other k
    fail("memory bank", "k: expected 1 .. max_chunk_tokens (" + std::to_string(options_.max_chunk_tokens) + "), got " +
                            std::to_string(options_.k));
  if (options_.layers.empty()) options_.layers = parse_memory_layers("first-half", c.n_layers, "memory bank");
  for (size_t i = 0; i < options_.layers.size(); ++i)
    if (options_.layers[i] < 0 || options_.layers[i] >= c.n_layers ||
        (i && options_.layers[i] <= options_.layers[i - 1]))
      fail("memory bank", "layers: expected ascending layers in [0, " + std::to_string(c.n_layers) + ")");
  index_.set_format_version(kBankFormatVersion);
  bank::BankModel* m = index_.mutable_model();
  m->set_name(c.name), m->set_path(model.path), m->set_n_layers(c.n_layers), m->set_n_heads(c.n_heads);
  m->set_n_kv_heads(c.n_kv_heads), m->set_head_dim(c.head_dim), m->set_vocab_size(c.vocab_size);
  index_.set_policy_sha256(std::move(policy_sha256));
  index_.set_selector(memory3_selector_name(options_.selector));
  index_.set_k(options_.k);
  for (int l : options_.layers) index_.add_layers(l);
  index_.set_n_kv_heads(c.n_kv_heads);
  index_.set_head_dim(c.head_dim);
  index_.set_dtype("f32");
  index_.set_prefix_text(options_.prefix);
  index_.set_max_chunk_tokens(options_.max_chunk_tokens);
  index_.set_gqa_aggregation("mean");
  const Memory3Selector s = options_.selector;
  index_.set_attn_mode(s == Memory3Selector::Namm                                           ? "causal_rope"
                       : (s == Memory3Selector::ExpSum || s == Memory3Selector::SoftmaxSum) ? "noncausal_norope"
                                                                                            : "none");
  index_.set_seed(options_.seed);
  index_.set_chunk_bytes(uint64_t(options_.layers.size()) * 2 * c.n_kv_heads * options_.k * c.head_dim * sizeof(float));
}

void MemoryBankWriter::add(const EncodedReference& r, const NammScoring* namm) {
  const ModelConfig& c = model_.config;
  const int d = c.head_dim, H = c.n_kv_heads, k = options_.k, P = r.prefix_len, n = r.n_chunk();
  for (const auto& ch : index_.chunks())
    if (ch.id() == r.id) fail("memory bank", "chunk '" + r.id + "': duplicate id");
  if (n < 1 || n > options_.max_chunk_tokens)
    fail("memory bank", "chunk '" + r.id + "': bad length " + std::to_string(n));
  if (index_.prefix_tokens_size() == 0) {
    for (int i = 0; i < P; ++i) index_.add_prefix_tokens(r.tokens[i]);
    prefix_kv_.assign(size_t(c.n_layers) * 2 * H * P * d, 0.0f);
    for (int l = 0; l < c.n_layers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int g = 0; g < H; ++g)
          for (int p = 0; p < P; ++p) {
            const auto& src = kv == 0 ? r.forward.k_rope[l] : r.forward.v[l];
            std::copy_n(src.data() + size_t(p) * c.kv_dim() + g * d, d,
                        prefix_kv_.data() + bank_vector_index(l, kv, g, p, H, P, d));
          }
  } else if (!std::equal(r.tokens.begin(), r.tokens.begin() + P, index_.prefix_tokens().begin(),
                         index_.prefix_tokens().end())) {
    fail("memory bank", "chunk '" + r.id + "': prefix tokens differ from the bank's");
  }
  bank::BankChunk* ch = index_.add_chunks();
  ch->set_id(r.id);
  ch->set_token_hash(token_hash_hex(std::span<const int32_t>(r.tokens.data() + P, n)));
  ch->set_n_tokens(n);
  if (r.text.empty()) fail("memory bank", "chunk '" + r.id + "': text: empty (the retriever needs it)");
  ch->set_text(r.text);
  const int L = static_cast<int>(options_.layers.size());
  std::vector<float> block(size_t(L) * 2 * H * k * d, 0.0f);
  for (int m = 0; m < L; ++m) {
    const int l = options_.layers[m];
    for (int g = 0; g < H; ++g) {
      const std::vector<int32_t> sel = select_reference_tokens(r, l, g, c, options_, namm);
      ch->add_valid_count(static_cast<int>(sel.size()));
      for (int s = 0; s < k; ++s) ch->add_selected(s < int(sel.size()) ? sel[s] : -1);
      for (int s = 0; s < int(sel.size()); ++s)
        for (int kv = 0; kv < 2; ++kv) {
          const auto& src = kv == 0 ? r.forward.k_rope[l] : r.forward.v[l];
          std::copy_n(src.data() + size_t(P + sel[s]) * c.kv_dim() + g * d, d,
                      block.data() + bank_vector_index(m, kv, g, s, H, k, d));
        }
    }
  }
  ch->set_block_crc(crc32(byte_view(block.data(), block.size() * sizeof(float))));
  blocks_.push_back(std::move(block));
}

std::string MemoryBankWriter::serialize() const { return serialize_bank(index_, prefix_kv_, blocks_); }

void MemoryBankWriter::save(const std::string& path) const {
  std::string bytes = serialize();
  MemoryBank::from_bytes(bytes, path);  // validated before it reaches the disk: no bank its reader rejects
  write_file_atomic(path, bytes);
}

// ---------------------------------------------------------------------------------------------
// Read path

int64_t inject_memories(Session& session, const MemoryBank& bank, std::span<const int> chunk_indices) {
  const ModelConfig& c = session.model().config;
  bank.check_model(c);
  const bank::BankIndex& x = bank.index();
  // The index CRC does not cover the tensors (they are mapped lazily); check the ones used.
  for (int ci : chunk_indices) bank.verify_chunk(ci);
  session.reset();
  const int P = x.prefix_tokens_size();
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g)
      for (int p = 0; p < P; ++p)
        session.inject(l, g, bank.prefix_vector(l, 0, g, p), bank.prefix_vector(l, 1, g, p), p);
  int longest = 0;
  for (int ci : chunk_indices) {
    const bank::BankChunk& ch = x.chunks(ci);
    longest = std::max(longest, ch.n_tokens());
    for (int m = 0; m < x.layers_size(); ++m)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        const int slot_base = (m * c.n_kv_heads + g) * x.k();
        for (int s = 0; s < ch.valid_count(m * c.n_kv_heads + g); ++s)
          session.inject(x.layers(m), g, bank.chunk_vector(ci, m, 0, g, s), bank.chunk_vector(ci, m, 1, g, s),
                         P + ch.selected(slot_base + s));
      }
  }
  session.set_position(P + longest);
  return P + longest;
}

}  // namespace nammkit
