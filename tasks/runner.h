// Runs one Sample on a model under a memory policy and scores it.
//
// Generate samples: tokenise with BOS, middle-truncate to max_context - max_new_tokens (truncation.h),
// greedy-decode up to max_new_tokens (stop at EOS, and at the first newline when the sample asks),
// decode, post-process (first line for LongBench trec/triviaqa/samsum/lsht: prediction.lstrip('\n')
// .split('\n')[0]) and score with the sample's metric.
// LogLikelihood samples: mean_log_likelihood (lm_task.h); score = exp(log_likelihood), or with
// Sample::sequence_probability exp(log_likelihood × score_tokens).
// Either way the result carries the cache statistics of the session after the run. Runs on whatever
// device the Backend is on.
#pragma once
#include <string>
#include <vector>

#include "tasks/sample.h"
#include "transformer/backend.h"
#include "transformer/memory_policy.h"

namespace nammkit {

struct RunOptions {
  // Tokens the model may attend over: 0 = the model's max_seq_len. Generate prompts are cut to
  // max_context - max_new_tokens; LogLikelihood windows longer than an explicit max_context lose
  // their first tokens (BOS and the scored tail stay; with 0 they run whole). (Policies that evict can run past a
  // model's trained length, so tasks sized beyond it, e.g. 1,024 tokens on the 512-token stories260K, set this
  // explicitly.)
  int max_context = 0;
  SessionOptions session;
};

// Cache occupancy per layer after a run (tokens per KV head).
struct CacheStats {
  std::vector<double> mean_per_layer;  // mean over the layer's KV heads
  std::vector<int> max_per_layer;      // max over the layer's KV heads
  double mean = 0;                     // mean over all (layer, KV head)
  int max = 0;
};
CacheStats cache_stats(const InferenceSession& session);

struct RunResult {
  double score = 0;           // metric in [0, 1]; LogLikelihood: exp(log_likelihood) (see above)
  double log_likelihood = 0;  // LogLikelihood: mean log-probability per scored token (nats)
  std::string output;         // Generate: the decoded text that was scored
  int prompt_tokens = 0;      // tokens fed before generation (after truncation), BOS included
  int generated_tokens = 0;
  bool truncated = false;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double tokens_per_second = 0;  // (prompt + generated) / total seconds
  CacheStats cache;
};

RunResult run_sample(const Backend& backend, MemoryPolicy* policy, const Sample& sample,
                     const RunOptions& options = {});

// LongBench's first-line post-processing.
std::string first_line(const std::string& text);

}  // namespace nammkit
