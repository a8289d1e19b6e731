#include "tasks/truncation.h"

#include "core/error.h"

namespace nammkit {

std::vector<int32_t> truncate_middle_ids(std::span<const int32_t> ids, size_t max_len) {
  if (ids.size() <= max_len) return {ids.begin(), ids.end()};
  const size_t half = max_len / 2;
  std::vector<int32_t> out(ids.begin(), ids.begin() + half);
  out.insert(out.end(), ids.end() - half, ids.end());
  return out;
}

std::string prompt_ends(const std::string& prompt, size_t max_len) {
  const size_t margin = max_len * kBytesPerTokenBound;
  if (max_len > (size_t{1} << 32) || prompt.size() <= 2 * margin) return prompt;
  auto char_start = [&](size_t i) {  // back to the first byte of a UTF-8 character
    while (i > 0 && (static_cast<unsigned char>(prompt[i]) & 0xC0) == 0x80) --i;
    return i;
  };
  const size_t head = char_start(margin), tail = char_start(prompt.size() - margin);
  return prompt.substr(0, head) + prompt.substr(tail);
}

std::string truncate_middle_text(const Tokenizer& tokenizer, const std::string& whole, size_t max_len) {
  const std::string prompt = prompt_ends(whole, max_len);
  const std::vector<int32_t> ids = tokenizer.encode(prompt, /*add_bos=*/true);
  if (ids.size() <= max_len) return prompt;
  const size_t half = max_len / 2;
  return tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.begin() + half)) +
         tokenizer.decode(std::vector<int32_t>(ids.end() - half, ids.end()));
}

std::vector<int32_t> encode_truncated(const Tokenizer& tokenizer, const std::string& prompt, size_t max_len,
                                      bool* truncated) {
  if (max_len < 2) fail("truncation", "max_len " + std::to_string(max_len) + " leaves no room for a prompt");
  const std::string ends = prompt_ends(prompt, max_len);
  std::vector<int32_t> ids = tokenizer.encode(ends, /*add_bos=*/true);
  if (truncated) *truncated = ids.size() > max_len || ends.size() < prompt.size();
  if (ids.size() <= max_len) return ids;
  ids = tokenizer.encode(truncate_middle_text(tokenizer, ends, max_len), /*add_bos=*/true);
  return truncate_middle_ids(ids, max_len);
}

}  // namespace nammkit
