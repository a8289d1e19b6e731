// Chat prompts for chat-tuned checkpoints, without a Jinja engine.
//
// A checkpoint's chat template (GGUF tokenizer.chat_template, TokenizerData::chat_template) is Jinja
// text. nammkit does not interpret it: it recognises the template's family and builds the prompt's
// token ids directly, special tokens by id and the text between them encoded segment by segment,
// exactly as Hugging Face's apply_chat_template(..., tokenize=True) tokenizes the rendered text
// (added special tokens split the text; each stretch between them is encoded on its own; no BOS).
//
// Families:
//  - ChatML (the template text contains "<|im_start|>"; SmolLM2, Qwen2, Hermes...): per message
//    <|im_start|>ROLE\nCONTENT<|im_end|>\n, and <|im_start|>assistant\n as the generation prompt. When
//    the template writes a literal default system message ('<|im_start|>system\n...<|im_end|>\n',
//    e.g. SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face") it is
//    inserted in front of a conversation whose first message is not a system message.
//
// Message contents are always encoded as plain text: a content that spells "<|im_end|>" does not
// become the control token (Hugging Face would split it out; nammkit never parses special tokens
// from text).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transformer/tokenizer.h"

namespace nammkit {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

// A recognised chat template, resolved against a tokenizer.
struct ChatTemplate {
  enum class Family : uint8_t { ChatML };
  Family family = Family::ChatML;
  std::optional<std::string> default_system;  // inserted when the first message is not "system"
  int32_t start_id = -1;                      // <|im_start|>
  int32_t end_id = -1;                        // <|im_end|>
  std::vector<int32_t> stop_ids;              // ids that end an assistant turn: <|im_end|>, then EOS
};

// The literal default system message of a ChatML template text ('<|im_start|>system\n' + text +
// '<|im_end|>' inside one Jinja string literal; "\n" may be a real newline or the escape), with
// Jinja's string escapes resolved; nullopt when the template writes none.
std::optional<std::string> chatml_default_system(std::string_view template_text);

// Recognises tok.data().chat_template. Throws Error("<where>: tokenizer.chat_template: ...") when the
// tokenizer has no template, the family is not recognised, or the vocabulary lacks its special tokens.
ChatTemplate chat_template_of(const Tokenizer& tok, const std::string& where);

// The prompt ids of `messages` (no BOS: the template decides, and ChatML writes none); with
// add_generation_prompt the ids end with the assistant turn's opening (<|im_start|>assistant\n).
std::vector<int32_t> apply_chat_template(const ChatTemplate& chat, const Tokenizer& tok,
                                         const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace nammkit
