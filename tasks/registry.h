// Task sets from JSON descriptions, e.g.
//   [{"name": "passkey", "split": "train", "samples": 8, "context_tokens": 1024},
//    {"name": "lm", "samples": 4, "context_tokens": 1024, "score_tokens": 256, "text": "tinystories"},
//    {"name": "longbench", "dataset": "multi_news", "file": "../shared/data/longbench/multi_news.jsonl", "samples": 4}]
// A set is a JSON array of task objects, one task object, or {"tasks": [...]}.
//
// Fields (every one optional except name and where marked):
//  all tasks:   name, label (the task's name in reports; must be unique in a set), split
//               (train | heldout | all), samples (> 0; shipped sets and longbench: 0 = all), seed
//  passkey, needle, multikey, multiquery, vartrack (synthetic.h):
//               context_tokens, haystack, depth (needle, 0-100), pairs, queries, hops, max_new_tokens
//  lm (lm_task.h): context_tokens, score_tokens, text
//  longbench (longbench.h): dataset (required), file (required), prompt_config, maxlen_config
//  ruler_niah, kv_retrieval, longeval_lines, babi (shipped_sets.h): file (required), max_new_tokens
// Defaults: split "train" for generated tasks, "all" for data files; samples 8; seed 0.
// Unknown fields, wrong types and bad values are Errors "<where>: task <i> (<name>): <field>: ...".
// Relative paths are resolved against TaskContext::base_dir.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tasks/sample.h"
#include "transformer/tokenizer.h"

namespace nammkit {

struct TaskContext {
  const Tokenizer* tokenizer = nullptr;  // needed by the synthetic and lm tasks
  std::string shared_dir;                // "" = default_shared_dir()
  std::string base_dir;                  // for relative "file" paths; "" = the working directory
};

std::vector<std::string> task_names();
Task build_task(const nlohmann::json& spec, const TaskContext& context, const std::string& where);
std::vector<Task> build_task_set(const nlohmann::json& spec, const TaskContext& context, const std::string& where);
// Reads a JSON file; relative paths inside it resolve against context.base_dir (not the file's folder).
std::vector<Task> load_task_set(const std::string& path, const TaskContext& context);

// Evaluations (eval, eval-export) warn on stderr, one line per task, when a task's samples come from
// the train split: a policy scored on the prompts it was evolved on says little about new ones.
void warn_training_split(const std::vector<Task>& tasks, const std::string& where);

}  // namespace nammkit
