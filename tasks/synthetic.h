// Synthetic long-context retrieval tasks over real haystack text (corpus.h), sized in tokens of
// the model at hand. Templates follow the originating benchmarks:
//  - passkey: Mohtashami & Jaggi (landmark attention) — "The pass key is K. Remember it. K is the
//    pass key." — with real text instead of the repeated filler sentences;
//  - needle: RULER niah_single ("One of the special magic numbers for <key> is: <7 digits>.") at a
//    controlled depth (0-100 % of the haystack; random per sample when not given);
//  - multikey: RULER niah_multikey: `pairs` needles with distinct keys at random depths, one asked;
//  - multiquery: RULER niah_multiquery: `pairs` needles, `queries` of them asked at once
//    (multi-query associative recall), every value must appear in the answer;
//  - vartrack: RULER variable tracking: a chain "VAR A = 12345", "VAR B = VAR A", ... of `hops`
//    hops, in order through the haystack; the answer lists every variable holding the value.
// Scored with RULER's string_match_all (case-insensitive containment, fraction of answers).
//
// Determinism and splits: sample `index` depends only on (seed, split, index, options, tokenizer).
// Train and held-out samples never share haystack text (split_text), seeds (sample_seed) or needle
// values: numbers of train samples start with 1-4 and of held-out samples with 5-9; keys use
// disjoint adjective lists; variable names start with A-M (train) or N-Z (held-out).
//
// Sizing: the prompt (BOS included, as the runner encodes it) is the largest haystack prefix whose
// token count is <= context_tokens, found by a secant/bisection search over word boundaries; it
// ends within one word of the target (up to ~6 tokens with a 512-piece vocabulary, 1-2 with Llama's).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tasks/sample.h"
#include "tasks/split.h"
#include "transformer/tokenizer.h"

namespace nammkit {

enum class SyntheticKind { Passkey, Needle, MultiKey, MultiQuery, VariableTracking };

// "passkey", "needle", "multikey", "multiquery", "vartrack".
SyntheticKind parse_synthetic_kind(const std::string& name, const std::string& where);
std::string synthetic_kind_name(SyntheticKind kind);

struct SyntheticOptions {
  SyntheticKind kind = SyntheticKind::Passkey;
  Split split = Split::Train;
  int context_tokens = 1024;
  std::string haystack = "pg_essays";  // a corpus name (corpus.h)
  std::string shared_dir;              // "" = default_shared_dir()
  uint64_t seed = 0;
  double depth_percent = -1;  // needle: 0..100; < 0 = uniform per sample
  int pairs = 4;              // multikey, multiquery: needles in the haystack
  int queries = 2;            // multiquery: keys asked (<= pairs)
  int hops = 4;               // vartrack: assignments after the first
  int max_new_tokens = 0;     // 0 = the kind's default (passkey 8, needle/multikey 16,
                              // multiquery 16 per query, vartrack 30)
  void validate(const std::string& where) const;
};

// Split-owned needle values (see the header comment).
struct ValueRanges {
  static std::string number(std::mt19937_64& rng, int digits, Split split);
  static std::string key(std::mt19937_64& rng, Split split);
  static std::string variable(std::mt19937_64& rng, Split split);
};

class SyntheticGenerator {
 public:
  SyntheticGenerator(SyntheticOptions options, const Tokenizer& tokenizer);

  Sample sample(uint64_t index) const;
  Task task(int samples) const;  // samples 0..n-1, named after the kind
  const SyntheticOptions& options() const { return options_; }

 private:
  struct Needle {
    std::string text;
    double depth;  // 0..1 of the haystack
  };
  // prefix + haystack (a window of the split text starting at a random sentence, with the needles
  // inserted) + suffix, fitted to context_tokens.
  std::string build_prompt(std::mt19937_64& rng, const std::string& prefix, std::vector<Needle> needles,
                           const std::string& suffix) const;

  SyntheticOptions options_;
  const Tokenizer& tokenizer_;
  std::string corpus_;
  std::string_view text_;   // the split's part of corpus_
  double chars_per_token_;  // measured on the split text, seeds the length search
};

// Inserts each needle at the sentence boundary at or before depth * size (needles are sorted by
// depth; equal boundaries keep their order). Exposed for tests.
std::string insert_needles(std::string_view haystack, std::vector<std::pair<std::string, double>> needles);

}  // namespace nammkit
