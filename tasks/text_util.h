// Unicode helpers for the metrics: just enough of Python's str semantics (split, lower, \d, \w) to
// reproduce the reference metrics on UTF-8 text without an ICU dependency.
//
// Coverage (documented approximations of Python's full Unicode tables):
//  - whitespace: ASCII whitespace, \x1c-\x1f, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
//    U+202F, U+205F, U+3000 (exactly Python's str.isspace set);
//  - lower(): ASCII, Latin-1, Latin Extended-A (even/odd pairs), Greek and Cyrillic capitals;
//  - digits (\d): ASCII and fullwidth 0-9;
//  - word characters (\w): ASCII letters/digits/'_', and every non-ASCII code point that is not
//    whitespace or punctuation of the Latin-1, General Punctuation, CJK Symbols or fullwidth ASCII
//    punctuation blocks.
// Invalid UTF-8 bytes decode to U+FFFD one byte at a time, so no input throws.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace nammkit::text {

std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);
std::string encode_utf8(char32_t c);

bool is_space(char32_t c);
bool is_digit(char32_t c);
bool is_word_char(char32_t c);
bool is_ascii_punct(char32_t c);  // Python's string.punctuation
char32_t to_lower(char32_t c);

std::u32string lower(std::u32string_view s);
// Python's str.split() with no argument: runs of whitespace separate, no empty pieces.
std::vector<std::u32string> split_whitespace(std::u32string_view s);
// Python's str.split(sep) with a one-character separator: keeps empty pieces.
std::vector<std::u32string> split_on(std::u32string_view s, char32_t sep);
// re.findall(r"\d+", s).
std::vector<std::u32string> find_numbers(std::u32string_view s);

}  // namespace nammkit::text
