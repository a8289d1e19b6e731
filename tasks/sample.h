// What a task hands to the runner: one prompt (or one scored text window) with its answers and
// scoring rule. Every task generator and loader produces these; runner.h consumes them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tasks/metrics.h"

namespace nammkit {

enum class SampleKind {
  Generate,       // greedy generation from `prompt`, scored with `metric` against `answers`
  LogLikelihood,  // teacher-forced `tokens`; the mean log-probability of the last `score_tokens`
};

struct Sample {
  // Stable identity of this prompt within its task (dataset _id, or "<split>/<seed>/<index>"):
  // the key of the full-cache reference cache.
  std::string id;
  SampleKind kind = SampleKind::Generate;

  // Generate
  std::string prompt;                    // plain text; the runner adds BOS when tokenising
  std::vector<std::string> answers;      // ground truths (see score_prediction for aggregation)
  std::vector<std::string> all_classes;  // classification tasks (trec, lsht)
  Metric metric = Metric::QaF1;
  int max_new_tokens = 32;
  bool first_line_only = false;  // LongBench trec/triviaqa/samsum/lsht: score the first line
  bool stop_at_newline = false;  // generation ends at the first '\n' (LongBench samsum)

  // LogLikelihood
  std::vector<int32_t> tokens;  // BOS first
  int score_tokens = 0;         // the last `score_tokens` tokens are predicted and scored
  // The score: exp(mean log-probability per scored token) by default (the inverse perplexity); with
  // sequence_probability exp(sum): the probability of the whole scored span, e.g. of an answer, the
  // smooth counterpart of an exact match.
  bool sequence_probability = false;
  // The window may not lose its first tokens to max_context (a prompt and its answer: the cut would
  // drop the instruction or a needle, and the score would measure another task): an error instead.
  bool whole_window = false;
};

struct Task {
  std::string name;  // unique within a task set, e.g. "passkey", "longbench/multi_news"
  std::vector<Sample> samples;
  std::string split = "all";  // the part of the data the samples come from: "train", "heldout" or "all"
};

}  // namespace nammkit
