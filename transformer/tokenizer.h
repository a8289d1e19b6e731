// Tokenizers as model checkpoints carry them.
//
// Two algorithms cover the Llama family:
//  - SentencePiece-style BPE: pieces with scores, "▁" for spaces, <0xXX> byte fallback
//    (llama2.c tokenizer.bin, GGUF tokenizer.ggml.model = "llama", HF tokenizer.json with byte_fallback);
//  - byte-level BPE with ranked merges (GPT-2 / Llama-3 / Qwen2 / SmolLM: GGUF "gpt2", HF ByteLevel).
// Loaders build a TokenizerData; Tokenizer implements encode/decode for it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nammkit {

enum class TokenizerKind : uint8_t { None, SentencePiece, ByteLevelBPE };

struct TokenizerData {
  TokenizerKind kind = TokenizerKind::None;
  std::vector<std::string> pieces;   // id -> piece as stored ("▁the", "<0x0A>", "Ġthe")
  std::vector<float> scores;         // SentencePiece merge priority (higher first); may be empty
  std::vector<std::string> merges;   // "a b" in rank order; may be empty. For SentencePiece (HF
                                     // byte_fallback BPE) merges, when present, replace scores
  std::vector<int32_t> special_ids;  // control tokens never produced by encode()
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  bool add_space_prefix = true;  // SentencePiece: prepend "▁" to the text (llama, llama2.c)
  bool add_bos = true;           // the model was trained with BOS first (GGUF tokenizer.ggml.add_bos_token)
  std::string pre_tokenizer;     // byte-level: "gpt2", "llama3", "qwen2", "smollm" (pre-split)
  std::string chat_template;     // the checkpoint's Jinja chat template (GGUF tokenizer.chat_template); may be empty
};

// The byte-level pre-split ("gpt2", "llama3", "qwen2" or "smollm", matched by hand): the chunks BPE
// runs on, in order, covering the text. "smollm" is HF's Sequence[Digits(individual_digits),
// ByteLevel]: every \p{N} character is a chunk of its own and the GPT-2 regex runs separately on the
// text between them (so " 42" -> " " "4" "2", "a  1" -> "a" "  " "1"). Exposed for tests and debugging.
std::vector<std::string_view> byte_level_pre_split(std::string_view text, const std::string& pre_tokenizer);

class Tokenizer {
 public:
  Tokenizer() = default;
  explicit Tokenizer(TokenizerData data);

  bool empty() const { return data_.kind == TokenizerKind::None; }
  int vocab_size() const { return static_cast<int>(data_.pieces.size()); }
  int32_t bos_id() const { return data_.bos_id; }
  int32_t eos_id() const { return data_.eos_id; }
  // Whether encode(text, true) puts BOS first: false for models trained without it (SmolLM2).
  bool adds_bos() const { return data_.add_bos; }
  const TokenizerData& data() const { return data_; }
  // The id of the piece spelled exactly `piece` (control tokens included, e.g. "<|im_start|>"), or -1.
  // A linear scan: for one-off lookups.
  int32_t piece_id(std::string_view piece) const;

  // Text -> ids. With add_bos the BOS id comes first when the model uses one (adds_bos(); as
  // llama.cpp's add_special): callers ask for "the model's prompt start", not for BOS at any price.
  // Control tokens are never produced from text: their spelling is encoded as ordinary text.
  // Byte level: bytes whose character is missing from the vocabulary are dropped (as HF / llama.cpp).
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // Ids -> text (BOS/EOS and control tokens skipped; byte tokens reassembled into UTF-8).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The text of one token as it would appear after `prev` (used for streaming output; prev = BOS or
  // -1 marks the start of the text, where SentencePiece drops the space it prepended).
  std::string decode_token(int32_t prev, int32_t id) const;

 private:
  TokenizerData data_;
  std::unordered_map<std::string, int32_t> piece_to_id_;
  std::unordered_map<std::string, int32_t> merge_rank_;
  std::vector<int32_t> byte_to_id_;  // SentencePiece byte fallback <0xXX> ids (-1 when absent)
  std::vector<bool> control_;        // id -> BOS/EOS/special: skipped by decode, never encoded
  std::vector<bool> byte_in_vocab_;  // byte level: whether the byte's GPT-2 character is a piece

  void encode_sentencepiece(std::string_view text, std::vector<int32_t>& out) const;
  void encode_byte_level(std::string_view text, std::vector<int32_t>& out) const;
  // Appends the id of `symbol`, or its bytes / characters when it is not a piece of its own.
  void emit_piece(const std::string& symbol, std::vector<int32_t>& out) const;
  std::string piece_text(int32_t id) const;  // the bytes a token stands for
};

}  // namespace nammkit
