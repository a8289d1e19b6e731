#include "tasks/registry.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/file_io.h"
#include "tasks/answer_likelihood.h"
#include "tasks/corpus.h"
#include "tasks/data_paths.h"
#include "tasks/lm_task.h"
#include "tasks/longbench.h"
#include "tasks/shipped_sets.h"
#include "tasks/synthetic.h"

namespace nammkit {
namespace {

const std::vector<std::string> kCommon = {"name", "label", "split", "samples", "seed"};
const std::vector<std::string> kSynthetic = {"context_tokens", "haystack", "depth",          "pairs",
                                             "queries",        "hops",     "max_new_tokens", "score"};

// Typed reads that name the field on error.
class Fields {
 public:
  Fields(const nlohmann::json& spec, std::string where) : spec_(spec), where_(std::move(where)) {}

  void allow(const std::vector<std::string>& extra) const {
    for (const auto& [key, value] : spec_.items()) {
      if (std::find(kCommon.begin(), kCommon.end(), key) != kCommon.end()) continue;
      if (std::find(extra.begin(), extra.end(), key) != extra.end()) continue;
      fail(where_, key + ": unknown field");
    }
  }
  bool has(const std::string& f) const { return spec_.contains(f); }
  std::string str(const std::string& f, const std::string& fallback, bool required = false) const {
    if (!spec_.contains(f)) {
      if (required) fail(where_, f + ": missing");
      return fallback;
    }
    if (!spec_[f].is_string()) fail(where_, f + ": expected a string");
    return spec_[f].get<std::string>();
  }
  int64_t integer(const std::string& f, int64_t fallback, int64_t lo, int64_t hi) const {
    if (!spec_.contains(f)) return fallback;
    if (!spec_[f].is_number_integer()) fail(where_, f + ": expected an integer");
    const int64_t v = spec_[f].get<int64_t>();
    if (v < lo || v > hi)
      fail(where_, f + ": " + std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return v;
  }
  double number(const std::string& f, double fallback, double lo, double hi) const {
    if (!spec_.contains(f)) return fallback;
    if (!spec_[f].is_number()) fail(where_, f + ": expected a number");
    const double v = spec_[f].get<double>();
    if (v < lo || v > hi)
      fail(where_, f + ": " + std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return v;
  }
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& spec_;
  std::string where_;
};

const Tokenizer& need_tokenizer(const TaskContext& context, const std::string& where) {
  if (!context.tokenizer || context.tokenizer->empty()) fail(where, "tokenizer: this task needs the model's tokenizer");
  return *context.tokenizer;
}

}  // namespace

std::vector<std::string> task_names() {
  return {"passkey",   "needle",     "multikey",     "multiquery",     "vartrack", "lm",
          "longbench", "ruler_niah", "kv_retrieval", "longeval_lines", "babi"};
}

Task build_task(const nlohmann::json& spec, const TaskContext& context, const std::string& where0) {
  if (!spec.is_object()) fail(where0, "expected a task object");
  if (!spec.contains("name") || !spec["name"].is_string()) fail(where0, "name: missing or not a string");
  const std::string name = spec["name"].get<std::string>();
  const Fields f(spec, where0 + " (" + name + ")");
  const std::string& where = f.where();
  const std::string shared = context.shared_dir.empty() ? default_shared_dir() : context.shared_dir;
  const bool generated = name != "longbench" && name != "ruler_niah" && name != "kv_retrieval" &&
                         name != "longeval_lines" && name != "babi";
  const Split split = parse_split(f.str("split", generated ? "train" : "all"), where + ": split");
  const int samples = static_cast<int>(f.integer("samples", 8, generated ? 1 : 0, 1000000));
  const uint64_t seed = static_cast<uint64_t>(f.integer("seed", 0, 0, INT64_MAX));

  Task task;
  if (name == "passkey" || name == "needle" || name == "multikey" || name == "multiquery" || name == "vartrack") {
    f.allow(kSynthetic);
    SyntheticOptions o;
    o.kind = parse_synthetic_kind(name, where + ": name");
    o.split = split;
    o.seed = seed;
    o.shared_dir = shared;
    o.context_tokens = static_cast<int>(f.integer("context_tokens", 1024, 64, 1 << 22));
    o.haystack = f.str("haystack", "pg_essays");
    check_corpus_name(o.haystack, where + ": haystack");
    o.depth_percent = f.number("depth", -1, 0, 100);
    o.pairs = static_cast<int>(f.integer("pairs", 4, 1, 512));
    o.queries = static_cast<int>(f.integer("queries", std::min(2, o.pairs), 1, o.pairs));
    o.hops = static_cast<int>(f.integer("hops", 4, 1, 64));
    o.max_new_tokens = static_cast<int>(f.integer("max_new_tokens", 0, 0, 1 << 16));
    if (name != "needle" && f.has("depth"))
      fail(where, "depth: only the needle task places its needle at a given depth");
    // "match": generate and score the text (RULER's string_match_all); "likelihood" / "probability":
    // the answer's per-token likelihood / whole probability under teacher forcing
    // (answer_likelihood.h), smooth fitness signals.
    const std::string score_name = f.str("score", "match");
    std::optional<AnswerScore> score;  // none: "match"
    if (score_name == "likelihood") score = AnswerScore::PerToken;
    else if (score_name == "probability") score = AnswerScore::Answer;
    else if (score_name != "match")
      fail(where, "score: \"" + score_name + "\" is not \"match\", \"likelihood\" or \"probability\"");
    if (score && name != "passkey" && name != "needle" && name != "multikey")
      fail(where, "score: " + score_name + " needs a single answer (passkey, needle or multikey)");
    if (score && f.has("max_new_tokens")) fail(where, "max_new_tokens: nothing is generated with score " + score_name);
    const Tokenizer& tokenizer = need_tokenizer(context, where);
    task = SyntheticGenerator(o, tokenizer).task(samples);
    if (score) {
      try {
        for (Sample& s : task.samples) s = answer_likelihood_sample(s, tokenizer, *score);
      } catch (const Error& e) {
        fail(where, e.what());  // the error names the sample; this adds the file and the task
      }
    }
  } else if (name == "lm") {
    f.allow({"context_tokens", "score_tokens", "text"});
    LmTaskOptions o;
    o.split = split;
    o.seed = seed;
    o.shared_dir = shared;
    o.text = f.str("text", "tinystories");
    check_corpus_name(o.text, where + ": text");
    o.context_tokens = static_cast<int>(f.integer("context_tokens", 1024, 2, 1 << 22));
    o.score_tokens = static_cast<int>(f.integer("score_tokens", 256, 1, 1 << 22));
    o.validate(where);
    task = make_lm_task(o, need_tokenizer(context, where), samples);
  } else if (name == "longbench") {
    f.allow({"dataset", "file", "prompt_config", "maxlen_config"});
    LongBenchTaskOptions o;
    o.dataset = f.str("dataset", "", true);
    try {
      longbench_metric(o.dataset);
    } catch (const Error&) {
      fail(where, "dataset: unknown LongBench dataset \"" + o.dataset + "\"");
    }
    o.file = resolve_path(context.base_dir, f.str("file", "", true));
    const std::string pc = f.str("prompt_config", ""), mc = f.str("maxlen_config", "");
    o.prompt_config = pc.empty() ? "" : resolve_path(context.base_dir, pc);
    o.maxlen_config = mc.empty() ? "" : resolve_path(context.base_dir, mc);
    o.split = split;
    o.samples = samples;
    o.seed = seed;
    task = make_longbench_task(o);
  } else if (name == "ruler_niah" || name == "kv_retrieval" || name == "longeval_lines" || name == "babi") {
    f.allow({"file", "max_new_tokens"});
    ShippedSetOptions o;
    o.set = name == "ruler_niah"       ? ShippedSet::RulerNiah
            : name == "kv_retrieval"   ? ShippedSet::KvRetrieval
            : name == "longeval_lines" ? ShippedSet::LongEvalLines
                                       : ShippedSet::Babi;
    o.file = resolve_path(context.base_dir, f.str("file", "", true));
    o.split = split;
    o.samples = samples;
    o.seed = seed;
    o.max_new_tokens = static_cast<int>(f.integer("max_new_tokens", 0, 0, 1 << 16));
    task = make_shipped_task(o);
  } else {
    std::string known;
    for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
    fail(where, "name: unknown task \"" + name + "\" (known: " + known + ")");
  }
  if (task.samples.empty()) fail(where, "samples: the task selected no samples");
  task.name = f.str("label", task.name);
  task.split = split_name(split);
  return task;
}

void warn_training_split(const std::vector<Task>& tasks, const std::string& where) {
  for (const Task& task : tasks)
    if (task.split == split_name(Split::Train))
      std::fprintf(stderr,
                   "warning: %s: task \"%s\" uses the train split, the prompts evolution trains on; evaluate on "
                   "\"split\": \"heldout\"\n",
                   where.c_str(), task.name.c_str());
}

std::vector<Task> build_task_set(const nlohmann::json& spec, const TaskContext& context, const std::string& where) {
  const nlohmann::json* list = &spec;
  if (spec.is_object() && spec.contains("tasks")) {
    for (const auto& [key, value] : spec.items())
      if (key != "tasks") fail(where, key + ": unknown field (a task set has only \"tasks\")");
    list = &spec["tasks"];
  }
  std::vector<Task> tasks;
  std::set<std::string> names;
  auto add = [&](const nlohmann::json& t, const std::string& w) {
    Task task = build_task(t, context, w);
    if (!names.insert(task.name).second) fail(w, "label: task name \"" + task.name + "\" is used twice (set a label)");
    tasks.push_back(std::move(task));
  };
  if (list->is_array()) {
    if (list->empty()) fail(where, "tasks: empty");
    for (size_t i = 0; i < list->size(); ++i) add((*list)[i], where + ": task " + std::to_string(i));
  } else if (list->is_object()) {
    add(*list, where + ": task 0");
  } else {
    fail(where, "expected a task object or a list of them");
  }
  return tasks;
}

std::vector<Task> load_task_set(const std::string& path, const TaskContext& context) {
  nlohmann::json spec;
  try {
    spec = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
  return build_task_set(spec, context, path);
}

}  // namespace nammkit
