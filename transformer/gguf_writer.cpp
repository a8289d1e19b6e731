// GGUF writer and model export (conventions documented in gguf_writer.h).
#include "transformer/gguf_writer.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"
#include "transformer/quant.h"

namespace nammkit {

namespace {

void put_string(std::string& out, const std::string& s) {
  put_le<uint64_t>(out, s.size());
  out += s;
}

void put_value(std::string& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::Uint8: put_le<uint8_t>(out, static_cast<uint8_t>(v.integer)); break;
    case GgufType::Int8: put_le<int8_t>(out, static_cast<int8_t>(v.integer)); break;
    case GgufType::Uint16: put_le<uint16_t>(out, static_cast<uint16_t>(v.integer)); break;
    case GgufType::Int16: put_le<int16_t>(out, static_cast<int16_t>(v.integer)); break;
    case GgufType::Uint32: put_le<uint32_t>(out, static_cast<uint32_t>(v.integer)); break;
    case GgufType::Int32: put_le<int32_t>(out, static_cast<int32_t>(v.integer)); break;
    case GgufType::Uint64: put_le<uint64_t>(out, std::bit_cast<uint64_t>(v.integer)); break;
    case GgufType::Int64: put_le<int64_t>(out, v.integer); break;
    case GgufType::Float32: put_le<float>(out, static_cast<float>(v.number)); break;
    case GgufType::Float64: put_le<double>(out, v.number); break;
    case GgufType::Bool: put_le<uint8_t>(out, v.integer ? 1 : 0); break;
    case GgufType::String: put_string(out, v.text); break;
    case GgufType::Array:
      put_le<uint32_t>(out, static_cast<uint32_t>(v.element_type));
      put_le<uint64_t>(out, v.items.size());
      for (const GgufValue& item : v.items) {
        if (item.type != v.element_type)
          fail("gguf writer", "array element of type " + std::string(gguf_type_name(item.type)) + " in an array of " +
                                  gguf_type_name(v.element_type));
        put_value(out, item);
      }
      break;
  }
}

void pad_to(std::string& out, uint64_t alignment) {
  out.append((alignment - out.size() % alignment) % alignment, '\0');
}

}  // namespace

std::string encode_f32(const float* values, int64_t n, DType type) {
  std::string out;
  out.reserve(dtype_bytes(type, n));
  switch (type) {
    case DType::F32: out.assign(reinterpret_cast<const char*>(values), static_cast<size_t>(n) * 4); break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) put_le<uint16_t>(out, f32_to_f16(values[i]));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) put_le<uint16_t>(out, f32_to_bf16(values[i]));
      break;
    default:
      out.resize(dtype_bytes(type, n));
      quantize_row(type, values, reinterpret_cast<uint8_t*>(out.data()), n);
      break;
  }
  return out;
}

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment)) fail("gguf writer", "alignment must be a power of two");
  if (alignment != 32) set("general.alignment", GgufValue::u32(static_cast<uint32_t>(alignment)));
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, uint32_t ggml_type, std::string bytes) {
  for (const Tensor& t : tensors_) {
    if (t.name == name) fail("gguf writer", "tensor " + name + ": added twice");
  }
  if (ne.empty() || ne.size() > 4) fail("gguf writer", "tensor " + name + ": needs 1 to 4 dimensions");
  if (std::optional<DType> dtype = dtype_from_ggml(ggml_type)) {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    if (ne[0] % dtype_block_size(*dtype) != 0) {
      fail("gguf writer", "tensor " + name + ": " + dtype_name(*dtype) + " needs rows that are a multiple of " +
                              std::to_string(dtype_block_size(*dtype)) + " wide");
    }
    if (dtype_bytes(*dtype, n) != bytes.size()) {
      fail("gguf writer", "tensor " + name + ": " + std::to_string(bytes.size()) + " bytes, shape needs " +
                              std::to_string(dtype_bytes(*dtype, n)));
    }
  }
  tensors_.push_back({name, std::move(ne), ggml_type, std::move(bytes)});
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, DType type, const float* values) {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  if (!ne.empty() && ne[0] % dtype_block_size(type) != 0) {
    fail("gguf writer", "tensor " + name + ": " + dtype_name(type) + " needs rows that are a multiple of " +
                            std::to_string(dtype_block_size(type)) + " wide");
  }
  add_tensor(name, std::move(ne), ggml_type_of(type), encode_f32(values, n, type));
}

std::string GgufWriter::serialize() const {
  std::string out;
  out += "GGUF";
  put_le<uint32_t>(out, 3);
  put_le<uint64_t>(out, tensors_.size());
  put_le<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    put_string(out, key);
    put_le<uint32_t>(out, static_cast<uint32_t>(value.type));
    put_value(out, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(out, t.name);
    put_le<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put_le<uint64_t>(out, static_cast<uint64_t>(d));
    put_le<uint32_t>(out, t.type);
    put_le<uint64_t>(out, offset);
    offset += t.bytes.size();
    offset += (alignment_ - offset % alignment_) % alignment_;
  }
  pad_to(out, alignment_);
  for (const Tensor& t : tensors_) {
    out += t.bytes;
    pad_to(out, alignment_);
  }
  return out;
}

void GgufWriter::write(const std::string& path) const { write_file_atomic(path, serialize()); }

// --------------------------------------------------------------------------------------------
// Model export

namespace {

RopeStyle gguf_rope_style(const std::string& arch) {
  return arch == "llama" ? RopeStyle::Interleaved : RopeStyle::HalfSplit;
}

// Row order that re-lays a Q/K matrix (or bias) from RoPE style `from` to `to`: order[new] = old.
// Empty when nothing moves.
std::vector<int64_t> rope_row_order(int n_heads, int head_dim, RopeStyle from, RopeStyle to) {
  if (from == to) return {};
  const int half = head_dim / 2;
  std::vector<int64_t> order(static_cast<size_t>(n_heads) * head_dim);
  for (int h = 0; h < n_heads; ++h) {
    for (int j = 0; j < head_dim; ++j) {
      // to interleaved: new 2i+s <- old s*half+i; to half-split: new s*half+i <- old 2i+s
      const int old = to == RopeStyle::Interleaved ? (j % 2) * half + j / 2 : 2 * (j % half) + j / half;
      order[static_cast<size_t>(h) * head_dim + j] = static_cast<int64_t>(h) * head_dim + old;
    }
  }
  return order;
}

// Matrices keep their bytes when the type already matches (rows are independent, so a row
// permutation is lossless for every type); otherwise each row goes through f32.
void add_matrix(GgufWriter& w, const std::string& name, const WeightMatrix& m, DType weight_type,
                const std::vector<int64_t>& row_order = {}) {
  // Rows that do not split into whole blocks (or a type nammkit cannot write) fall back to F16, as
  // llama.cpp's quantizer falls back to another type for such tensors.
  const bool quantizable =
      !is_quantized(weight_type) || (can_quantize(weight_type) && m.cols % dtype_block_size(weight_type) == 0);
  const DType target = quantizable ? weight_type : DType::F16;
  std::string bytes;
  bytes.reserve(dtype_bytes(target, m.cols) * m.rows);
  std::vector<float> row(m.cols);
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t src = row_order.empty() ? r : row_order[r];
    if (m.dtype == target) {
      bytes.append(reinterpret_cast<const char*>(m.row(src)), m.row_bytes());
    } else {
      dequantize(m.dtype, m.row(src), row.data(), m.cols);
      bytes += encode_f32(row.data(), m.cols, target);
    }
  }
  w.add_tensor(name, {m.cols, m.rows}, ggml_type_of(target), std::move(bytes));
}

void add_vector(GgufWriter& w, const std::string& name, const std::vector<float>& v,
                const std::vector<int64_t>& order = {}) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = order.empty() ? v[i] : v[order[i]];
  w.add_tensor(name, {static_cast<int64_t>(v.size())}, DType::F32, out.data());
}

uint32_t gguf_file_type(DType t) {
  switch (t) {
    case DType::F32: return 0;    // LLAMA_FTYPE_ALL_F32
    case DType::F16: return 1;    // LLAMA_FTYPE_MOSTLY_F16
    case DType::Q8_0: return 7;   // LLAMA_FTYPE_MOSTLY_Q8_0
    case DType::BF16: return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    case DType::Q4_0: return 2;   // LLAMA_FTYPE_MOSTLY_Q4_0
    case DType::Q4_1: return 3;   // LLAMA_FTYPE_MOSTLY_Q4_1
    case DType::Q5_0: return 8;   // LLAMA_FTYPE_MOSTLY_Q5_0
    case DType::Q5_1: return 9;   // LLAMA_FTYPE_MOSTLY_Q5_1
    case DType::Q4_K: return 15;  // LLAMA_FTYPE_MOSTLY_Q4_K_M
    case DType::Q5_K: return 17;  // LLAMA_FTYPE_MOSTLY_Q5_K_M
    case DType::Q6_K: return 18;  // LLAMA_FTYPE_MOSTLY_Q6_K
  }
  return 0;
}

void set_config(GgufWriter& w, const ModelConfig& c) {
  const std::string p = c.architecture + ".";
  w.set(p + "vocab_size", GgufValue::u32(c.vocab_size));
  w.set(p + "context_length", GgufValue::u32(c.max_seq_len));
  w.set(p + "embedding_length", GgufValue::u32(c.dim));
  w.set(p + "block_count", GgufValue::u32(c.n_layers));
  w.set(p + "feed_forward_length", GgufValue::u32(c.hidden_dim));
  w.set(p + "attention.head_count", GgufValue::u32(c.n_heads));
  w.set(p + "attention.head_count_kv", GgufValue::u32(c.n_kv_heads));
  w.set(p + "attention.key_length", GgufValue::u32(c.head_dim));
  w.set(p + "attention.value_length", GgufValue::u32(c.head_dim));
  w.set(p + "attention.layer_norm_rms_epsilon", GgufValue::f32(c.norm_eps));
  w.set(p + "rope.freq_base", GgufValue::f32(c.rope_theta));
  w.set(p + "rope.dimension_count", GgufValue::u32(c.head_dim));
  switch (c.rope_scaling) {
    case RopeScaling::None: break;
    case RopeScaling::Linear:
      w.set(p + "rope.scaling.type", GgufValue::string("linear"));
      w.set(p + "rope.scaling.factor", GgufValue::f32(c.rope_factor));
      break;
    case RopeScaling::Llama3:
      w.set(p + "rope.scaling.type", GgufValue::string("llama3"));
      w.set(p + "rope.scaling.factor", GgufValue::f32(c.rope_factor));
      w.set(p + "rope.scaling.low_freq_factor", GgufValue::f32(c.rope_low_freq_factor));
      w.set(p + "rope.scaling.high_freq_factor", GgufValue::f32(c.rope_high_freq_factor));
      w.set(p + "rope.scaling.original_context_length", GgufValue::u32(c.rope_original_context));
      break;
    case RopeScaling::NtkStatic:
      w.set(p + "rope.scaling.type", GgufValue::string("ntk"));
      w.set(p + "rope.scaling.factor", GgufValue::f32(c.rope_factor));
      w.set(p + "rope.scaling.ntk_alpha", GgufValue::f32(c.rope_ntk_alpha));
      break;
  }
}

// SentencePiece scores for a tokenizer that only has merges: the piece a merge produces scores
// -rank (earlier merges first); pieces no merge produces rank below all of them.
std::vector<float> scores_from_merges(const TokenizerData& t) {
  std::unordered_map<std::string, int32_t> id_of;
  for (size_t i = 0; i < t.pieces.size(); ++i) id_of.emplace(t.pieces[i], static_cast<int32_t>(i));
  const float n_merges = static_cast<float>(t.merges.size());
  std::vector<float> scores(t.pieces.size());
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = -n_merges - static_cast<float>(i);
  for (size_t rank = t.merges.size(); rank-- > 0;) {  // backwards so the earliest merge wins
    const std::string& m = t.merges[rank];
    const size_t space = m.find(' ');
    if (space == std::string::npos) continue;
    if (auto it = id_of.find(m.substr(0, space) + m.substr(space + 1)); it != id_of.end()) {
      scores[it->second] = -static_cast<float>(rank);
    }
  }
  return scores;
}

void set_tokenizer(GgufWriter& w, const Tokenizer& tokenizer) {
  if (tokenizer.empty()) return;
  const TokenizerData& t = tokenizer.data();
  const bool sp = t.kind == TokenizerKind::SentencePiece;
  w.set("tokenizer.ggml.model", GgufValue::string(sp ? "llama" : "gpt2"));
  if (!sp) w.set("tokenizer.ggml.pre", GgufValue::string(pre_tokenizer_to_gguf(t.pre_tokenizer)));
  w.set("tokenizer.ggml.tokens", GgufValue::strings(t.pieces));
  if (sp) w.set("tokenizer.ggml.scores", GgufValue::f32s(t.scores.empty() ? scores_from_merges(t) : t.scores));

  // llama.cpp token types: 1 normal, 2 unknown, 3 control, 6 byte.
  std::vector<int32_t> types(t.pieces.size(), 1);
  for (size_t id = 0; id < t.pieces.size(); ++id) {
    const std::string& p = t.pieces[id];
    if (sp && p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>') types[id] = 6;
  }
  if (t.unk_id >= 0) types[t.unk_id] = 2;
  for (int32_t id : t.special_ids) types[id] = 3;
  for (int32_t id : {t.bos_id, t.eos_id}) {
    if (id >= 0) types[id] = 3;
  }
  w.set("tokenizer.ggml.token_type", GgufValue::i32s(types));
  if (!t.merges.empty()) w.set("tokenizer.ggml.merges", GgufValue::strings(t.merges));
  if (t.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(t.bos_id));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(t.add_bos));
  if (!t.chat_template.empty()) w.set("tokenizer.chat_template", GgufValue::string(t.chat_template));
  if (t.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(t.eos_id));
  if (t.unk_id >= 0) w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(t.unk_id));
  if (sp) w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(t.add_space_prefix));
}

}  // namespace

void save_gguf(const Model& model, const std::string& path, DType weight_type) {
  model.validate();
  const ModelConfig& c = model.config;
  GgufWriter w;
  w.set("general.architecture", GgufValue::string(c.architecture));
  w.set("general.name", GgufValue::string(c.name));
  w.set("general.file_type", GgufValue::u32(gguf_file_type(weight_type)));
  set_config(w, c);
  set_tokenizer(w, model.tokenizer);

  const RopeStyle target = gguf_rope_style(c.architecture);
  const std::vector<int64_t> q_order = rope_row_order(c.n_heads, c.head_dim, c.rope_style, target);
  const std::vector<int64_t> k_order = rope_row_order(c.n_kv_heads, c.head_dim, c.rope_style, target);
  const bool tied = c.tied_embeddings || model.output.data == model.token_embedding.data;

  add_matrix(w, "token_embd.weight", model.token_embedding, weight_type);
  add_vector(w, "output_norm.weight", model.final_norm);
  if (!tied) add_matrix(w, "output.weight", model.output, weight_type);
  for (int i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = model.layers[i];
    const std::string b = "blk." + std::to_string(i) + ".";
    add_vector(w, b + "attn_norm.weight", l.attn_norm);
    add_matrix(w, b + "attn_q.weight", l.wq, weight_type, q_order);
    add_matrix(w, b + "attn_k.weight", l.wk, weight_type, k_order);
    add_matrix(w, b + "attn_v.weight", l.wv, weight_type);
    add_matrix(w, b + "attn_output.weight", l.wo, weight_type);
    if (c.qkv_bias) {
      add_vector(w, b + "attn_q.bias", l.bq, q_order);
      add_vector(w, b + "attn_k.bias", l.bk, k_order);
      add_vector(w, b + "attn_v.bias", l.bv);
    }
    add_vector(w, b + "ffn_norm.weight", l.ffn_norm);
    add_matrix(w, b + "ffn_gate.weight", l.w_gate, weight_type);
    add_matrix(w, b + "ffn_up.weight", l.w_up, weight_type);
    add_matrix(w, b + "ffn_down.weight", l.w_down, weight_type);
  }
  w.write(path);
}

}  // namespace nammkit
