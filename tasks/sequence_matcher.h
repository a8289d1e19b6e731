// difflib.SequenceMatcher(None, a, b).ratio() for code-point strings, as fuzzywuzzy's fuzz.ratio
// computes it when python-Levenshtein is not installed (LongBench's requirements do not install it).
//
// Faithful to CPython's difflib: b2j index of b, the "autojunk" popularity heuristic (b of 200+
// elements: elements occurring more than len(b)/100 + 1 times are not used to seed matches, but
// do extend them), find_longest_match with its earliest-in-a / earliest-in-b tie breaking, and the
// recursive get_matching_blocks. ratio = 2 M / (len(a) + len(b)), 1.0 when both are empty.
#pragma once
#include <string_view>

namespace nammkit {

// Total size M of difflib's matching blocks of a against b.
size_t difflib_matches(std::u32string_view a, std::u32string_view b);
double difflib_ratio(std::u32string_view a, std::u32string_view b);

}  // namespace nammkit
