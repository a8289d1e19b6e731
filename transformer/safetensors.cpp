// Hugging Face safetensors checkpoints, config.json and tokenizer.json (see safetensors.h).
#include "transformer/safetensors.h"

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <type_traits>

#include "core/error.h"
#include "core/text.h"

namespace nammkit {

using nlohmann::json;

namespace {

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::vector<std::string> list_directory(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

json parse_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
}

// Bytes per element of the safetensors dtypes (0 for unknown names).
size_t element_size(const std::string& dtype) {
  static const std::map<std::string, size_t, std::less<>> sizes = {
      {"F64", 8}, {"I64", 8}, {"U64", 8}, {"F32", 4}, {"I32", 4},  {"U32", 4},     {"F16", 2},    {"BF16", 2},
      {"I16", 2}, {"U16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

std::optional<DType> dtype_from_safetensors(const std::string& dtype) {
  if (dtype == "F32") return DType::F32;
  if (dtype == "F16") return DType::F16;
  if (dtype == "BF16") return DType::BF16;
  return std::nullopt;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

// --------------------------------------------------------------------------------------------
// safetensors files

namespace {

// A JSON array of integers. Checked element by element: nlohmann converts a float such as 1e20 to an
// integer type with undefined behaviour, and a negative number to an unsigned one by wrapping.
template <class T>
std::vector<T> integer_array(const json& v, const std::string& path, const std::string& field) {
  if (!v.is_array()) fail(path, field + ": expected an array of integers, found " + v.dump());
  std::vector<T> out;
  for (const json& x : v) {
    if (!x.is_number_integer() || (std::is_unsigned_v<T> && !x.is_number_unsigned()))
      fail(path,
           field + ": expected " + (std::is_unsigned_v<T> ? "non-negative " : "") + "integers, found " + x.dump());
    out.push_back(x.get<T>());
  }
  return out;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), map_(std::make_shared<MappedFile>(path)) {
  const size_t size = map_->size();
  if (size < 8) fail(path_, "truncated: " + std::to_string(size) + " bytes, no safetensors header");
  uint64_t header_len;
  std::memcpy(&header_len, map_->data(), 8);
  if (header_len > size - 8) {
    fail(path_, "truncated: header of " + std::to_string(header_len) + " bytes, file has " + std::to_string(size));
  }
  json header;
  try {
    header = json::parse(map_->data() + 8, map_->data() + 8 + header_len);
  } catch (const json::exception& e) {
    fail(path_, std::string("header: invalid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path_, "header: not a JSON object");
  const uint64_t data_start = 8 + header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    SafetensorsTensor t;
    t.name = name;
    try {
      t.dtype = entry.at("dtype").get<std::string>();
      t.shape = integer_array<int64_t>(entry.at("shape"), path_, "tensor " + name + ": shape");
      const auto offsets =
          integer_array<uint64_t>(entry.at("data_offsets"), path_, "tensor " + name + ": data_offsets");
      if (offsets.size() != 2 || offsets[1] < offsets[0]) fail(path_, "tensor " + name + ": bad data_offsets");
      if (offsets[1] > size - data_start) {
        fail(path_, "truncated: tensor " + name + " data_offsets end " + std::to_string(offsets[1]) +
                        " lies beyond the " + std::to_string(size - data_start) + " bytes of tensor data");
      }
      t.data = map_->data() + data_start + offsets[0];
      t.bytes = offsets[1] - offsets[0];
    } catch (const json::exception& e) {
      fail(path_, "tensor " + name + ": malformed header entry: " + e.what());
    }
    int64_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail(path_, "tensor " + name + ": negative dimension");
      if (d != 0 && n > (int64_t{1} << 48) / d) fail(path_, "tensor " + name + ": too many elements");
      n *= d;
    }
    if (const size_t es = element_size(t.dtype); es != 0 && static_cast<uint64_t>(n) * es != t.bytes) {
      fail(path_, "tensor " + name + ": " + std::to_string(t.bytes) + " bytes for shape " + shape_string(t.shape) +
                      " of " + t.dtype);
    }
    tensors_.push_back(std::move(t));
  }
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  for (const SafetensorsTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// --------------------------------------------------------------------------------------------
// config.json

namespace {

// Typed access to a JSON object with "<file>: <key>: <problem>" errors.
class JsonFields {
 public:
  JsonFields(const json& j, std::string file) : j_(j), file_(std::move(file)) {}

  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int integer(const std::string& key) const {
    if (!has(key)) fail(file_, key + ": missing");
    const json& v = j_.at(key);
    if (!v.is_number_integer()) fail(file_, key + ": expected an integer, found " + v.dump());
    const auto x = v.get<int64_t>();
    if (x <= 0 || x > std::numeric_limits<int>::max()) fail(file_, key + ": out of range (" + v.dump() + ")");
    return static_cast<int>(x);
  }
  int integer(const std::string& key, int fallback) const { return has(key) ? integer(key) : fallback; }

  double number(const std::string& key) const {
    if (!has(key)) fail(file_, key + ": missing");
    const json& v = j_.at(key);
    if (!v.is_number()) fail(file_, key + ": expected a number, found " + v.dump());
    return v.get<double>();
  }
  double number(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }

  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_string()) fail(file_, key + ": expected a string, found " + v.dump());
    return v.get<std::string>();
  }

  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_boolean()) fail(file_, key + ": expected true or false, found " + v.dump());
    return v.get<bool>();
  }

 private:
  const json& j_;
  std::string file_;
};

void read_rope_scaling(const json& rs, const std::string& file, ModelConfig& c) {
  if (rs.is_null()) return;
  if (!rs.is_object()) fail(file, "rope_scaling: expected an object");
  const JsonFields f(rs, file + ": rope_scaling");
  const std::string type = f.string("rope_type", f.string("type", "default"));
  if (type == "default") return;
  if (type == "linear") {
    c.rope_scaling = RopeScaling::Linear;
  } else if (type == "dynamic" && f.string("override", "") == "ntk") {
    // nammkit / NAMM reference: a static NTK base computed once from factor and alpha.
    c.rope_scaling = RopeScaling::NtkStatic;
    c.rope_ntk_alpha = static_cast<float>(f.number("alpha", 1.0));
  } else if (type == "llama3") {
    c.rope_scaling = RopeScaling::Llama3;
    c.rope_low_freq_factor = static_cast<float>(f.number("low_freq_factor"));
    c.rope_high_freq_factor = static_cast<float>(f.number("high_freq_factor"));
    c.rope_original_context = f.integer("original_max_position_embeddings");
  } else if (type == "dynamic") {
    fail(file, "rope_scaling: dynamic NTK scaling is not supported (only static NTK: \"override\": \"ntk\")");
  } else {
    fail(file, "rope_scaling: unsupported type '" + type + "' (supported: linear, dynamic+ntk override, llama3)");
  }
  c.rope_factor = static_cast<float>(f.number("factor"));
}

}  // namespace

ModelConfig read_hf_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  if (!file_exists(path)) fail(dir, "config.json: missing");
  const json j = parse_json_file(path);
  if (!j.is_object()) fail(path, "not a JSON object");
  const JsonFields f(j, path);
  ModelConfig c;
  const std::string model_type = f.string("model_type", "");
  if (model_type == "llama" || model_type == "mistral") {
    c.architecture = "llama";
  } else if (model_type == "qwen2") {
    c.architecture = "qwen2";
  } else {
    fail(path, "model_type: unsupported '" + model_type + "' (supported: llama, mistral, qwen2)");
  }
  c.name = base_name(dir);
  c.dim = f.integer("hidden_size");
  c.hidden_dim = f.integer("intermediate_size");
  c.n_layers = f.integer("num_hidden_layers");
  c.n_heads = f.integer("num_attention_heads");
  c.n_kv_heads = f.integer("num_key_value_heads", c.n_heads);
  c.head_dim = f.integer("head_dim", c.dim / c.n_heads);
  c.vocab_size = f.integer("vocab_size");
  c.max_seq_len = f.integer("max_position_embeddings");
  c.norm_eps = static_cast<float>(f.number("rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(f.number("rope_theta", 10000.0));
  c.rope_style = RopeStyle::HalfSplit;
  if (j.contains("rope_scaling")) read_rope_scaling(j.at("rope_scaling"), path, c);
  check_hyper_parameters(path, c,
                         {"rms_norm_eps", "rope_theta", "rope_scaling.factor", "rope_scaling.alpha",
                          "rope_scaling.low_freq_factor", "rope_scaling.high_freq_factor"});
  c.tied_embeddings = f.boolean("tie_word_embeddings", false);
  // Qwen2 always has Q/K/V biases; Llama-style models have them with attention_bias.
  c.qkv_bias = c.architecture == "qwen2" || f.boolean("attention_bias", false);
  return c;
}

// --------------------------------------------------------------------------------------------
// tokenizer.json

namespace {

// obj[key] as a string, `fallback` when absent. A value of another type is an Error naming the key:
// nlohmann's value() would throw its own exception type instead.
std::string text_of(const json& obj, const char* key, const std::string& fallback) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  const json& v = obj.at(key);
  if (!v.is_string()) throw Error(std::string("tokenizer.json: ") + key + ": expected a string, found " + v.dump());
  return v.get<std::string>();
}
bool flag_of(const json& obj, const char* key) {
  if (!obj.contains(key) || obj.at(key).is_null()) return false;
  const json& v = obj.at(key);
  if (!v.is_boolean())
    throw Error(std::string("tokenizer.json: ") + key + ": expected true or false, found " + v.dump());
  return v.get<bool>();
}

// Every pre-tokenizer in a (possibly nested) Sequence, flattened.
void collect_steps(const json& node, std::vector<const json*>& out) {
  if (!node.is_object()) return;
  const std::string type = text_of(node, "type", "");
  if (type == "Sequence") {
    for (const char* key : {"pretokenizers", "normalizers", "decoders"}) {
      if (node.contains(key) && node.at(key).is_array()) {
        for (const json& child : node.at(key)) collect_steps(child, out);
      }
    }
    return;
  }
  out.push_back(&node);
}

std::vector<const json*> steps_of(const json& j, const char* key) {
  std::vector<const json*> out;
  if (j.contains(key)) collect_steps(j.at(key), out);
  return out;
}

const json* find_step(const std::vector<const json*>& steps, const std::string& type) {
  for (const json* s : steps) {
    if (text_of(*s, "type", "") == type) return s;
  }
  return nullptr;
}

// The byte-level pre-split, recognised from the Split regex the tokenizer carries.
std::string byte_level_pre_split(const std::vector<const json*>& pre, const std::string& file) {
  for (const json* s : pre) {
    if (text_of(*s, "type", "") != "Split") continue;
    const json& pattern = s->contains("pattern") ? s->at("pattern") : json();
    const std::string regex = pattern.is_object() ? text_of(pattern, "Regex", text_of(pattern, "String", "")) : "";
    if (regex.find(R"(\p{N}{1,3})") != std::string::npos) return "llama3";
    if (regex.find(R"(|\p{N}|)") != std::string::npos) return "qwen2";
    if (regex.find(R"( ?\p{N}+)") != std::string::npos) return "gpt2";
    fail(file, "pre_tokenizer: unsupported Split pattern '" + regex + "'");
  }
  if (const json* bl = find_step(pre, "ByteLevel"); bl && bl->value("use_regex", true)) return "gpt2";
  fail(file, "pre_tokenizer: byte-level tokenizer without a recognised pre-split");
}

std::string merge_string(const json& m, const std::string& file) {
  if (m.is_string()) return m.get<std::string>();
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    return m[0].get<std::string>() + " " + m[1].get<std::string>();
  }
  fail(file, "model.merges: entry " + m.dump() + " is neither \"a b\" nor [a, b]");
}

// A token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::optional<std::string> token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return std::nullopt;
}

int32_t config_token_id(const json& config, const std::string& path, const char* key) {
  if (!config.contains(key)) return -1;
  const json& v = config.at(key);
  const json* id = v.is_number_integer() ? &v : nullptr;
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) id = &v[0];  // Llama-3.1 lists several EOS
  if (id == nullptr) return -1;
  if (id->get<int64_t>() < 0 || id->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    fail(path, std::string(key) + ": id " + id->dump() + " outside the vocabulary");
  }
  return id->get<int32_t>();
}

}  // namespace

TokenizerData load_hf_tokenizer(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  if (!file_exists(path)) fail(dir, "tokenizer.json: missing");
  const json j = parse_json_file(path);
  if (!j.is_object() || !j.contains("model") || !j.at("model").is_object()) fail(path, "model: missing");
  const json& model = j.at("model");
  if (const std::string type = text_of(model, "type", "BPE"); type != "BPE") {
    fail(path, "model.type: unsupported '" + type + "' (only BPE)");
  }
  if (!model.contains("vocab") || !model.at("vocab").is_object()) fail(path, "model.vocab: missing");

  // Ids index a table: bound them by what the file lists (or config.json's vocab_size, for padded
  // vocabularies) before allocating, so one stray id cannot cost gigabytes.
  const size_t n_added =
      j.contains("added_tokens") && j.at("added_tokens").is_array() ? j.at("added_tokens").size() : 0;
  int64_t id_limit = static_cast<int64_t>(model.at("vocab").size() + n_added);
  if (const std::string config_path = dir + "/config.json"; file_exists(config_path)) {
    const json config = parse_json_file(config_path);
    if (config.is_object() && config.contains("vocab_size") && config.at("vocab_size").is_number_integer()) {
      id_limit = std::max(id_limit, config.at("vocab_size").get<int64_t>());
    }
  }
  id_limit = std::min<int64_t>(id_limit, int64_t{1} << 24);
  TokenizerData t;
  auto place = [&](const std::string& piece, int64_t id) {
    if (id < 0 || id >= id_limit) {
      fail(path, "token '" + piece + "': id " + std::to_string(id) + " out of range (the vocabulary has " +
                     std::to_string(id_limit) + " ids)");
    }
    if (static_cast<size_t>(id) >= t.pieces.size()) t.pieces.resize(id + 1);
    t.pieces[id] = piece;
  };
  for (const auto& [piece, id] : model.at("vocab").items()) {
    if (!id.is_number_integer()) fail(path, "model.vocab: '" + piece + "' has a non-integer id");
    place(piece, id.get<int64_t>());
  }
  if (j.contains("added_tokens") && j.at("added_tokens").is_array()) {
    const json& list = j.at("added_tokens");
    for (size_t i = 0; i < list.size(); ++i) {
      // Checked before reading: nlohmann's value() throws its own exception on a wrong type.
      const json& added = list[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      if (!added.is_object()) fail(path, where + ": expected an object");
      if (!added.contains("id") || !added.at("id").is_number_integer())
        fail(path,
             where + ".id: expected an integer, found " + (added.contains("id") ? added.at("id").dump() : "none"));
      if (added.contains("content") && !added.at("content").is_string())
        fail(path, where + ".content: expected a string");
      if (added.contains("special") && !added.at("special").is_boolean())
        fail(path, where + ".special: expected true or false");
      const int64_t id = added.at("id").get<int64_t>();
      place(added.value("content", ""), id);
      if (added.value("special", false)) t.special_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (model.contains("merges") && model.at("merges").is_array()) {
    for (const json& m : model.at("merges")) t.merges.push_back(merge_string(m, path));
  }

  const auto pre = steps_of(j, "pre_tokenizer");
  const auto normalizers = steps_of(j, "normalizer");
  const auto decoders = steps_of(j, "decoder");
  const json* metaspace = find_step(pre, "Metaspace");
  bool space_replaced = false, prepended = false;
  for (const json* n : normalizers) {
    const std::string type = n->value("type", "");
    if (type == "Replace") space_replaced = true;
    if (type == "Prepend") prepended = true;
  }
  if (flag_of(model, "byte_fallback") || metaspace || space_replaced) {
    t.kind = TokenizerKind::SentencePiece;
    t.add_space_prefix = prepended;
    if (metaspace) {
      const std::string scheme =
          metaspace->value("prepend_scheme", metaspace->value("add_prefix_space", true) ? "always" : "never");
      t.add_space_prefix = scheme != "never";
    }
  } else if (find_step(pre, "ByteLevel") || find_step(decoders, "ByteLevel")) {
    t.kind = TokenizerKind::ByteLevelBPE;
    t.pre_tokenizer = byte_level_pre_split(pre, path);
  } else {
    fail(path, "model: unsupported BPE flavour (neither byte_fallback/Metaspace nor ByteLevel)");
  }

  auto id_of = [&](const std::string& piece) -> int32_t {
    for (size_t id = 0; id < t.pieces.size(); ++id) {
      if (t.pieces[id] == piece) return static_cast<int32_t>(id);
    }
    return -1;
  };
  if (const std::string unk =
          model.value("unk_token", json()).is_string() ? model.at("unk_token").get<std::string>() : "";
      !unk.empty()) {
    t.unk_id = id_of(unk);
  }
  // BOS/EOS: tokenizer_config.json names them; config.json has the ids otherwise.
  const std::string tc_path = dir + "/tokenizer_config.json";
  if (file_exists(tc_path)) {
    const json tc = parse_json_file(tc_path);
    if (tc.contains("bos_token")) {
      if (auto s = token_content(tc.at("bos_token"))) t.bos_id = id_of(*s);
    }
    if (tc.contains("eos_token")) {
      if (auto s = token_content(tc.at("eos_token"))) t.eos_id = id_of(*s);
    }
  }
  const std::string config_path = dir + "/config.json";
  if ((t.bos_id < 0 || t.eos_id < 0) && file_exists(config_path)) {
    const json config = parse_json_file(config_path);
    if (t.bos_id < 0) t.bos_id = config_token_id(config, config_path, "bos_token_id");
    if (t.eos_id < 0) t.eos_id = config_token_id(config, config_path, "eos_token_id");
  }
  for (int32_t id : {t.bos_id, t.eos_id}) {
    if (id >= static_cast<int32_t>(t.pieces.size()))
      fail(path, "bos/eos id " + std::to_string(id) + " outside the vocabulary");
  }
  return t;
}

// --------------------------------------------------------------------------------------------
// The model

namespace {

class HfModelBuilder {
 public:
  HfModelBuilder(std::string dir, std::vector<std::string> files) : dir_(std::move(dir)) {
    for (const std::string& f : files) files_.push_back(std::make_unique<SafetensorsFile>(f));
  }

  Model build() {
    Model m;
    m.path = dir_;
    m.format = "safetensors";
    m.config = read_hf_config(dir_);
    for (const auto& f : files_) m.storage.push_back(f->mapping());
    read_weights(m);
    TokenizerData tokenizer = load_hf_tokenizer(dir_);
    try {
      m.tokenizer = Tokenizer(std::move(tokenizer));
    } catch (const Error& e) {
      fail(dir_ + "/tokenizer.json", e.what());
    }
    return m;
  }

 private:
  struct Found {
    const SafetensorsFile* file;
    const SafetensorsTensor* tensor;
  };

  std::optional<Found> lookup(const std::string& name) const {
    for (const auto& f : files_) {
      if (const SafetensorsTensor* t = f->find(name)) return Found{f.get(), t};
    }
    return std::nullopt;
  }

  Found require(const std::string& name, const std::vector<int64_t>& shape) const {
    const std::optional<Found> found = lookup(name);
    if (!found) fail(dir_, "tensor " + name + ": missing");
    const SafetensorsTensor& t = *found->tensor;
    if (!dtype_from_safetensors(t.dtype)) {
      fail(found->file->path(), "tensor " + name + ": unsupported dtype " + t.dtype + " (supported: F32, F16, BF16)");
    }
    if (t.shape != shape) {
      fail(found->file->path(),
           "tensor " + name + ": shape " + shape_string(t.shape) + ", expected " + shape_string(shape));
    }
    return *found;
  }

  WeightMatrix matrix(Model& m, const std::string& name, int64_t rows, int64_t cols) const {
    const SafetensorsTensor& t = *require(name, {rows, cols}).tensor;
    const DType dtype = *dtype_from_safetensors(t.dtype);
    const void* data = t.data;
    // safetensors does not promise aligned data; kernels may load whole elements, so copy the odd ones.
    if (reinterpret_cast<uintptr_t>(data) % dtype_bytes(dtype, 1) != 0) {
      auto copy = std::make_shared<std::vector<uint64_t>>((t.bytes + 7) / 8);
      std::memcpy(copy->data(), t.data, t.bytes);
      data = copy->data();
      m.storage.push_back(copy);
    }
    return WeightMatrix{dtype, rows, cols, data};
  }

  std::vector<float> vector(const std::string& name, int64_t n) const {
    const SafetensorsTensor& t = *require(name, {n}).tensor;
    std::vector<float> v(n);
    dequantize(*dtype_from_safetensors(t.dtype), t.data, v.data(), n);
    return v;
  }

  void read_weights(Model& m) const {
    ModelConfig& c = m.config;
    m.token_embedding = matrix(m, "model.embed_tokens.weight", c.vocab_size, c.dim);
    if (!c.tied_embeddings && !lookup("lm_head.weight")) c.tied_embeddings = true;
    m.output = c.tied_embeddings ? m.token_embedding : matrix(m, "lm_head.weight", c.vocab_size, c.dim);
    m.final_norm = vector("model.norm.weight", c.dim);
    m.layers.resize(c.n_layers);
    for (int i = 0; i < c.n_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LayerWeights& l = m.layers[i];
      l.attn_norm = vector(p + "input_layernorm.weight", c.dim);
      l.wq = matrix(m, p + "self_attn.q_proj.weight", c.q_dim(), c.dim);
      l.wk = matrix(m, p + "self_attn.k_proj.weight", c.kv_dim(), c.dim);
      l.wv = matrix(m, p + "self_attn.v_proj.weight", c.kv_dim(), c.dim);
      l.wo = matrix(m, p + "self_attn.o_proj.weight", c.dim, c.q_dim());
      if (lookup(p + "self_attn.o_proj.bias"))
        fail(dir_, "tensor " + p + "self_attn.o_proj.bias: output projection bias is not supported");
      if (c.qkv_bias) {
        l.bq = vector(p + "self_attn.q_proj.bias", c.q_dim());
        l.bk = vector(p + "self_attn.k_proj.bias", c.kv_dim());
        l.bv = vector(p + "self_attn.v_proj.bias", c.kv_dim());
      }
      l.ffn_norm = vector(p + "post_attention_layernorm.weight", c.dim);
      l.w_gate = matrix(m, p + "mlp.gate_proj.weight", c.hidden_dim, c.dim);
      l.w_up = matrix(m, p + "mlp.up_proj.weight", c.hidden_dim, c.dim);
      l.w_down = matrix(m, p + "mlp.down_proj.weight", c.dim, c.hidden_dim);
    }
  }

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
};

// The weight files: the index's shards, else the file named, else model.safetensors, else the
// directory's only *.safetensors.
std::vector<std::string> weight_files(const std::string& path, const std::string& dir) {
  const std::string index = dir + "/model.safetensors.index.json";
  if (file_exists(index)) {
    const json j = parse_json_file(index);
    if (!j.contains("weight_map") || !j.at("weight_map").is_object()) fail(index, "weight_map: missing");
    std::set<std::string> shards;
    for (const auto& [name, file] : j.at("weight_map").items()) {
      if (!file.is_string()) fail(index, "weight_map: " + name + ": expected a file name");
      shards.insert(dir + "/" + file.get<std::string>());
    }
    for (const std::string& shard : shards) {
      if (!file_exists(shard)) fail(index, "weight_map: shard " + shard + " is missing");
    }
    return {shards.begin(), shards.end()};
  }
  if (!is_directory(path)) return {path};
  if (file_exists(dir + "/model.safetensors")) return {dir + "/model.safetensors"};
  std::vector<std::string> found;
  for (const std::string& name : list_directory(dir)) {
    if (name.ends_with(".safetensors")) found.push_back(dir + "/" + name);
  }
  if (found.size() != 1) {
    fail(dir,
         found.empty() ? "no .safetensors file" : "several .safetensors files but no model.safetensors.index.json");
  }
  return found;
}

}  // namespace

Model load_safetensors(const std::string& path) {
  std::string dir = is_directory(path) ? path : directory_of(path);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  Model model = HfModelBuilder(dir, weight_files(path, dir)).build();
  model.validate();
  return model;
}

}  // namespace nammkit
