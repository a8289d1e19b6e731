// Chat templates by family (see chat_template.h).
#include "transformer/chat_template.h"

#include "core/error.h"

namespace nammkit {

namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";

// Jinja string escapes inside a literal: \n \t \r \\ \' \". Other backslashes stay as written.
std::string unescape_jinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\':
      case '\'':
      case '"': out += c; break;
      default: out += '\\'; out += c;
    }
  }
  return out;
}

// Appends tok.encode(text) (no BOS).
void append_text(const Tokenizer& tok, const std::string& text, std::vector<int32_t>& ids) {
  const std::vector<int32_t> part = tok.encode(text, false);
  ids.insert(ids.end(), part.begin(), part.end());
}

}  // namespace

std::optional<std::string> chatml_default_system(std::string_view text) {
  const std::string head = std::string(kImStart) + "system";
  for (size_t at = text.find(head); at != std::string_view::npos; at = text.find(head, at + 1)) {
    size_t body = at + head.size();
    if (text.compare(body, 1, "\n") == 0) {
      body += 1;
    } else if (text.compare(body, 2, "\\n") == 0) {
      body += 2;
    } else {
      continue;
    }
    const size_t end = text.find(kImEnd, body);
    if (end == std::string_view::npos) continue;
    const std::string_view raw = text.substr(body, end - body);
    // Only a literal: no quote closing the string, no Jinja expression or statement inside.
    bool literal = raw.find("{{") == std::string_view::npos && raw.find("{%") == std::string_view::npos;
    for (size_t i = 0; literal && i < raw.size(); ++i) {
      if (raw[i] == '\\') {
        ++i;
      } else if (raw[i] == '\'' || raw[i] == '"') {
        literal = false;
      }
    }
    if (literal) return unescape_jinja(raw);
  }
  return std::nullopt;
}

ChatTemplate chat_template_of(const Tokenizer& tok, const std::string& where) {
  const std::string& text = tok.data().chat_template;
  if (text.empty()) fail(where, "tokenizer.chat_template: missing (--chat needs a chat model's template)");
  if (text.find(kImStart) == std::string::npos || text.find(kImEnd) == std::string::npos) {
    fail(where, "tokenizer.chat_template: not a template family nammkit knows (supported: ChatML, <|im_start|>)");
  }
  ChatTemplate chat;
  chat.family = ChatTemplate::Family::ChatML;
  chat.start_id = tok.piece_id(kImStart);
  chat.end_id = tok.piece_id(kImEnd);
  if (chat.start_id < 0 || chat.end_id < 0) {
    fail(where, "tokenizer.chat_template: ChatML, but the vocabulary has no " +
                    std::string(chat.start_id < 0 ? kImStart : kImEnd) + " token");
  }
  chat.default_system = chatml_default_system(text);
  chat.stop_ids.push_back(chat.end_id);
  if (tok.eos_id() >= 0 && tok.eos_id() != chat.end_id) chat.stop_ids.push_back(tok.eos_id());
  return chat;
}

std::vector<int32_t> apply_chat_template(const ChatTemplate& chat, const Tokenizer& tok,
                                         const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::vector<int32_t> ids;
  // Each stretch of text between two special tokens is encoded on its own, as HF's added-token split does.
  auto turn = [&](const std::string& role, const std::string& content) {
    ids.push_back(chat.start_id);
    append_text(tok, role + "\n" + content, ids);
    ids.push_back(chat.end_id);
    append_text(tok, "\n", ids);
  };
  if (chat.default_system && !messages.empty() && messages.front().role != "system") {
    turn("system", *chat.default_system);
  }
  for (const ChatMessage& m : messages) turn(m.role, m.content);
  if (add_generation_prompt) {
    ids.push_back(chat.start_id);
    append_text(tok, "assistant\n", ids);
  }
  return ids;
}

}  // namespace nammkit
