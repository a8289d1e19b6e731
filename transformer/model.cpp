// Model: bandwidth estimate and the shape check every loader runs before handing a Model out.
#include "transformer/model.h"

#include <cmath>
#include <sstream>
#include <string>

#include "core/error.h"
#include "transformer/quant.h"

namespace nammkit {

namespace {

size_t vector_bytes(const std::vector<float>& v) { return v.size() * sizeof(float); }

std::string shape_string(int64_t rows, int64_t cols) {
  std::string s = "[";  // appended piecewise: GCC 12 warns (-Wrestrict) on "[" + std::to_string(...)
  s += std::to_string(rows);
  s += " x ";
  s += std::to_string(cols);
  s += "]";
  return s;
}

// The names in messages are nammkit's own (format-neutral); loaders check the file's tensor
// names themselves before building the Model.
void check_matrix(const std::string& where, const std::string& name, const WeightMatrix& w, int64_t rows,
                  int64_t cols) {
  if (w.rows != rows || w.cols != cols) {
    fail(where, name + ": shape " + shape_string(w.rows, w.cols) + ", expected " + shape_string(rows, cols));
  }
  if (w.data == nullptr) fail(where, name + ": no data");
  if (cols % dtype_block_size(w.dtype) != 0) {
    fail(where, name + ": " + dtype_name(w.dtype) + " needs a multiple of " +
                    std::to_string(dtype_block_size(w.dtype)) + " columns, has " + std::to_string(cols));
  }
}

void check_vector(const std::string& where, const std::string& name, const std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) != n) {
    fail(where, name + ": length " + std::to_string(v.size()) + ", expected " + std::to_string(n));
  }
}

void check_config(const std::string& where, const ModelConfig& c) {
  auto positive = [&](const char* field, int value) {
    if (value <= 0) fail(where, std::string("config.") + field + ": must be positive, is " + std::to_string(value));
  };
  positive("dim", c.dim);
  positive("hidden_dim", c.hidden_dim);
  positive("n_layers", c.n_layers);
  positive("n_heads", c.n_heads);
  positive("n_kv_heads", c.n_kv_heads);
  positive("head_dim", c.head_dim);
  positive("vocab_size", c.vocab_size);
  positive("max_seq_len", c.max_seq_len);
  if (c.n_heads % c.n_kv_heads != 0) {
    fail(where, "config.n_heads: " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                    std::to_string(c.n_kv_heads));
  }
  if (c.head_dim % 2 != 0) fail(where, "config.head_dim: must be even for RoPE, is " + std::to_string(c.head_dim));
  if (c.architecture != "llama" && c.architecture != "qwen2") {
    fail(where, "config.architecture: unsupported '" + c.architecture + "'");
  }
}

}  // namespace

void check_hyper_parameters(const std::string& file, const ModelConfig& c, const HyperParameterKeys& keys) {
  auto check = [&](const std::string& key, double value, bool zero_allowed) {
    if (std::isfinite(value) && (value > 0 || (zero_allowed && value == 0))) return;
    std::ostringstream shown;
    shown << value;
    fail(file,
         key + ": " + shown.str() + " is not a " + (zero_allowed ? "non-negative" : "positive") + " finite number");
  };
  check(keys.norm_eps, c.norm_eps, true);
  check(keys.rope_theta, c.rope_theta, false);
  if (c.rope_scaling != RopeScaling::None) check(keys.rope_factor, c.rope_factor, false);
  if (c.rope_scaling == RopeScaling::NtkStatic) {
    check(keys.rope_ntk_alpha, c.rope_ntk_alpha, false);
    if (!(c.rope_ntk_alpha * c.rope_factor - (c.rope_ntk_alpha - 1) > 0)) {
      fail(file, keys.rope_ntk_alpha + ": alpha * factor - (alpha - 1) must be positive");
    }
  }
  if (c.rope_scaling == RopeScaling::Llama3) {
    check(keys.rope_low_freq_factor, c.rope_low_freq_factor, false);
    check(keys.rope_high_freq_factor, c.rope_high_freq_factor, false);
  }
}

size_t Model::weight_bytes_per_token() const {
  // Every matrix is streamed once per decoded token; the embedding contributes one row.
  size_t total = token_embedding.row_bytes() + output.bytes() + vector_bytes(final_norm);
  for (const LayerWeights& l : layers) {
    total += l.wq.bytes() + l.wk.bytes() + l.wv.bytes() + l.wo.bytes();
    total += l.w_gate.bytes() + l.w_up.bytes() + l.w_down.bytes();
    total += vector_bytes(l.attn_norm) + vector_bytes(l.ffn_norm);
    total += vector_bytes(l.bq) + vector_bytes(l.bk) + vector_bytes(l.bv);
  }
  return total;
}

void Model::validate() const {
  const std::string where = path.empty() ? "model" : path;
  const ModelConfig& c = config;
  check_config(where, c);
  check_hyper_parameters(where, c);
  check_matrix(where, "token_embedding", token_embedding, c.vocab_size, c.dim);
  check_matrix(where, "output", output, c.vocab_size, c.dim);
  check_vector(where, "final_norm", final_norm, c.dim);
  if (static_cast<int>(layers.size()) != c.n_layers) {
    fail(where, "layers: " + std::to_string(layers.size()) + " present, config says " + std::to_string(c.n_layers));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& l = layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    check_vector(where, p + "attn_norm", l.attn_norm, c.dim);
    check_matrix(where, p + "wq", l.wq, c.q_dim(), c.dim);
    check_matrix(where, p + "wk", l.wk, c.kv_dim(), c.dim);
    check_matrix(where, p + "wv", l.wv, c.kv_dim(), c.dim);
    check_matrix(where, p + "wo", l.wo, c.dim, c.q_dim());
    check_vector(where, p + "ffn_norm", l.ffn_norm, c.dim);
    check_matrix(where, p + "w_gate", l.w_gate, c.hidden_dim, c.dim);
    check_matrix(where, p + "w_up", l.w_up, c.hidden_dim, c.dim);
    check_matrix(where, p + "w_down", l.w_down, c.dim, c.hidden_dim);
    if (c.qkv_bias) {
      check_vector(where, p + "bq", l.bq, c.q_dim());
      check_vector(where, p + "bk", l.bk, c.kv_dim());
      check_vector(where, p + "bv", l.bv, c.kv_dim());
    } else if (!l.bq.empty() || !l.bk.empty() || !l.bv.empty()) {
      fail(where, p + "bq: biases present but config.qkv_bias is false");
    }
  }
  // Tokenizers may be shorter than the embedding (padded vocabularies) but never longer.
  if (!tokenizer.empty() && tokenizer.vocab_size() > c.vocab_size) {
    fail(where, "tokenizer: " + std::to_string(tokenizer.vocab_size()) + " tokens, more than the embedding's " +
                    std::to_string(c.vocab_size));
  }
}

}  // namespace nammkit
