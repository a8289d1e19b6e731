// LongBench (THUDM/LongBench) as NAMM evaluates it (spec §3.4, §4.1): records from the JSONL files,
// the per-dataset prompt template and generation length, the per-dataset metric and post-processing.
//
// Configuration: the two JSON files of LongBench/config (dataset2prompt.json, dataset2maxlen.json)
// are read from <shared>/data/longbench/config by default — the shared folder is the single copy
// of the data (its README forbids copies) — and a task file can point at other files
// ("prompt_config", "maxlen_config") to evaluate modified templates.
//
// Prompt = template with {context} and {input} substituted (Python str.format with those two
// fields; the shipped templates contain no other braces). No chat template; the runner adds BOS.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tasks/sample.h"
#include "tasks/split.h"

namespace nammkit {

struct LongBenchRecord {
  std::string id;  // _id
  std::string dataset;
  std::string input;
  std::string context;
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;  // null in the file -> empty
  int64_t length = 0;                    // the dataset's word/character count (informational)
};

// All records of a LongBench-format JSONL file (plain or .gz). Error "<path>: line <n>: <field>: ...".
std::vector<LongBenchRecord> load_longbench_records(const std::string& path);

struct LongBenchConfig {
  std::map<std::string, std::string> prompt;  // dataset -> template
  std::map<std::string, int> max_new_tokens;  // dataset -> generation length
};

std::string default_longbench_config_dir();  // <shared>/data/longbench/config
// Empty paths select the files in default_longbench_config_dir().
LongBenchConfig load_longbench_config(const std::string& prompt_path = "", const std::string& maxlen_path = "");

// The metric of a LongBench dataset (spec §4.1); Error for an unknown dataset name.
Metric longbench_metric(const std::string& dataset);
// trec, triviaqa, samsum, lsht: only the first line of the output is scored.
bool longbench_first_line_only(const std::string& dataset);
// samsum: generation also stops at a newline.
bool longbench_stops_at_newline(const std::string& dataset);

std::string format_longbench_prompt(const std::string& prompt_template, const LongBenchRecord& record);
Sample make_longbench_sample(const LongBenchRecord& record, const std::string& dataset, const LongBenchConfig& config);

struct LongBenchTaskOptions {
  std::string dataset;        // e.g. "multi_news"; each record's "dataset" field must match
  std::string file;           // the JSONL file
  std::string prompt_config;  // "" = default
  std::string maxlen_config;  // "" = default
  Split split = Split::All;   // LongBench has no train split: "all" by default (spec §3.3)
  int samples = 0;            // 0 = every record of the split, else a seeded choice without replacement
  uint64_t seed = 0;
};

Task make_longbench_task(const LongBenchTaskOptions& options);

// Picks `samples` indices of [range.begin, range.end) without replacement, deterministically from
// the seed, in ascending order (0 or >= the range size: all of them). Shared by the data loaders.
std::vector<size_t> choose_records(IndexRange range, int samples, uint64_t seed);

}  // namespace nammkit
