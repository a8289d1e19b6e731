// Writing GGUF v3: metadata, tensors (F32, F16, BF16, Q8_0) and whole models.
//
// save_gguf converts any loaded Model (llama2.c, Hugging Face, GGUF) into llama.cpp's conventions:
//  - architecture "llama": Q/K rows are stored for interleaved RoPE. A model whose rows are laid out
//    half-split (Hugging Face) gets llama.cpp's conversion permutation: within each head, new row
//    2i+s = old row s*head_dim/2 + i (s in {0,1}). q.k products are unchanged because Q and K are
//    permuted alike and the runtime rotates pairs (2i, 2i+1) instead of (i, i+d/2).
//  - architecture "qwen2": half-split rows, as Hugging Face stores them (the inverse permutation
//    applies to an interleaved source). Q/K/V biases are permuted with their rows.
//  - norms and biases are F32; matrices use the requested type, except that Q8_0 needs rows that are
//    a multiple of 32 wide: other matrices fall back to F16 (as llama.cpp's quantizer does).
//  - tied embeddings: no output.weight tensor.
//  - RoPE scaling: linear as rope.scaling.type/factor; Llama-3 and static NTK as type "llama3" / "ntk"
//    with extra keys rope.scaling.{low_freq_factor, high_freq_factor, original_context_length,
//    ntk_alpha} (nammkit reads them; llama.cpp expects a rope_freqs tensor for Llama-3 instead).
//  - SentencePiece tokenizers: model "llama" with scores and token types; if the source carried HF
//    merges instead of scores, the merges are written too and scores derived from merge ranks.
//
// The file is assembled in memory and written atomically (write_file_atomic).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "transformer/gguf.h"
#include "transformer/model.h"

namespace nammkit {

class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32);  // a non-default alignment is written as general.alignment

  // Sets a metadata key (replacing an earlier value of the same key; order of first setting is kept).
  void set(const std::string& key, GgufValue value);

  // Adds a tensor of any ggml type from its encoded bytes (checked against ne for the types nammkit knows).
  // ne[0] is the innermost dimension: a [rows][cols] matrix has ne = {cols, rows}.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, uint32_t ggml_type, std::string bytes);
  // Adds a tensor from f32 values, converted to `type`.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, DType type, const float* values);

  std::string serialize() const;
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type;
    std::string bytes;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

// Encodes `n` f32 values as `type`: F16/BF16 round to nearest even; Q8_0 per block of 32 with
// d = max|x| / 127 stored as f16 and q = round(x / d), as llama.cpp's quantize_row_q8_0.
std::string encode_f32(const float* values, int64_t n, DType type);

// Writes `model` as a GGUF file of its architecture (llama or qwen2) with matrices in `weight_type`.
void save_gguf(const Model& model, const std::string& path, DType weight_type);

}  // namespace nammkit
