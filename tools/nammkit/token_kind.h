// The kind of text a token stands for, for the analysis of what a memory policy forgets
// (tools/nammkit/forgetting_summary.h): the NAMM paper reports which kinds of tokens its memory
// managers keep and drop, e.g. that they forget function words and punctuation before rare content.
//
// Kinds are decided from the token's decoded text (Tokenizer::decode_token), in this order:
//   special            BOS, EOS and other control tokens (decided by id: they decode to nothing)
//   whitespace         only spaces, tabs and newlines (also the empty text of a leading "▁")
//   punctuation        only punctuation and symbols once surrounding spaces are stripped
//                      (ASCII !"#...~, Latin-1 ¡...¿ « » etc., General Punctuation — ’ “ ” …, CJK 、。)
//   number             only digits, possibly with ',' or '.' inside ("42", " 1,000", "3.5")
//   word_start         contains a letter and starts a word: it begins with a space, starts the text,
//                      or follows a token ending in whitespace or punctuation (" the", "Once", "Hello" after '"')
//   word_continuation  contains a letter and continues the previous token's word ("ing" after " runn")
//   other              anything else: mixed digits and symbols ("3)"), bytes of an unfinished UTF-8 character
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "transformer/tokenizer.h"

namespace nammkit::cli {

enum class TokenKind { Special, Whitespace, Punctuation, Number, WordStart, WordContinuation, Other };
inline constexpr int kTokenKindCount = 7;

// "special", "whitespace", "punctuation", "number", "word_start", "word_continuation", "other".
const char* token_kind_name(TokenKind kind);

// A non-special token from its decoded text and the decoded text of the token before it ("" at the
// start of the text or after a special token).
TokenKind classify_token_text(std::string_view text, std::string_view previous);

// A token sequence as the model saw it: each token's decoded text (as it reads after the one before it)
// and its kind. `texts` and `kinds` are resized to ids.size().
void classify_tokens(const Tokenizer& tokenizer, std::span<const int32_t> ids, std::vector<std::string>& texts,
                     std::vector<TokenKind>& kinds);

}  // namespace nammkit::cli
