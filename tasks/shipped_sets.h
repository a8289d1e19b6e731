// Loaders for the long-context test sets shipped in <shared>/data, with the prompt templates and
// scoring of the benchmarks they come from:
//  - RULER niah (ruler/niah_*.jsonl: index, input, outputs, length): the prompt is `input` as
//    RULER's base-model template leaves it (already ending in "... mentioned in the provided text
//    is"); answers = outputs; string_match_all; RULER's niah generation length, 128 tokens.
//  - lost-in-the-middle kv retrieval (kv_retrieval/*.jsonl.gz: ordered_kv_records, key, value):
//    its kv_retrieval.prompt template with the records formatted as the repo does
//    ({"k": "v",\n "k": "v", ... }); best_subspan_em; 100 tokens as in its generation script.
//  - LongChat LongEval lines (longeval_lines/*.jsonl: prompt, expected_number, ...): `prompt` as is
//    (base models get no chat wrapper); the last integer of the output must equal expected_number,
//    as longeval's test_lines_one_sample parses it; 100 tokens as LongChat generates.
//  - bAbI tasks 1-3 (babi/qa*_test.txt): one sample per question, the story so far as context, in
//    a BABILong-style zero-shot template (instruction, <context>...</context>, question, "Answer:");
//    the answer word must be contained in the output (string_match_all), 16 tokens.
// Splits: records in file order, train = first 80 %, held-out = the rest (split_records).
#pragma once
#include <string>

#include "tasks/sample.h"
#include "tasks/split.h"

namespace nammkit {

enum class ShippedSet { RulerNiah, KvRetrieval, LongEvalLines, Babi };

struct ShippedSetOptions {
  ShippedSet set = ShippedSet::RulerNiah;
  std::string file;  // the data file (required)
  Split split = Split::All;
  int samples = 0;  // 0 = all records of the split, else a seeded choice
  uint64_t seed = 0;
  int max_new_tokens = 0;  // 0 = the benchmark's default (above)
};

Task make_shipped_task(const ShippedSetOptions& options);

// Exposed for tests: the lost-in-the-middle record formatting and the bAbI question extraction.
std::string format_kv_records(const std::vector<std::pair<std::string, std::string>>& records);
struct BabiQuestion {
  std::string story;  // the statements before the question, one per line, without line numbers
  std::string question;
  std::string answer;
};
std::vector<BabiQuestion> parse_babi(const std::string& text, const std::string& where);

}  // namespace nammkit
