// The legacy llama2.c checkpoint (karpathy/llama2.c run.c) and its tokenizer.bin.
//
// Model file: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
// a negative vocab_size means the classifier is NOT shared with the embedding), then f32 tensors
// with all layers of one kind together: tok_emb [vocab][dim], rms_att [L][dim], wq [L][q_dim][dim],
// wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][q_dim], rms_ffn [L][dim], w1 [L][hidden][dim],
// w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim], freq_cis_real and freq_cis_imag
// [seq_len][head_dim/2] (skipped: the runtime computes RoPE itself), then wcls [vocab][dim] when
// not shared. RoPE rotates interleaved pairs with theta 10000; RMSNorm eps 1e-5.
//
// Tokenizer file (tok<vocab>.bin or tokenizer.bin beside the model): int32 max_token_length, then per
// token: f32 score, int32 byte length, bytes. Pieces use ' ' where SentencePiece uses "▁" and BOS/EOS
// are "\n<s>\n" / "\n</s>\n"; the loader converts both to SentencePiece's spelling. Ids: 0 <unk>,
// 1 BOS, 2 EOS, then <0x00>..<0xFF> byte fallback.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "transformer/model.h"

namespace nammkit {

struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

// Why the header cannot be a llama2.c model (empty optional when plausible).
std::optional<std::string> llama2c_header_problem(const Llama2cHeader& h);
// The exact file size the header implies (call only on a plausible header).
uint64_t llama2c_expected_size(const Llama2cHeader& h);

// Reads the tokenizer of a llama2.c model: the first of tok<vocab>.bin, tokenizer.bin in the model's
// directory. Error("<model path>: tokenizer: missing (looked for ...)") when there is none.
TokenizerData load_llama2c_tokenizer(const std::string& model_path, int vocab_size);

// Weights point into the memory map (kept in Model::storage).
Model load_llama2c(const std::string& path);

}  // namespace nammkit
