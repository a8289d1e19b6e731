// LongBench middle truncation: a prompt longer than the budget keeps its first and last halves.
//
// The reference (LongBench pred.py, NAMM's MemoryHFEvaluator with use_mid_cropping) tokenises the
// prompt (BOS included), and when it is longer than max_len keeps ids[:half] and ids[-half:]
// (half = max_len / 2), *decodes* both halves (BOS dropped) and concatenates the texts, which the
// caller re-tokenises. truncate_middle_text does exactly that. Decoding + re-encoding can merge or
// split tokens at the seam, so the re-encoded prompt may differ from max_len by a token or two;
// encode_truncated (what the runner uses) follows the reference and then, only if the result is
// still too long, cuts the ids in the middle once more so the budget is a hard limit.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "transformer/tokenizer.h"

namespace nammkit {

// Tokenising costs ~70 bytes of memory per prompt byte, but middle truncation keeps only max_len / 2
// tokens from each end: a prompt longer than 2 * max_len * kBytesPerTokenBound bytes is cut to its
// first and last max_len * kBytesPerTokenBound bytes (at UTF-8 character starts) before tokenising.
// No vocabulary averages 32 bytes per token, so the kept tokens are the same as the whole prompt's.
inline constexpr size_t kBytesPerTokenBound = 32;
std::string prompt_ends(const std::string& prompt, size_t max_len);

// Ids kept as they are: ids[:half] + ids[-half:] when ids.size() > max_len (half = max_len / 2).
std::vector<int32_t> truncate_middle_ids(std::span<const int32_t> ids, size_t max_len);

// The reference's text-level truncation; returns `prompt` unchanged when it fits.
std::string truncate_middle_text(const Tokenizer& tokenizer, const std::string& prompt, size_t max_len);

// The prompt's ids (BOS first) within max_len tokens. `truncated` (optional) tells whether it was cut.
std::vector<int32_t> encode_truncated(const Tokenizer& tokenizer, const std::string& prompt, size_t max_len,
                                      bool* truncated = nullptr);

}  // namespace nammkit
