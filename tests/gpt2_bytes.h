// GPT-2's byte -> character map (bytes_to_unicode), computed from its definition, for tests that build
// byte-level vocabularies by hand.
#pragma once
#include <string>

namespace nammkit::testing {

// The UTF-8 text of the character GPT-2's byte-level BPE uses for byte `b` (0..255): printable bytes
// map to themselves, the others to U+0100 + their rank among the non-printable ones.
inline std::string gpt2_char(int b) {
  auto printable = [](int x) { return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF); };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int x = 0; x < b; ++x) cp += printable(x) ? 0 : 1;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

}  // namespace nammkit::testing
