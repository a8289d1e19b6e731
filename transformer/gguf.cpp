// GGUF reader and model builder (see gguf.h for the layout and conventions).
#include "transformer/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/text.h"
#include "transformer/quant.h"

namespace nammkit {

// --------------------------------------------------------------------------------------------
// Values and type names

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::Uint8: return "UINT8";
    case GgufType::Int8: return "INT8";
    case GgufType::Uint16: return "UINT16";
    case GgufType::Int16: return "INT16";
    case GgufType::Uint32: return "UINT32";
    case GgufType::Int32: return "INT32";
    case GgufType::Float32: return "FLOAT32";
    case GgufType::Bool: return "BOOL";
    case GgufType::String: return "STRING";
    case GgufType::Array: return "ARRAY";
    case GgufType::Uint64: return "UINT64";
    case GgufType::Int64: return "INT64";
    case GgufType::Float64: return "FLOAT64";
  }
  return "?";
}

GgufValue GgufValue::u32(uint32_t v) {
  GgufValue x;
  x.type = GgufType::Uint32;
  x.integer = v;
  return x;
}
GgufValue GgufValue::i32(int32_t v) {
  GgufValue x;
  x.type = GgufType::Int32;
  x.integer = v;
  return x;
}
GgufValue GgufValue::u64(uint64_t v) {
  GgufValue x;
  x.type = GgufType::Uint64;
  x.integer = std::bit_cast<int64_t>(v);
  return x;
}
GgufValue GgufValue::f32(float v) {
  GgufValue x;
  x.type = GgufType::Float32;
  x.number = v;
  return x;
}
GgufValue GgufValue::boolean(bool v) {
  GgufValue x;
  x.type = GgufType::Bool;
  x.integer = v ? 1 : 0;
  return x;
}
GgufValue GgufValue::string(std::string v) {
  GgufValue x;
  x.type = GgufType::String;
  x.text = std::move(v);
  return x;
}
GgufValue GgufValue::strings(const std::vector<std::string>& v) {
  GgufValue x;
  x.type = GgufType::Array;
  x.element_type = GgufType::String;
  x.items.reserve(v.size());
  for (const std::string& s : v) x.items.push_back(string(s));
  return x;
}
GgufValue GgufValue::f32s(const std::vector<float>& v) {
  GgufValue x;
  x.type = GgufType::Array;
  x.element_type = GgufType::Float32;
  x.items.reserve(v.size());
  for (float f : v) x.items.push_back(f32(f));
  return x;
}
GgufValue GgufValue::i32s(const std::vector<int32_t>& v) {
  GgufValue x;
  x.type = GgufType::Array;
  x.element_type = GgufType::Int32;
  x.items.reserve(v.size());
  for (int32_t i : v) x.items.push_back(i32(i));
  return x;
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::Uint8:
    case GgufType::Int8:
    case GgufType::Uint16:
    case GgufType::Int16:
    case GgufType::Uint32:
    case GgufType::Int32:
    case GgufType::Uint64:
    case GgufType::Int64:
    case GgufType::Bool: return true;
    default: return false;
  }
}

std::string ggml_type_name(uint32_t type) {
  static const char* const names[] = {
      "F32",     "F16",   "Q4_0",   "Q4_1",  "Q4_2",     "Q4_3",     "Q5_0",     "Q5_1",    "Q8_0",
      "Q8_1",    "Q2_K",  "Q3_K",   "Q4_K",  "Q5_K",     "Q6_K",     "Q8_K",     "IQ2_XXS", "IQ2_XS",
      "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",    "IQ4_XS",   "I8",       "I16",     "I32",
      "I64",     "F64",   "IQ1_M",  "BF16",  "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",   "TQ2_0"};
  if (type < std::size(names)) return names[type];
  return "type " + std::to_string(type);
}

std::optional<DType> dtype_from_ggml(uint32_t type) {
  switch (type) {
    case kGgmlF32: return DType::F32;
    case kGgmlF16: return DType::F16;
    case kGgmlQ8_0: return DType::Q8_0;
    case kGgmlBF16: return DType::BF16;
    case kGgmlQ4_0: return DType::Q4_0;
    case kGgmlQ4_1: return DType::Q4_1;
    case kGgmlQ5_0: return DType::Q5_0;
    case kGgmlQ5_1: return DType::Q5_1;
    case kGgmlQ4_K: return DType::Q4_K;
    case kGgmlQ5_K: return DType::Q5_K;
    case kGgmlQ6_K: return DType::Q6_K;
    default: return std::nullopt;
  }
}

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F32: return kGgmlF32;
    case DType::F16: return kGgmlF16;
    case DType::Q8_0: return kGgmlQ8_0;
    case DType::BF16: return kGgmlBF16;
    case DType::Q4_0: return kGgmlQ4_0;
    case DType::Q4_1: return kGgmlQ4_1;
    case DType::Q5_0: return kGgmlQ5_0;
    case DType::Q5_1: return kGgmlQ5_1;
    case DType::Q4_K: return kGgmlQ4_K;
    case DType::Q5_K: return kGgmlQ5_K;
    case DType::Q6_K: return kGgmlQ6_K;
  }
  return kGgmlF32;
}

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// --------------------------------------------------------------------------------------------
// Parsing

namespace {

constexpr int kMaxArrayDepth = 4;

// Bounds-checked little-endian reads from the mapped file; every overrun is a "truncated" Error.
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, size_t size) : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining()) {
      fail(path_, "truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
                      ", file has " + std::to_string(size_));
    }
  }

  template <class T>
  T scalar(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(const std::string& what) {
    const auto len = scalar<uint64_t>(what + " length");
    need(len, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

size_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::Uint8:
    case GgufType::Int8:
    case GgufType::Bool: return 1;
    case GgufType::Uint16:
    case GgufType::Int16: return 2;
    case GgufType::Uint32:
    case GgufType::Int32:
    case GgufType::Float32: return 4;
    case GgufType::Uint64:
    case GgufType::Int64:
    case GgufType::Float64: return 8;
    case GgufType::String: return 8;
    case GgufType::Array: return 12;
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::Float64); }

GgufValue read_value(Reader& r, const std::string& path, const std::string& key, GgufType type, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::Uint8: v.integer = r.scalar<uint8_t>(key); break;
    case GgufType::Int8: v.integer = r.scalar<int8_t>(key); break;
    case GgufType::Uint16: v.integer = r.scalar<uint16_t>(key); break;
    case GgufType::Int16: v.integer = r.scalar<int16_t>(key); break;
    case GgufType::Uint32: v.integer = r.scalar<uint32_t>(key); break;
    case GgufType::Int32: v.integer = r.scalar<int32_t>(key); break;
    case GgufType::Uint64: v.integer = std::bit_cast<int64_t>(r.scalar<uint64_t>(key)); break;
    case GgufType::Int64: v.integer = r.scalar<int64_t>(key); break;
    case GgufType::Float32: v.number = r.scalar<float>(key); break;
    case GgufType::Float64: v.number = r.scalar<double>(key); break;
    case GgufType::Bool: v.integer = r.scalar<uint8_t>(key) != 0; break;
    case GgufType::String: v.text = r.string(key); break;
    case GgufType::Array: {
      if (depth >= kMaxArrayDepth) fail(path, key + ": arrays nested too deeply");
      const auto elem = r.scalar<uint32_t>(key + " element type");
      if (!valid_type(elem)) fail(path, key + ": unknown array element type " + std::to_string(elem));
      v.element_type = static_cast<GgufType>(elem);
      const auto n = r.scalar<uint64_t>(key + " array length");
      // Refuse counts the rest of the file cannot hold before allocating anything.
      if (n > r.remaining() / min_encoded_size(v.element_type)) {
        fail(path, "truncated: " + key + ": array of " + std::to_string(n) + " elements does not fit in the file");
      }
      v.items.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.items.push_back(read_value(r, path, key, v.element_type, depth + 1));
      break;
    }
  }
  return v;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

GgufFile::GgufFile(const std::string& path) : path_(path), map_(std::make_shared<MappedFile>(path)) {
  Reader r(path_, map_->data(), map_->size());
  if (map_->size() < 4 || std::memcmp(map_->data(), "GGUF", 4) != 0) {
    fail(path_, "not a GGUF file: wrong magic (expected \"GGUF\")");
  }
  r.scalar<uint32_t>("magic");
  version_ = r.scalar<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    fail(path_, "version: " + std::to_string(version_) + " is not supported (only GGUF v2 and v3)");
  }
  const auto n_tensors = r.scalar<uint64_t>("tensor count");
  const auto n_kv = r.scalar<uint64_t>("metadata count");
  // Each entry takes at least 12 (metadata) or 24 (tensor info) bytes: reject impossible counts early.
  if (n_kv > r.remaining() / 12 || n_tensors > r.remaining() / 24) {
    fail(path_, "truncated: " + std::to_string(n_kv) + " metadata entries and " + std::to_string(n_tensors) +
                    " tensors do not fit in " + std::to_string(map_->size()) + " bytes");
  }

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.string("metadata key " + std::to_string(i));
    const auto type = r.scalar<uint32_t>(key + " type");
    if (!valid_type(type)) fail(path_, key + ": unknown value type " + std::to_string(type));
    metadata_.emplace_back(key, read_value(r, path_, key, static_cast<GgufType>(type), 0));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_integer() || a->integer <= 0 || !std::has_single_bit(static_cast<uint64_t>(a->integer))) {
      fail(path_, "general.alignment: must be a power of two");
    }
    alignment_ = static_cast<uint64_t>(a->integer);
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.string("tensor name " + std::to_string(i));
    const auto n_dims = r.scalar<uint32_t>("tensor " + t.name + " dims");
    if (n_dims == 0 || n_dims > 4) fail(path_, "tensor " + t.name + ": " + std::to_string(n_dims) + " dimensions");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = r.scalar<uint64_t>("tensor " + t.name + " shape");
      if (ne > (uint64_t{1} << 48) || (ne != 0 && elements > (uint64_t{1} << 48) / ne))
        fail(path_, "tensor " + t.name + ": too many elements");
      elements *= ne;
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    t.type = r.scalar<uint32_t>("tensor " + t.name + " type");
    t.offset = r.scalar<uint64_t>("tensor " + t.name + " offset");
    if (t.offset % alignment_ != 0) {
      fail(path_, "tensor " + t.name + ": offset " + std::to_string(t.offset) + " is not aligned to " +
                      std::to_string(alignment_));
    }
    tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = align_up(r.pos(), alignment_);
  for (GgufTensorInfo& t : tensors_) {
    const std::optional<DType> dtype = dtype_from_ggml(t.type);
    if (!dtype) continue;  // sized and rejected when (if) the model asks for it
    if (t.ne[0] % dtype_block_size(*dtype) != 0) {
      fail(path_, "tensor " + t.name + ": " + dtype_name(*dtype) + " rows of " + std::to_string(t.ne[0]) +
                      " elements (not a multiple of " + std::to_string(dtype_block_size(*dtype)) + ")");
    }
    t.bytes = dtype_bytes(*dtype, t.elements());
    // Compared by subtraction: an offset near 2^64 must not wrap the sum back into the file.
    const uint64_t data_bytes = map_->size() - std::min<uint64_t>(data_start, map_->size());
    if (t.offset > data_bytes || t.bytes > data_bytes - t.offset) {
      fail(path_, "truncated: tensor " + t.name + " offset " + std::to_string(t.offset) + " + " +
                      std::to_string(t.bytes) + " bytes lies beyond the " + std::to_string(data_bytes) +
                      " bytes of tensor data");
    }
    t.data = map_->data() + data_start + t.offset;
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const GgufTensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path_, key + ": missing");
  if (!v->is_integer()) fail(path_, key + ": expected an integer, found " + gguf_type_name(v->type));
  return v->integer;
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return find(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path_, key + ": missing");
  if (v->is_float()) return v->number;
  if (v->is_integer()) return static_cast<double>(v->integer);
  fail(path_, key + ": expected a number, found " + gguf_type_name(v->type));
}

double GgufFile::get_float(const std::string& key, double fallback) const {
  return find(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (!v) return fallback;
  if (!v->is_integer()) fail(path_, key + ": expected a bool, found " + gguf_type_name(v->type));
  return v->integer != 0;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path_, key + ": missing");
  if (v->type != GgufType::String) fail(path_, key + ": expected a string, found " + gguf_type_name(v->type));
  return v->text;
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return find(key) ? get_string(key) : fallback;
}

// --------------------------------------------------------------------------------------------
// Model builder

std::string pre_tokenizer_from_gguf(const std::string& where, const std::string& pre) {
  if (pre.empty() || pre == "default" || pre == "gpt-2" || pre == "gpt2") return "gpt2";
  if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") return "llama3";
  if (pre == "qwen2") return "qwen2";
  if (pre == "smollm") return "smollm";
  fail(where, "tokenizer.ggml.pre: unsupported pre-tokenizer '" + pre +
                  "' (supported: default, gpt-2, llama-bpe, smaug-bpe, qwen2, smollm)");
}

std::string pre_tokenizer_to_gguf(const std::string& pre) {
  if (pre == "llama3") return "llama-bpe";
  if (pre == "qwen2") return "qwen2";
  if (pre == "smollm") return "smollm";
  return "gpt-2";
}

// --------------------------------------------------------------------------------------------
// Tokenizer (metadata only: shared by load_gguf and load_gguf_tokenizer)

namespace {

const GgufValue& metadata_array(const GgufFile& f, const std::string& key, GgufType element) {
  const GgufValue* v = f.find(key);
  if (!v) fail(f.path(), key + ": missing");
  if (v->type != GgufType::Array || v->element_type != element) {
    fail(f.path(), key + ": expected an array of " + gguf_type_name(element));
  }
  return *v;
}

int32_t metadata_token_id(const GgufFile& f, const std::string& key, size_t vocab) {
  const int64_t id = f.get_int(key, -1);
  if (id < 0 && f.find(key)) fail(f.path(), key + ": negative id " + std::to_string(id));
  if (id >= static_cast<int64_t>(vocab)) fail(f.path(), key + ": id " + std::to_string(id) + " outside the vocabulary");
  return static_cast<int32_t>(id);
}

TokenizerData read_tokenizer(const GgufFile& f) {
  TokenizerData t;
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    t.kind = TokenizerKind::SentencePiece;
  } else if (model == "gpt2") {
    t.kind = TokenizerKind::ByteLevelBPE;
    t.pre_tokenizer = pre_tokenizer_from_gguf(f.path(), f.get_string("tokenizer.ggml.pre", "default"));
  } else {
    fail(f.path(), "tokenizer.ggml.model: unsupported '" + model + "' (supported: llama, gpt2)");
  }
  for (const GgufValue& v : metadata_array(f, "tokenizer.ggml.tokens", GgufType::String).items) {
    t.pieces.push_back(v.text);
  }
  const size_t n = t.pieces.size();
  if (f.find("tokenizer.ggml.scores")) {
    for (const GgufValue& v : metadata_array(f, "tokenizer.ggml.scores", GgufType::Float32).items) {
      t.scores.push_back(static_cast<float>(v.number));
    }
    if (t.scores.size() != n) {
      fail(f.path(), "tokenizer.ggml.scores: " + std::to_string(t.scores.size()) + " entries for " + std::to_string(n) +
                         " tokens");
    }
  }
  if (f.find("tokenizer.ggml.token_type")) {
    const GgufValue& types = metadata_array(f, "tokenizer.ggml.token_type", GgufType::Int32);
    if (types.items.size() != n) {
      fail(f.path(), "tokenizer.ggml.token_type: " + std::to_string(types.items.size()) + " entries for " +
                         std::to_string(n) + " tokens");
    }
    constexpr int64_t kControl = 3;
    for (size_t id = 0; id < n; ++id) {
      if (types.items[id].integer == kControl) t.special_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (f.find("tokenizer.ggml.merges")) {
    for (const GgufValue& v : metadata_array(f, "tokenizer.ggml.merges", GgufType::String).items) {
      t.merges.push_back(v.text);
    }
  }
  t.bos_id = metadata_token_id(f, "tokenizer.ggml.bos_token_id", n);
  t.eos_id = metadata_token_id(f, "tokenizer.ggml.eos_token_id", n);
  t.unk_id = metadata_token_id(f, "tokenizer.ggml.unknown_token_id", n);
  t.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", t.kind == TokenizerKind::SentencePiece);
  // Absent: BOS first, as nammkit always did.
  t.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", true);
  t.chat_template = f.get_string("tokenizer.chat_template", "");
  return t;
}

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  TokenizerData data = read_tokenizer(f);
  try {
    return Tokenizer(std::move(data));
  } catch (const Error& e) {
    fail(f.path(), e.what());  // the Tokenizer's own checks name no file
  }
}

}  // namespace

Tokenizer load_gguf_tokenizer(const std::string& path) { return tokenizer_from_gguf(GgufFile(path)); }

namespace {

std::string ne_string(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

class GgufModelBuilder {
 public:
  explicit GgufModelBuilder(const GgufFile& file) : f_(file) {}

  Model build() {
    Model m;
    m.path = f_.path();
    m.format = "gguf";
    m.storage.push_back(f_.mapping());
    read_config(m.config);
    read_weights(m);
    m.tokenizer = tokenizer_from_gguf(f_);
    return m;
  }

 private:
  const GgufTensorInfo& tensor(const std::string& name) const {
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (!t) fail(f_.path(), "tensor " + name + ": missing");
    if (!dtype_from_ggml(t->type)) fail(f_.path(), "tensor " + name + ": unsupported type " + ggml_type_name(t->type));
    return *t;
  }

  void check_shape(const GgufTensorInfo& t, const std::vector<int64_t>& expected) const {
    if (t.ne != expected) {
      fail(f_.path(), "tensor " + t.name + ": shape " + ne_string(t.ne) + ", expected " + ne_string(expected));
    }
  }

  // A [rows][cols] matrix is stored with ne = [cols, rows].
  WeightMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const {
    const GgufTensorInfo& t = tensor(name);
    check_shape(t, {cols, rows});
    return WeightMatrix{*dtype_from_ggml(t.type), rows, cols, t.data};
  }

  std::vector<float> vector(const std::string& name, int64_t n) const {
    const GgufTensorInfo& t = tensor(name);
    check_shape(t, {n});
    std::vector<float> v(n);
    dequantize(*dtype_from_ggml(t.type), t.data, v.data(), n);
    return v;
  }

  int int_key(const std::string& key) const {
    const int64_t v = f_.get_int(key);
    if (v <= 0 || v > std::numeric_limits<int>::max())
      fail(f_.path(), key + ": out of range (" + std::to_string(v) + ")");
    return static_cast<int>(v);
  }
  int int_key(const std::string& key, int fallback) const { return f_.find(key) ? int_key(key) : fallback; }

  void read_config(ModelConfig& c) const {
    const std::string arch = f_.get_string("general.architecture");
    if (arch != "llama" && arch != "qwen2") {
      fail(f_.path(), "general.architecture: unsupported '" + arch + "' (supported: llama, qwen2)");
    }
    const std::string p = arch + ".";
    c.architecture = arch;
    c.name = f_.get_string("general.name", file_stem(f_.path()));
    c.dim = int_key(p + "embedding_length");
    c.hidden_dim = int_key(p + "feed_forward_length");
    c.n_layers = int_key(p + "block_count");
    c.n_heads = int_key(p + "attention.head_count");
    c.n_kv_heads = int_key(p + "attention.head_count_kv", c.n_heads);
    c.head_dim = int_key(p + "attention.key_length", c.dim / c.n_heads);
    if (int_key(p + "attention.value_length", c.head_dim) != c.head_dim) {
      fail(f_.path(), p + "attention.value_length: differs from key_length (unsupported)");
    }
    if (int_key(p + "rope.dimension_count", c.head_dim) != c.head_dim) {
      fail(f_.path(), p + "rope.dimension_count: partial rotary embeddings are not supported");
    }
    c.max_seq_len = int_key(p + "context_length");
    c.norm_eps = static_cast<float>(f_.get_float(p + "attention.layer_norm_rms_epsilon"));
    c.rope_theta = static_cast<float>(f_.get_float(p + "rope.freq_base", 10000.0));
    c.rope_style = arch == "llama" ? RopeStyle::Interleaved : RopeStyle::HalfSplit;
    read_rope_scaling(p, c);
    check_hyper_parameters(
        f_.path(), c,
        {p + "attention.layer_norm_rms_epsilon", p + "rope.freq_base", p + "rope.scaling.factor",
         p + "rope.scaling.ntk_alpha", p + "rope.scaling.low_freq_factor", p + "rope.scaling.high_freq_factor"});
    const GgufTensorInfo& embd = tensor("token_embd.weight");
    if (embd.ne.size() != 2)
      fail(f_.path(), "tensor token_embd.weight: shape " + ne_string(embd.ne) + ", expected 2 dims");
    c.vocab_size = static_cast<int>(embd.ne[1]);
    if (f_.find(p + "vocab_size") && f_.get_int(p + "vocab_size") != c.vocab_size) {
      fail(f_.path(), p + "vocab_size: " + std::to_string(f_.get_int(p + "vocab_size")) +
                          " differs from token_embd.weight's " + std::to_string(c.vocab_size) + " rows");
    }
    c.qkv_bias = f_.find_tensor("blk.0.attn_q.bias") != nullptr;
    c.tied_embeddings = f_.find_tensor("output.weight") == nullptr;
  }

  // llama.cpp keys rope.scaling.type/factor; "llama3" and "ntk" parameters use the extra keys
  // save_gguf writes (llama.cpp itself stores Llama-3 scaling as a rope_freqs tensor instead).
  void read_rope_scaling(const std::string& p, ModelConfig& c) const {
    const std::string type = f_.get_string(p + "rope.scaling.type", "none");
    if (type == "none") {
      c.rope_scaling = RopeScaling::None;
    } else if (type == "linear") {
      c.rope_scaling = RopeScaling::Linear;
    } else if (type == "llama3") {
      c.rope_scaling = RopeScaling::Llama3;
      c.rope_low_freq_factor = static_cast<float>(f_.get_float(p + "rope.scaling.low_freq_factor"));
      c.rope_high_freq_factor = static_cast<float>(f_.get_float(p + "rope.scaling.high_freq_factor"));
      c.rope_original_context = int_key(p + "rope.scaling.original_context_length");
    } else if (type == "ntk") {
      c.rope_scaling = RopeScaling::NtkStatic;
      c.rope_ntk_alpha = static_cast<float>(f_.get_float(p + "rope.scaling.ntk_alpha", 1.0));
    } else {
      fail(f_.path(), p + "rope.scaling.type: unsupported '" + type + "' (supported: none, linear, llama3, ntk)");
    }
    if (c.rope_scaling != RopeScaling::None)
      c.rope_factor = static_cast<float>(f_.get_float(p + "rope.scaling.factor"));
    if (c.rope_scaling != RopeScaling::Llama3 && f_.find_tensor("rope_freqs.weight")) {
      fail(f_.path(), "tensor rope_freqs.weight: per-frequency RoPE factors are not supported without " + p +
                          "rope.scaling.type = llama3 and its parameters");
    }
  }

  void read_weights(Model& m) const {
    const ModelConfig& c = m.config;
    m.token_embedding = matrix("token_embd.weight", c.vocab_size, c.dim);
    m.output = c.tied_embeddings ? m.token_embedding : matrix("output.weight", c.vocab_size, c.dim);
    m.final_norm = vector("output_norm.weight", c.dim);
    m.layers.resize(c.n_layers);
    for (int i = 0; i < c.n_layers; ++i) {
      const std::string b = "blk." + std::to_string(i) + ".";
      LayerWeights& l = m.layers[i];
      l.attn_norm = vector(b + "attn_norm.weight", c.dim);
      l.wq = matrix(b + "attn_q.weight", c.q_dim(), c.dim);
      l.wk = matrix(b + "attn_k.weight", c.kv_dim(), c.dim);
      l.wv = matrix(b + "attn_v.weight", c.kv_dim(), c.dim);
      l.wo = matrix(b + "attn_output.weight", c.dim, c.q_dim());
      if (c.qkv_bias) {
        l.bq = vector(b + "attn_q.bias", c.q_dim());
        l.bk = vector(b + "attn_k.bias", c.kv_dim());
        l.bv = vector(b + "attn_v.bias", c.kv_dim());
      }
      l.ffn_norm = vector(b + "ffn_norm.weight", c.dim);
      l.w_gate = matrix(b + "ffn_gate.weight", c.hidden_dim, c.dim);
      l.w_up = matrix(b + "ffn_up.weight", c.hidden_dim, c.dim);
      l.w_down = matrix(b + "ffn_down.weight", c.dim, c.hidden_dim);
    }
  }

  const GgufFile& f_;
};

}  // namespace

Model load_gguf(const std::string& path) {
  GgufFile file(path);
  Model model = GgufModelBuilder(file).build();
  model.validate();
  return model;
}

}  // namespace nammkit
