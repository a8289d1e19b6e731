#include "tasks/longbench.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"
#include "tasks/data_paths.h"
#include "tasks/jsonl.h"

namespace nammkit {

std::vector<LongBenchRecord> load_longbench_records(const std::string& path) {
  std::vector<LongBenchRecord> records;
  for_each_jsonl(path, [&](const nlohmann::json& obj, size_t line) {
    const std::string where = path + ": line " + std::to_string(line);
    LongBenchRecord r;
    r.id = json_string(obj, "_id", where);
    r.dataset = json_string(obj, "dataset", where);
    r.input = json_string(obj, "input", where);
    r.context = json_string(obj, "context", where);
    r.answers = json_string_list(obj, "answers", where);
    r.all_classes =
        obj.contains("all_classes") ? json_string_list(obj, "all_classes", where) : std::vector<std::string>{};
    if (obj.contains("length")) r.length = json_int(obj, "length", where);
    records.push_back(std::move(r));
  });
  return records;
}

std::string default_longbench_config_dir() { return default_shared_dir() + "/data/longbench/config"; }

LongBenchConfig load_longbench_config(const std::string& prompt_path, const std::string& maxlen_path) {
  const std::string ppath = prompt_path.empty() ? default_longbench_config_dir() + "/dataset2prompt.json" : prompt_path;
  const std::string mpath = maxlen_path.empty() ? default_longbench_config_dir() + "/dataset2maxlen.json" : maxlen_path;
  auto parse = [](const std::string& path) {
    try {
      nlohmann::json j = nlohmann::json::parse(read_file(path));
      if (!j.is_object()) fail(path, "expected a JSON object of dataset -> value");
      return j;
    } catch (const nlohmann::json::exception& e) {
      fail(path, std::string("invalid JSON: ") + e.what());
    }
  };
  LongBenchConfig config;
  const nlohmann::json prompts = parse(ppath), maxlens = parse(mpath);
  for (const auto& [dataset, value] : prompts.items()) {
    if (!value.is_string()) fail(ppath, dataset + ": expected a prompt template string");
    config.prompt[dataset] = value.get<std::string>();
  }
  for (const auto& [dataset, value] : maxlens.items()) {
    if (!value.is_number_integer() || value.get<int>() <= 0) fail(mpath, dataset + ": expected a positive integer");
    config.max_new_tokens[dataset] = value.get<int>();
  }
  return config;
}

Metric longbench_metric(const std::string& dataset) {
  static const std::map<std::string, Metric> table = {
      {"narrativeqa", Metric::QaF1},
      {"qasper", Metric::QaF1},
      {"multifieldqa_en", Metric::QaF1},
      {"multifieldqa_zh", Metric::QaF1Zh},
      {"hotpotqa", Metric::QaF1},
      {"2wikimqa", Metric::QaF1},
      {"musique", Metric::QaF1},
      {"dureader", Metric::RougeZh},
      {"gov_report", Metric::Rouge},
      {"qmsum", Metric::Rouge},
      {"multi_news", Metric::Rouge},
      {"vcsum", Metric::RougeZh},
      {"trec", Metric::Classification},
      {"triviaqa", Metric::QaF1},
      {"samsum", Metric::Rouge},
      {"lsht", Metric::Classification},
      {"passage_count", Metric::Count},
      {"passage_retrieval_en", Metric::Retrieval},
      {"passage_retrieval_zh", Metric::RetrievalZh},
      {"lcc", Metric::CodeSim},
      {"repobench-p", Metric::CodeSim},
  };
  auto it = table.find(dataset);
  if (it == table.end()) fail("longbench", "dataset: unknown LongBench dataset \"" + dataset + "\"");
  return it->second;
}

bool longbench_first_line_only(const std::string& dataset) {
  return dataset == "trec" || dataset == "triviaqa" || dataset == "samsum" || dataset == "lsht";
}

bool longbench_stops_at_newline(const std::string& dataset) { return dataset == "samsum"; }

std::string format_longbench_prompt(const std::string& prompt_template, const LongBenchRecord& record) {
  // One left-to-right pass so that braces inside the substituted text are never re-expanded.
  std::string out;
  size_t i = 0;
  while (i < prompt_template.size()) {
    if (prompt_template.compare(i, 9, "{context}") == 0) {
      out += record.context;
      i += 9;
    } else if (prompt_template.compare(i, 7, "{input}") == 0) {
      out += record.input;
      i += 7;
    } else {
      out.push_back(prompt_template[i++]);
    }
  }
  return out;
}

Sample make_longbench_sample(const LongBenchRecord& record, const std::string& dataset, const LongBenchConfig& config) {
  auto prompt = config.prompt.find(dataset);
  if (prompt == config.prompt.end()) fail("longbench", "dataset: no prompt template for \"" + dataset + "\"");
  auto maxlen = config.max_new_tokens.find(dataset);
  if (maxlen == config.max_new_tokens.end()) fail("longbench", "dataset: no generation length for \"" + dataset + "\"");
  Sample s;
  s.id = record.id;
  s.prompt = format_longbench_prompt(prompt->second, record);
  s.answers = record.answers;
  s.all_classes = record.all_classes;
  s.metric = longbench_metric(dataset);
  s.max_new_tokens = maxlen->second;
  s.first_line_only = longbench_first_line_only(dataset);
  s.stop_at_newline = longbench_stops_at_newline(dataset);
  return s;
}

std::vector<size_t> choose_records(IndexRange range, int samples, uint64_t seed) {
  std::vector<size_t> idx(range.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = range.begin + i;
  if (samples <= 0 || static_cast<size_t>(samples) >= idx.size()) return idx;
  // Partial Fisher-Yates with our own draws (std::shuffle's algorithm is implementation-defined).
  std::mt19937_64 rng(splitmix64(seed ^ 0x10ADEDull));
  for (size_t i = 0; i < static_cast<size_t>(samples); ++i) {
    const size_t j = i + static_cast<size_t>(rng() % (idx.size() - i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<size_t>(samples));
  std::sort(idx.begin(), idx.end());
  return idx;
}

Task make_longbench_task(const LongBenchTaskOptions& options) {
  longbench_metric(options.dataset);  // unknown dataset names fail before any file is read
  const LongBenchConfig config = load_longbench_config(options.prompt_config, options.maxlen_config);
  const std::vector<LongBenchRecord> records = load_longbench_records(options.file);
  Task task;
  task.name = "longbench/" + options.dataset;
  for (size_t i : choose_records(split_records(records.size(), options.split), options.samples, options.seed)) {
    const LongBenchRecord& r = records[i];
    if (r.dataset != options.dataset)
      fail(options.file, "record " + std::to_string(i + 1) + ": dataset: \"" + r.dataset + "\", expected \"" +
                             options.dataset + "\"");
    task.samples.push_back(make_longbench_sample(r, options.dataset, config));
  }
  return task;
}

}  // namespace nammkit
