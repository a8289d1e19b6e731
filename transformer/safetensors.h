// Hugging Face checkpoints: config.json + *.safetensors (single or sharded) + tokenizer.json.
//
// safetensors file: u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [b, e]},
// "__metadata__": {...}}, then the data (offsets relative to the end of the header).
// Sharded checkpoints list name -> file in model.safetensors.index.json ("weight_map").
//
// Tensor names: model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj
// (+ q/k/v bias for qwen2 or attention_bias), post_attention_layernorm, mlp.{gate,up,down}_proj},
// model.norm, lm_head (absent, or tie_word_embeddings: tied). Matrices F32/F16/BF16 stay in the
// memory map. RoPE rotates half-split pairs (rotate_half).
//
// tokenizer.json "BPE" models: byte_fallback / Metaspace / "▁" normalizers give a SentencePiece-style
// tokenizer (merge ranks drive it), a ByteLevel pre-tokenizer a byte-level BPE whose pre-split is
// recognised from its Split regex (\p{N}{1,3}: llama3, single \p{N}: qwen2, none: gpt2).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/file_io.h"
#include "transformer/model.h"

namespace nammkit {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;           // "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;  // outermost first (PyTorch order)
  const uint8_t* data = nullptr;
  size_t bytes = 0;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // throws Error naming the file

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(std::string_view name) const;
  std::shared_ptr<const MappedFile> mapping() const { return map_; }

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  std::vector<SafetensorsTensor> tensors_;
};

// Parses <dir>/config.json.
ModelConfig read_hf_config(const std::string& dir);
// Parses <dir>/tokenizer.json (+ tokenizer_config.json / config.json for BOS and EOS).
// Error("<dir>: tokenizer.json: missing") when absent.
TokenizerData load_hf_tokenizer(const std::string& dir);

// `path` is the model directory or one of its .safetensors files.
Model load_safetensors(const std::string& path);

}  // namespace nammkit
