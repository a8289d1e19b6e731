// The language-modelling task: works on any model, including ones too small to retrieve anything.
//
// A sample is a window of `context_tokens` tokens of real text (BOS + context_tokens - 1 text
// tokens, BOS because the model was trained with it and it serves as the attention sink); the
// score is computed on its last `score_tokens` tokens, which the model predicts after having run
// the whole earlier window through its (policy-managed) cache:
//   log_likelihood = mean over scored tokens of log p(token | everything before it),
//   score          = exp(log_likelihood)  (the inverse perplexity, in (0, 1]).
// Normalising by the full-cache score (fitness.h) then gives exp(ll_policy - ll_full): exactly 1
// for the full cache, < 1 when evicting loses information, and comparable across tasks.
//
// Windows: the split's text (corpus.h) is tokenised once; window `index` starts at a seeded offset
// (sample_seed), so windows are deterministic and train/held-out windows come from disjoint text.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "tasks/sample.h"
#include "tasks/split.h"
#include "transformer/backend.h"
#include "transformer/tokenizer.h"

namespace nammkit {

struct LmTaskOptions {
  std::string text = "tinystories";  // a corpus name (corpus.h)
  std::string shared_dir;            // "" = default_shared_dir()
  Split split = Split::Train;
  int context_tokens = 1024;  // window length, BOS included
  int score_tokens = 256;     // scored tokens at the end of the window
  uint64_t seed = 0;
  void validate(const std::string& where) const;
};

// `samples` windows; Error when the split's text is shorter than one window.
Task make_lm_task(const LmTaskOptions& options, const Tokenizer& tokenizer, int samples);

// Runs tokens[0 .. n - score_tokens) through the session, then the scored part with all logits, and
// returns the mean log-probability (natural log) of tokens[n - score_tokens .. n). The session is
// reset first. Scored logits are requested in chunks so memory stays [chunk][vocab].
double mean_log_likelihood(InferenceSession& session, std::span<const int32_t> tokens, int score_tokens);

}  // namespace nammkit
