#include "namm/export_memory3.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "namm/policy_file.h"
#include "core/byte_io.h"
#include "core/error.h"
#include "core/text.h"
#include "transformer/rope.h"

namespace nammkit {
namespace {

constexpr char kBankMagic[8] = {'N', 'A', 'M', 'M', 'B', 'A', 'N', 'K'};

// `n` raw bytes at `p` (tensor blocks, token ids) as a view for crc32() and fnv1a64().
std::string_view byte_view(const void* p, size_t n) { return {static_cast<const char*>(p), n}; }

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

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

NammScoring NammScoring::from(const PolicyFile& file) {
  validate_policy_file(file, "policy");
  if (file.kind() != POLICY_NAMM_BAM && file.kind() != POLICY_NAMM_MLP)
    fail("policy", std::string("kind: the namm selector needs a NAMM policy, got ") + policy_kind_name(file.kind()));
  return NammScoring{namm_config_from(file), std::vector<float>(file.params().begin(), file.params().end()),
                     normalizer_from(file)};
}

// ---------------------------------------------------------------------------------------------
// Hashes

std::string sha256_hex(std::string_view bytes) {
  static constexpr uint32_t K[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string m(bytes);
  const uint64_t bits = uint64_t(bytes.size()) * 8;
  m.push_back(char(0x80));
  while (m.size() % 64 != 56) m.push_back(0);
  for (int i = 7; i >= 0; --i) m.push_back(char((bits >> (8 * i)) & 0xFF));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(uint8_t(m[off + 4 * i])) << 24 | uint32_t(uint8_t(m[off + 4 * i + 1])) << 16 |
             uint32_t(uint8_t(m[off + 4 * i + 2])) << 8 | uint32_t(uint8_t(m[off + 4 * i + 3]));
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  char out[65];
  for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", h[i]);
  return std::string(out, 64);
}

// FNV-1a over the ids' little-endian bytes (the host's layout: byte_io.h checks it is little-endian).
std::string token_hash_hex(std::span<const int32_t> tokens) {
  return hex64(fnv1a64(byte_view(tokens.data(), tokens.size_bytes())));
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
        fail("encode_reference", "attention window: " + std::to_string(w.n_queries) + " queries, " +
                                     std::to_string(h.n_keys) + " keys");
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
ReferenceForward encode_reference(const Model& model, std::span<const int32_t> tokens, bool with_attention) {
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
  options.attention_bf16 = false;
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
    if (j["id"].is_string())
      c.id = j["id"].get<std::string>();
    else if (j["id"].is_number_integer())
      c.id = std::to_string(j["id"].get<int64_t>());
    else
      fail(where, "id: expected a string or an integer");
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
  r.tokens.push_back(tok.bos_id());
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
  r.forward = encode_reference(model, r.tokens, options.selector == Memory3Selector::Namm);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Selection

std::vector<int32_t> top_k_lower_index(std::span<const float> scores, int k) {
  const int n = static_cast<int>(scores.size());
  std::vector<int32_t> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  auto key = [&](int i) { return std::isnan(scores[i]) ? -INFINITY : scores[i]; };
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) > key(b); });
  order.resize(std::min(n, std::max(k, 0)));
  std::sort(order.begin(), order.end());
  return order;
}

namespace {

// NAMM scores of the chunk tokens from their own causal attention (see the header).
std::vector<float> namm_reference_scores(const EncodedReference& r, int layer, int g, const NammScoring& namm) {
  const int T = r.forward.n_tokens, P = r.prefix_len, n = r.n_chunk();
  if (r.forward.attention.empty()) fail("namm selector", "reference '" + r.id + "' was encoded without attention");
  const NammConfig& cfg = namm.config;
  const int hop = cfg.spectrogram.hop, bins = cfg.spectrogram.n_bins(), rec = cfg.recency.dim, F = cfg.n_features();
  const int nq = (n + hop - 1) / hop * hop;
  const auto& A = r.forward.attention[layer][g];
  std::vector<float> att(size_t(nq) * nq, 0.0f);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) att[size_t(i) * nq + j] = A[size_t(P + i) * T + P + j];
  // One spectrogram per call: its FFTW plan is cheap next to the forward pass, and keeping none
  // shared makes concurrent calls safe.
  AttentionSpectrogram spectrogram(cfg.spectrogram);
  SpectralState state;
  spectrogram.update(att.data(), nq, nq, state);
  std::vector<float> x(size_t(n) * F);
  for (int j = 0; j < n; ++j) {
    float* row = x.data() + size_t(j) * F;
    recency_embedding(cfg.recency, int64_t{n - 1 - j}, row);
    namm.normalizer.apply(state.ema_NxB.data() + size_t(j) * bins, row + rec);
  }
  std::vector<float> scores(n);
  score_tokens(cfg.scorer, namm.params, x.data(), n, scores.data());
  return scores;
}

// Memory3's rules over pre-RoPE q/k of the chunk tokens, no causal mask; mean over the group.
std::vector<float> memory3_rule_scores(const EncodedReference& r, int layer, int g, const ModelConfig& c, bool softmax) {
  const int P = r.prefix_len, n = r.n_chunk(), d = c.head_dim, group = c.group_size();
  const auto& q = r.forward.q_pre[layer];
  const auto& k = r.forward.k_pre[layer];
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> s(size_t(n) * n);  // s[i][j] for one query head
  std::vector<double> agg(n, 0.0);
  std::vector<double> log_w(size_t(group) * n);
  for (int hh = 0; hh < group; ++hh) {
    const int h = g * group + hh;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        const float* qi = q.data() + size_t(P + i) * c.q_dim() + h * d;
        const float* kj = k.data() + size_t(P + j) * c.kv_dim() + g * d;
        double acc = 0;
        for (int e = 0; e < d; ++e) acc += double(qi[e]) * kj[e];
        s[size_t(i) * n + j] = acc * scale;
      }
    if (softmax) {
      for (int i = 0; i < n; ++i) {
        const double* row = s.data() + size_t(i) * n;
        const double mx = *std::max_element(row, row + n);
        double sum = 0;
        for (int j = 0; j < n; ++j) sum += std::exp(row[j] - mx);
        for (int j = 0; j < n; ++j) agg[j] += std::exp(row[j] - mx) / sum / group;
      }
    } else {
      for (int j = 0; j < n; ++j) {  // log Σ_i exp(s_ij)
        double mx = -INFINITY;
        for (int i = 0; i < n; ++i) mx = std::max(mx, s[size_t(i) * n + j]);
        double sum = 0;
        for (int i = 0; i < n; ++i) sum += std::exp(s[size_t(i) * n + j] - mx);
        log_w[size_t(hh) * n + j] = mx + std::log(sum);
      }
    }
  }
  std::vector<float> out(n);
  for (int j = 0; j < n; ++j) {
    if (softmax) {
      out[j] = static_cast<float>(agg[j]);
    } else {  // log of the group mean of w_j: logsumexp over heads - log G (monotone in the mean)
      double mx = -INFINITY;
      for (int hh = 0; hh < group; ++hh) mx = std::max(mx, log_w[size_t(hh) * n + j]);
      double sum = 0;
      for (int hh = 0; hh < group; ++hh) sum += std::exp(log_w[size_t(hh) * n + j] - mx);
      out[j] = static_cast<float>(mx + std::log(sum) - std::log(double(group)));
    }
  }
  return out;
}

}  // namespace

std::vector<float> score_reference(const EncodedReference& r, int layer, int kv_head, const ModelConfig& config,
                                   const Memory3Options& options, const NammScoring* namm) {
  const int n = r.n_chunk();
  if (layer < 0 || layer >= config.n_layers || kv_head < 0 || kv_head >= config.n_kv_heads)
    fail("score_reference", "layer/KV head outside the model");
  std::vector<float> scores(n);
  switch (options.selector) {
    case Memory3Selector::Namm:
      if (!namm) fail("score_reference", "selector namm: no NAMM policy given");
      return namm_reference_scores(r, layer, kv_head, *namm);
    case Memory3Selector::ExpSum: return memory3_rule_scores(r, layer, kv_head, config, false);
    case Memory3Selector::SoftmaxSum: return memory3_rule_scores(r, layer, kv_head, config, true);
    case Memory3Selector::Random: {
      const std::span<const int32_t> body(r.tokens.data() + r.prefix_len, n);
      uint64_t h = std::stoull(token_hash_hex(body), nullptr, 16);
      h = splitmix64(options.seed ^ splitmix64(h ^ (uint64_t(layer) << 48) ^ (uint64_t(kv_head) << 32)));
      for (int j = 0; j < n; ++j) {
        h = splitmix64(h);
        scores[j] = static_cast<float>((h >> 40) * (1.0 / 16777216.0));
      }
      return scores;
    }
    case Memory3Selector::First:
      for (int j = 0; j < n; ++j) scores[j] = float(n - j);
      return scores;
    case Memory3Selector::Last:
      for (int j = 0; j < n; ++j) scores[j] = float(j);
      return scores;
  }
  return scores;
}

std::vector<int32_t> select_reference_tokens(const EncodedReference& r, int layer, int kv_head,
                                             const ModelConfig& config, const Memory3Options& options,
                                             const NammScoring* namm) {
  const std::vector<float> scores = score_reference(r, layer, kv_head, config, options, namm);
  return top_k_lower_index(scores, options.k);
}

double attention_output_error(const ModelConfig& c, const float* queries, int n_queries, const float* keys,
                              const float* values, int n, const std::vector<std::vector<int32_t>>& selected) {
  const int d = c.head_dim, group = c.group_size();
  const double scale = 1.0 / std::sqrt(double(d));
  double total = 0;
  int64_t count = 0;
  std::vector<double> logits(n), o_full(d), o_sparse(d);
  for (int t = 0; t < n_queries; ++t)
    for (int h = 0; h < c.n_heads; ++h) {
      const int g = h / group;
      const float* q = queries + size_t(t) * c.q_dim() + h * d;
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int e = 0; e < d; ++e) acc += double(q[e]) * keys[size_t(j) * c.kv_dim() + g * d + e];
        logits[j] = acc * scale;
      }
      auto attend = [&](const std::vector<int32_t>* subset, std::vector<double>& o) {
        std::fill(o.begin(), o.end(), 0.0);
        double mx = -INFINITY, sum = 0;
        const int m = subset ? int(subset->size()) : n;
        auto idx = [&](int i) { return subset ? (*subset)[i] : i; };
        for (int i = 0; i < m; ++i) mx = std::max(mx, logits[idx(i)]);
        for (int i = 0; i < m; ++i) sum += std::exp(logits[idx(i)] - mx);
        for (int i = 0; i < m; ++i) {
          const double p = std::exp(logits[idx(i)] - mx) / sum;
          for (int e = 0; e < d; ++e) o[e] += p * values[size_t(idx(i)) * c.kv_dim() + g * d + e];
        }
      };
      attend(nullptr, o_full);
      attend(&selected[g], o_sparse);
      double num = 0, den = 0;
      for (int e = 0; e < d; ++e) num += (o_sparse[e] - o_full[e]) * (o_sparse[e] - o_full[e]), den += o_full[e] * o_full[e];
      if (den == 0) continue;
      total += std::sqrt(num / den);
      ++count;
    }
  return count ? total / count : 0.0;
}

// ---------------------------------------------------------------------------------------------
// Writing

MemoryBankWriter::MemoryBankWriter(const Model& model, Memory3Options options, std::string policy_sha256)
    : model_(model), options_(std::move(options)) {
  const ModelConfig& c = model.config;
  if (options_.k < 1) fail("memory bank", "k: expected >= 1, got " + std::to_string(options_.k));
  if (options_.max_chunk_tokens < 1) fail("memory bank", "max_chunk_tokens: expected >= 1");
  if (options_.layers.empty()) options_.layers = parse_memory_layers("first-half", c.n_layers, "memory bank");
  for (size_t i = 0; i < options_.layers.size(); ++i)
    if (options_.layers[i] < 0 || options_.layers[i] >= c.n_layers || (i && options_.layers[i] <= options_.layers[i - 1]))
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
  index_.set_attn_mode(s == Memory3Selector::Namm ? "causal_rope"
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
  if (n < 1 || n > options_.max_chunk_tokens) fail("memory bank", "chunk '" + r.id + "': bad length " + std::to_string(n));
  if (index_.prefix_tokens_size() == 0) {
    for (int i = 0; i < P; ++i) index_.add_prefix_tokens(r.tokens[i]);
    prefix_kv_.assign(size_t(c.n_layers) * 2 * H * P * d, 0.0f);
    for (int l = 0; l < c.n_layers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int g = 0; g < H; ++g)
          for (int p = 0; p < P; ++p) {
            const auto& src = kv == 0 ? r.forward.k_rope[l] : r.forward.v[l];
            std::copy_n(src.data() + size_t(p) * c.kv_dim() + g * d, d,
                        prefix_kv_.data() + (((size_t(l) * 2 + kv) * H + g) * P + p) * d);
          }
  } else if (!std::equal(r.tokens.begin(), r.tokens.begin() + P, index_.prefix_tokens().begin(),
                         index_.prefix_tokens().end())) {
    fail("memory bank", "chunk '" + r.id + "': prefix tokens differ from the bank's");
  }
  bank::BankChunk* ch = index_.add_chunks();
  ch->set_id(r.id);
  ch->set_token_hash(token_hash_hex(std::span<const int32_t>(r.tokens.data() + P, n)));
  ch->set_n_tokens(n);
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
                      block.data() + (((size_t(m) * 2 + kv) * H + g) * k + s) * d);
        }
    }
  }
  ch->set_block_crc(crc32(byte_view(block.data(), block.size() * sizeof(float))));
  blocks_.push_back(std::move(block));
}

std::string MemoryBankWriter::serialize() const {
  if (blocks_.empty()) fail("memory bank", "no chunks");
  bank::BankIndex idx = index_;
  const uint64_t prefix_bytes = prefix_kv_.size() * sizeof(float);
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
  out.append(reinterpret_cast<const char*>(prefix_kv_.data()), prefix_bytes);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    out.resize(idx.chunks(static_cast<int>(i)).offset(), '\0');
    out.append(reinterpret_cast<const char*>(blocks_[i].data()), blocks_[i].size() * sizeof(float));
  }
  return out;
}

void MemoryBankWriter::save(const std::string& path) const { write_file_atomic(path, serialize()); }

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
  if (std::memcmp(p, kBankMagic, sizeof kBankMagic) != 0) fail(w, "magic: not a nammkit memory bank (expected NAMMBANK)");
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
  if (x.k() < 1 || x.k() > x.max_chunk_tokens()) fail(w, "k: expected 1 .. max_chunk_tokens, got " + std::to_string(x.k()));
  if (x.layers_size() < 1) fail(w, "layers: empty");
  for (int i = 0; i < x.layers_size(); ++i)
    if (x.layers(i) < 0 || x.layers(i) >= m.n_layers() || (i && x.layers(i) <= x.layers(i - 1)))
      fail(w, "layers: expected ascending layers in [0, " + std::to_string(m.n_layers()) + ")");
  if (x.n_kv_heads() != m.n_kv_heads()) fail(w, "n_kv_heads: differs from model.n_kv_heads");
  if (x.head_dim() != m.head_dim()) fail(w, "head_dim: differs from model.head_dim");
  if (x.dtype() != "f32") fail(w, "dtype: expected f32, got '" + x.dtype() + "'");
  const uint64_t L = x.layers_size(), H = x.n_kv_heads(), K = x.k(), D = x.head_dim();
  if (x.chunk_bytes() != L * 2 * H * K * D * sizeof(float)) fail(w, "chunk_bytes: inconsistent with the shape");
  const uint64_t data_start = kBankHeaderBytes + len;
  const uint64_t P = x.prefix_tokens_size();
  if (P < 1) fail(w, "prefix_tokens: empty (BOS at least)");
  const uint64_t prefix_bytes = uint64_t(m.n_layers()) * 2 * H * P * D * sizeof(float);
  auto in_file = [&](uint64_t off, uint64_t bytes, const std::string& field) {
    if (off < data_start || off % sizeof(float) != 0 || off > size || bytes > size - off)
      fail(w, field + ": offset " + std::to_string(off) + " + " + std::to_string(bytes) + " bytes outside the data of a " +
                  std::to_string(size) + "-byte file (truncated?)");
  };
  in_file(x.prefix_offset(), prefix_bytes, "prefix_offset");
  if (x.max_chunk_tokens() < 1) fail(w, "max_chunk_tokens: expected >= 1");
  std::set<std::string> ids;
  for (int c = 0; c < x.chunks_size(); ++c) {
    const bank::BankChunk& ch = x.chunks(c);
    const std::string f = "chunks[" + std::to_string(c) + "]";
    if (ch.id().empty() || !ids.insert(ch.id()).second) fail(w, f + ".id: empty or duplicate");
    if (ch.n_tokens() < 1 || ch.n_tokens() > x.max_chunk_tokens()) fail(w, f + ".n_tokens: out of range");
    if (uint64_t(ch.valid_count_size()) != L * H) fail(w, f + ".valid_count: expected " + std::to_string(L * H) + " values");
    if (uint64_t(ch.selected_size()) != L * H * K) fail(w, f + ".selected: expected " + std::to_string(L * H * K) + " values");
    const int valid = std::min<int>(x.k(), ch.n_tokens());
    for (uint64_t s = 0; s < L * H; ++s) {
      if (ch.valid_count(int(s)) != valid) fail(w, f + ".valid_count: expected min(k, n_tokens) = " + std::to_string(valid));
      for (int i = 0; i < x.k(); ++i) {
        const int32_t v = ch.selected(int(s * K + i));
        const bool ok = i < valid ? (v >= 0 && v < ch.n_tokens() && (i == 0 || v > ch.selected(int(s * K + i - 1))))
                                  : v == -1;
        if (!ok) fail(w, f + ".selected: not ascending in [0, n_tokens) then -1 padding");
      }
    }
    in_file(ch.offset(), x.chunk_bytes(), f + ".offset");
  }
}

int MemoryBank::find(const std::string& id) const {
  for (int c = 0; c < index_.chunks_size(); ++c)
    if (index_.chunks(c).id() == id) return c;
  return -1;
}

const float* MemoryBank::chunk_vector(int chunk, int m, int kv, int g, int slot) const {
  const auto& x = index_;
  const size_t off = x.chunks(chunk).offset() +
                     ((((size_t(m) * 2 + kv) * x.n_kv_heads() + g) * x.k() + slot) * x.head_dim()) * sizeof(float);
  return reinterpret_cast<const float*>(data() + off);
}

const float* MemoryBank::prefix_vector(int layer, int kv, int g, int pos) const {
  const auto& x = index_;
  const size_t P = x.prefix_tokens_size();
  const size_t off =
      x.prefix_offset() + ((((size_t(layer) * 2 + kv) * x.n_kv_heads() + g) * P + pos) * x.head_dim()) * sizeof(float);
  return reinterpret_cast<const float*>(data() + off);
}

void MemoryBank::check_model(const ModelConfig& c) const {
  const bank::BankModel& m = index_.model();
  if (m.n_layers() != c.n_layers || m.n_heads() != c.n_heads || m.n_kv_heads() != c.n_kv_heads ||
      m.head_dim() != c.head_dim)
    fail(name_, "model: written for " + m.name() + " (" + std::to_string(m.n_layers()) + " layers, " +
                    std::to_string(m.n_kv_heads()) + " KV heads, head_dim " + std::to_string(m.head_dim()) +
                    "), not for this model");
}

int64_t inject_memories(Session& session, const MemoryBank& bank, std::span<const int> chunk_indices) {
  const ModelConfig& c = session.model().config;
  bank.check_model(c);
  const bank::BankIndex& x = bank.index();
  for (int ci : chunk_indices) {
    if (ci < 0 || ci >= bank.n_chunks()) fail(bank.name(), "chunk index " + std::to_string(ci) + " out of range");
    // The index CRC does not cover the tensors (they are mapped lazily); check the ones used.
    const bank::BankChunk& ch = x.chunks(ci);
    if (crc32(byte_view(bank.chunk_vector(ci, 0, 0, 0, 0), x.chunk_bytes())) != ch.block_crc())
      fail(bank.name(), "chunks[" + std::to_string(ci) + "] ('" + ch.id() + "'): tensor block CRC-32 mismatch (corrupted)");
  }
  session.reset();
  const int P = x.prefix_tokens_size();
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g)
      for (int p = 0; p < P; ++p) session.inject(l, g, bank.prefix_vector(l, 0, g, p), bank.prefix_vector(l, 1, g, p), p);
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
