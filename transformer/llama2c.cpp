// llama2.c legacy checkpoints and tokenizer.bin (format in llama2c.h).
#include "transformer/llama2c.h"

#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"

namespace nammkit {

namespace {

constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string header_string(const Llama2cHeader& h) {
  return "dim " + std::to_string(h.dim) + ", hidden " + std::to_string(h.hidden_dim) + ", layers " +
         std::to_string(h.n_layers) + ", heads " + std::to_string(h.n_heads) + ", kv heads " +
         std::to_string(h.n_kv_heads) + ", vocab " + std::to_string(h.vocab_size) + ", seq_len " +
         std::to_string(h.seq_len);
}

// Reads "\n<s>\n"-style pieces back to SentencePiece's spelling: ' ' -> "▁", control pieces trimmed.
std::string sentencepiece_spelling(std::string piece, int32_t id) {
  if (id == 1 || id == 2) {
    const auto b = piece.find_first_not_of('\n');
    const auto e = piece.find_last_not_of('\n');
    return b == std::string::npos ? piece : piece.substr(b, e - b + 1);
  }
  std::string out;
  for (char c : piece) {
    if (c == ' ') {
      out += "\xE2\x96\x81";
    } else {
      out += c;
    }
  }
  return out;
}

TokenizerData parse_tokenizer(const std::string& path, int vocab_size) {
  const std::string bytes = read_file(path);
  size_t pos = 0;
  auto take = [&](size_t n, const std::string& what) {
    if (n > bytes.size() - pos) {
      fail(path, "truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos) +
                     ", file has " + std::to_string(bytes.size()));
    }
    const char* p = bytes.data() + pos;
    pos += n;
    return p;
  };
  int32_t max_len;
  std::memcpy(&max_len, take(4, "max_token_length"), 4);
  if (max_len <= 0 || max_len > 4096) fail(path, "max_token_length: implausible value " + std::to_string(max_len));

  TokenizerData t;
  t.kind = TokenizerKind::SentencePiece;
  t.add_space_prefix = true;  // llama2.c's encode() prepends the dummy " " piece
  t.unk_id = 0;
  t.bos_id = 1;
  t.eos_id = 2;
  for (int32_t id = 0; id < vocab_size; ++id) {
    const std::string what = "token " + std::to_string(id);
    float score;
    int32_t len;
    std::memcpy(&score, take(4, what + " score"), 4);
    std::memcpy(&len, take(4, what + " length"), 4);
    if (len < 0 || len > max_len) {
      fail(path, what + ": length " + std::to_string(len) + " outside 0.." + std::to_string(max_len));
    }
    t.pieces.push_back(sentencepiece_spelling(std::string(take(len, what), len), id));
    t.scores.push_back(score);
  }
  return t;
}

}  // namespace

std::optional<std::string> llama2c_header_problem(const Llama2cHeader& h) {
  auto in = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  if (!in(h.dim, 1, 1 << 16)) return "dim " + std::to_string(h.dim) + " out of range";
  if (!in(h.hidden_dim, 1, 1 << 18)) return "hidden_dim " + std::to_string(h.hidden_dim) + " out of range";
  if (!in(h.n_layers, 1, 1024)) return "n_layers " + std::to_string(h.n_layers) + " out of range";
  if (!in(h.n_heads, 1, 1024) || h.dim % h.n_heads != 0)
    return "n_heads " + std::to_string(h.n_heads) + " does not divide dim";
  if ((h.dim / h.n_heads) % 2 != 0) return "head size " + std::to_string(h.dim / h.n_heads) + " is odd";
  if (!in(h.n_kv_heads, 1, h.n_heads) || h.n_heads % h.n_kv_heads != 0) {
    return "n_kv_heads " + std::to_string(h.n_kv_heads) + " does not divide n_heads";
  }
  if (!in(std::abs(static_cast<int64_t>(h.vocab_size)), 1, 1 << 22))
    return "vocab_size " + std::to_string(h.vocab_size) + " out of range";
  if (!in(h.seq_len, 1, 1 << 24)) return "seq_len " + std::to_string(h.seq_len) + " out of range";
  return std::nullopt;
}

uint64_t llama2c_expected_size(const Llama2cHeader& h) {
  const uint64_t dim = h.dim, hidden = h.hidden_dim, layers = h.n_layers;
  const uint64_t vocab = static_cast<uint64_t>(std::abs(static_cast<int64_t>(h.vocab_size)));
  const uint64_t head = dim / h.n_heads, q_dim = head * h.n_heads, kv_dim = head * h.n_kv_heads;
  uint64_t floats = vocab * dim;                                      // tok_emb
  floats += layers * (2 * dim);                                       // rms_att, rms_ffn
  floats += layers * (dim * q_dim + 2 * dim * kv_dim + q_dim * dim);  // wq, wk, wv, wo
  floats += layers * (3 * dim * hidden);                              // w1, w2, w3
  floats += dim;                                                      // rms_final
  floats += static_cast<uint64_t>(h.seq_len) * head;                  // freq_cis_real + imag (head/2 each)
  if (h.vocab_size < 0) floats += vocab * dim;                        // wcls
  return kHeaderBytes + floats * sizeof(float);
}

TokenizerData load_llama2c_tokenizer(const std::string& model_path, int vocab_size) {
  const std::string dir = directory_of(model_path);
  const std::string candidates[] = {dir + "/tok" + std::to_string(vocab_size) + ".bin", dir + "/tokenizer.bin"};
  for (const std::string& candidate : candidates) {
    if (file_exists(candidate)) return parse_tokenizer(candidate, vocab_size);
  }
  fail(model_path, "tokenizer: missing (looked for " + candidates[0] + ", " + candidates[1] + ")");
}

Model load_llama2c(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  if (map->size() < kHeaderBytes) {
    fail(path, "truncated: " + std::to_string(map->size()) + " bytes, shorter than the llama2.c header");
  }
  Llama2cHeader h;
  std::memcpy(&h, map->data(), kHeaderBytes);
  if (auto problem = llama2c_header_problem(h)) fail(path, "header: " + *problem);
  const uint64_t expected = llama2c_expected_size(h);
  if (map->size() != expected) {
    fail(path, std::string(map->size() < expected ? "truncated: " : "size mismatch: ") + std::to_string(map->size()) +
                   " bytes, the header (" + header_string(h) + ") implies " + std::to_string(expected));
  }

  Model m;
  m.path = path;
  m.format = "llama2c";
  ModelConfig& c = m.config;
  c.architecture = "llama";
  c.name = file_stem(path);
  c.dim = h.dim;
  c.hidden_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.vocab_size = std::abs(h.vocab_size);
  c.max_seq_len = h.seq_len;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_style = RopeStyle::Interleaved;
  c.tied_embeddings = h.vocab_size > 0;

  // Walk the tensors in file order; each kind holds all layers back to back.
  const auto* cursor = reinterpret_cast<const float*>(map->data() + kHeaderBytes);
  auto take = [&](int64_t n) {
    const float* p = cursor;
    cursor += n;
    return p;
  };
  auto matrices = [&](int64_t rows, int64_t cols, WeightMatrix LayerWeights::*field) {
    for (LayerWeights& l : m.layers) l.*field = WeightMatrix{DType::F32, rows, cols, take(rows * cols)};
  };
  auto vectors = [&](int64_t n, std::vector<float> LayerWeights::*field) {
    for (LayerWeights& l : m.layers) {
      const float* p = take(n);
      (l.*field).assign(p, p + n);
    }
  };
  m.layers.resize(c.n_layers);
  m.token_embedding = WeightMatrix{DType::F32, c.vocab_size, c.dim, take(int64_t{c.vocab_size} * c.dim)};
  vectors(c.dim, &LayerWeights::attn_norm);
  matrices(c.q_dim(), c.dim, &LayerWeights::wq);
  matrices(c.kv_dim(), c.dim, &LayerWeights::wk);
  matrices(c.kv_dim(), c.dim, &LayerWeights::wv);
  matrices(c.dim, c.q_dim(), &LayerWeights::wo);
  vectors(c.dim, &LayerWeights::ffn_norm);
  matrices(c.hidden_dim, c.dim, &LayerWeights::w_gate);  // w1
  matrices(c.dim, c.hidden_dim, &LayerWeights::w_down);  // w2
  matrices(c.hidden_dim, c.dim, &LayerWeights::w_up);    // w3
  const float* final_norm = take(c.dim);
  m.final_norm.assign(final_norm, final_norm + c.dim);
  take(int64_t{c.max_seq_len} * c.head_dim);  // freq_cis_real and freq_cis_imag
  m.output = c.tied_embeddings ? m.token_embedding
                               : WeightMatrix{DType::F32, c.vocab_size, c.dim, take(int64_t{c.vocab_size} * c.dim)};
  m.storage.push_back(map);

  // Tokenizer errors name the tokenizer file (or the model path when none is found).
  m.tokenizer = Tokenizer(load_llama2c_tokenizer(path, c.vocab_size));
  m.validate();
  return m;
}

}  // namespace nammkit
