// GGUF (llama.cpp's checkpoint format, versions 2 and 3): a memory-mapped reader and the model builder.
//
// Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, then metadata key/values
// (u64-length strings, u32 type tags, arrays of any element type), tensor infos (name, dims as
// ne[0] = innermost, ggml type, offset), padding to general.alignment (default 32), tensor data.
//
// Model conventions (llama.cpp's): "llama" stores Q/K rows permuted so RoPE rotates interleaved pairs;
// "qwen2" keeps Hugging Face's half-split layout and has Q/K/V biases. Tensor names token_embd,
// blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}, output_norm,
// output (absent: tied to token_embd).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/file_io.h"
#include "transformer/model.h"

namespace nammkit {

enum class GgufType : uint32_t {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Integers (and bools) live in `integer` (u64 values bit-cast), floats in
// `number`, strings in `text`, array elements in `items` (all of type `element_type`).
struct GgufValue {
  GgufType type = GgufType::Uint32;
  GgufType element_type = GgufType::Uint8;  // for arrays
  int64_t integer = 0;
  double number = 0;
  std::string text;
  std::vector<GgufValue> items;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue strings(const std::vector<std::string>& v);
  static GgufValue f32s(const std::vector<float>& v);
  static GgufValue i32s(const std::vector<int32_t>& v);

  bool is_integer() const;  // any integer type or bool
  bool is_float() const { return type == GgufType::Float32 || type == GgufType::Float64; }
};

// ggml tensor type ids of the types nammkit loads (ggml_type_name knows the others by name).
enum : uint32_t {
  kGgmlF32 = 0,
  kGgmlF16 = 1,
  kGgmlQ4_0 = 2,
  kGgmlQ4_1 = 3,
  kGgmlQ5_0 = 6,
  kGgmlQ5_1 = 7,
  kGgmlQ8_0 = 8,
  kGgmlQ4_K = 12,
  kGgmlQ5_K = 13,
  kGgmlQ6_K = 14,
  kGgmlBF16 = 30
};
std::string ggml_type_name(uint32_t type);  // "Q4_K", or "type 99" when unknown
std::optional<DType> dtype_from_ggml(uint32_t type);
uint32_t ggml_type_of(DType t);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] is the innermost (contiguous) dimension
  uint32_t type = 0;        // ggml type id
  uint64_t offset = 0;      // from the start of the data section
  const uint8_t* data = nullptr;
  size_t bytes = 0;  // 0 for types nammkit cannot size (unsupported)

  int64_t elements() const;
};

class GgufFile {
 public:
  // Maps and parses the header, metadata and tensor infos; throws Error naming the file and the
  // problem (wrong magic, unsupported version, truncation, bad alignment, data past the end).
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  std::shared_ptr<const MappedFile> mapping() const { return map_; }

  const GgufValue* find(std::string_view key) const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Typed getters: missing keys give the default, or Error("<file>: <key>: missing") without one;
  // a value of the wrong type is an Error naming the key and both types.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

// tokenizer.ggml.pre <-> TokenizerData::pre_tokenizer ("gpt2", "llama3", "qwen2", "smollm").
std::string pre_tokenizer_from_gguf(const std::string& where, const std::string& pre);
std::string pre_tokenizer_to_gguf(const std::string& pre);

// The tokenizer of a GGUF file from its tokenizer.* metadata alone (tokenizer.ggml.model, pre,
// tokens, scores, token_type, merges, bos/eos/unknown ids, add_space_prefix, add_bos_token, and
// tokenizer.chat_template): the same builder load_gguf uses, without looking at any tensor, so it
// works for files whose weights nammkit cannot load. Errors name the file and the key.
Tokenizer load_gguf_tokenizer(const std::string& path);

// Loads a GGUF model (architectures llama and qwen2). Weights point into the memory map, which
// the Model keeps alive in its storage.
Model load_gguf(const std::string& path);

}  // namespace nammkit
