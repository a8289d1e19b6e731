#include "tasks/lm_task.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "tasks/corpus.h"
#include "tasks/data_paths.h"

namespace nammkit {

void LmTaskOptions::validate(const std::string& where) const {
  if (context_tokens < 2) fail(where, "context_tokens: must be >= 2");
  if (score_tokens < 1 || score_tokens >= context_tokens)
    fail(where, "score_tokens: must be within 1..context_tokens-1 (" + std::to_string(context_tokens - 1) + ")");
}

Task make_lm_task(const LmTaskOptions& options, const Tokenizer& tokenizer, int samples) {
  const std::string where = "lm: " + options.text + " (" + split_name(options.split) + ")";
  options.validate(where);
  if (tokenizer.empty()) fail(where, "tokenizer: the model has no tokenizer");
  const std::string corpus =
      load_corpus(options.text, options.shared_dir.empty() ? default_shared_dir() : options.shared_dir);
  const std::vector<int32_t> ids = tokenizer.encode(split_text(corpus, options.split), /*add_bos=*/false);
  const size_t body = static_cast<size_t>(options.context_tokens - 1);
  if (ids.size() < body)
    fail(where, "context_tokens: the split has " + std::to_string(ids.size()) + " tokens, fewer than a window of " +
                    std::to_string(body) + " (+BOS); use a shorter window or a larger text");
  Task task;
  task.name = "lm/" + options.text;
  for (int i = 0; i < samples; ++i) {
    std::mt19937_64 rng(sample_seed(options.seed, options.split, static_cast<uint64_t>(i)));
    const size_t offset = static_cast<size_t>(rng() % (ids.size() - body + 1));
    Sample s;
    s.kind = SampleKind::LogLikelihood;
    s.id = "lm/" + options.text + "/" + split_name(options.split) + "/" + std::to_string(options.seed) + "/" +
           std::to_string(i) + "@" + std::to_string(offset);
    if (tokenizer.adds_bos()) s.tokens.push_back(tokenizer.bos_id());  // SmolLM2 has none
    s.tokens.insert(s.tokens.end(), ids.begin() + static_cast<std::ptrdiff_t>(offset),
                    ids.begin() + static_cast<std::ptrdiff_t>(offset + body));
    s.score_tokens = options.score_tokens;
    task.samples.push_back(std::move(s));
  }
  return task;
}

double mean_log_likelihood(InferenceSession& session, std::span<const int32_t> tokens, int score_tokens) {
  const size_t n = tokens.size();
  if (score_tokens < 1 || static_cast<size_t>(score_tokens) >= n)
    fail("lm", "score_tokens: " + std::to_string(score_tokens) + " does not fit a window of " + std::to_string(n));
  session.reset();
  const size_t first_scored = n - static_cast<size_t>(score_tokens);
  // The logits after token t predict token t + 1: feed up to first_scored - 1 without logits, then
  // the rest with one row per fed token.
  const std::vector<float>* last = &session.feed(tokens.subspan(0, first_scored));
  const int vocab = session.config().vocab_size;
  double total = 0;
  auto log_prob_row = [vocab](const float* logits, int32_t target) {
    return log_prob(std::span<const float>(logits, size_t(vocab)), target);
  };
  total += log_prob_row(last->data(), tokens[first_scored]);
  constexpr size_t kChunk = 128;
  std::vector<float> rows;
  for (size_t pos = first_scored; pos + 1 < n; pos += kChunk) {
    const size_t len = std::min(kChunk, n - 1 - pos);
    session.feed(tokens.subspan(pos, len), &rows);
    for (size_t r = 0; r < len; ++r)
      total += log_prob_row(rows.data() + r * static_cast<size_t>(vocab), tokens[pos + r + 1]);
  }
  return total / static_cast<double>(score_tokens);
}

}  // namespace nammkit
