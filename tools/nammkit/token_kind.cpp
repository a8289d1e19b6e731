#include "tools/nammkit/token_kind.h"

#include <algorithm>

#include "tasks/text_util.h"

namespace nammkit::cli {
namespace {

constexpr char32_t kInvalid = 0xFFFD;  // what decode_utf8 makes of a byte that is no whole character

bool is_letter(char32_t c) { return c != kInvalid && c != U'_' && text::is_word_char(c) && !text::is_digit(c); }
bool is_punctuation(char32_t c) { return c != kInvalid && !text::is_space(c) && (c == U'_' || !text::is_word_char(c)); }

std::u32string_view trim_spaces(std::u32string_view s) {
  while (!s.empty() && text::is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && text::is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Digits with ',' or '.' only between them: "1,000" and "3.5", not "." alone.
bool is_number(std::u32string_view s) {
  if (s.empty() || !text::is_digit(s.front()) || !text::is_digit(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char32_t c) { return text::is_digit(c) || c == U',' || c == U'.'; });
}

// A word-like token starts a word unless it is glued to a letter or digit that ends the token before.
bool starts_word(std::u32string_view text, std::string_view previous) {
  if (text::is_space(text.front()) || previous.empty()) return true;
  const std::u32string before = text::decode_utf8(previous);
  const char32_t last = before.back();
  return text::is_space(last) || is_punctuation(last);
}

}  // namespace

const char* token_kind_name(TokenKind kind) {
  switch (kind) {
    case TokenKind::Special: return "special";
    case TokenKind::Whitespace: return "whitespace";
    case TokenKind::Punctuation: return "punctuation";
    case TokenKind::Number: return "number";
    case TokenKind::WordStart: return "word_start";
    case TokenKind::WordContinuation: return "word_continuation";
    case TokenKind::Other: return "other";
  }
  return "other";
}

TokenKind classify_token_text(std::string_view text, std::string_view previous) {
  const std::u32string chars = text::decode_utf8(text);
  const std::u32string_view core = trim_spaces(chars);
  if (core.empty()) return TokenKind::Whitespace;
  if (std::all_of(core.begin(), core.end(), is_punctuation)) return TokenKind::Punctuation;
  if (is_number(core)) return TokenKind::Number;
  if (std::none_of(core.begin(), core.end(), [](char32_t c) { return c == kInvalid; }) &&
      std::any_of(core.begin(), core.end(), is_letter))
    return starts_word(chars, previous) ? TokenKind::WordStart : TokenKind::WordContinuation;
  return TokenKind::Other;
}

void classify_tokens(const Tokenizer& tokenizer, std::span<const int32_t> ids, std::vector<std::string>& texts,
                     std::vector<TokenKind>& kinds) {
  const std::vector<int32_t>& specials = tokenizer.data().special_ids;
  auto is_special = [&](int32_t id) {
    return id == tokenizer.bos_id() || id == tokenizer.eos_id() ||
           std::find(specials.begin(), specials.end(), id) != specials.end();
  };
  texts.assign(ids.size(), {});
  kinds.assign(ids.size(), TokenKind::Other);
  int32_t previous_id = -1;
  for (size_t i = 0; i < ids.size(); ++i) {
    texts[i] = tokenizer.decode_token(previous_id, ids[i]);
    if (is_special(ids[i])) {
      kinds[i] = TokenKind::Special;
    } else {
      const bool after_text = i > 0 && kinds[i - 1] != TokenKind::Special;
      kinds[i] = classify_token_text(texts[i], after_text ? std::string_view(texts[i - 1]) : std::string_view());
    }
    previous_id = ids[i];
  }
}

}  // namespace nammkit::cli
