#include "tasks/shipped_sets.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text.h"
#include "tasks/jsonl.h"
#include "tasks/longbench.h"

namespace nammkit {
namespace {

std::vector<Sample> ruler_samples(const std::string& path) {
  std::vector<Sample> out;
  for_each_jsonl(path, [&](const nlohmann::json& obj, size_t line) {
    const std::string where = path + ": line " + std::to_string(line);
    Sample s;
    s.id = "ruler/" + std::to_string(json_int(obj, "index", where));
    s.prompt = json_string(obj, "input", where);
    s.answers = json_string_list(obj, "outputs", where);
    s.metric = Metric::StringMatchAll;
    s.max_new_tokens = 128;
    out.push_back(std::move(s));
  });
  return out;
}

std::vector<Sample> kv_samples(const std::string& path) {
  std::vector<Sample> out;
  for_each_jsonl(path, [&](const nlohmann::json& obj, size_t line) {
    const std::string where = path + ": line " + std::to_string(line);
    auto it = obj.find("ordered_kv_records");
    if (it == obj.end() || !it->is_array()) fail(where, "ordered_kv_records: expected a list of [key, value] pairs");
    std::vector<std::pair<std::string, std::string>> records;
    for (const auto& r : *it) {
      if (!r.is_array() || r.size() != 2 || !r[0].is_string() || !r[1].is_string())
        fail(where, "ordered_kv_records: expected a list of [key, value] pairs");
      records.emplace_back(r[0].get<std::string>(), r[1].get<std::string>());
    }
    const std::string key = json_string(obj, "key", where), value = json_string(obj, "value", where);
    Sample s;
    s.id = "kv/" + std::to_string(line);
    s.prompt = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n" +
               format_kv_records(records) + "\n\nKey: \"" + key + "\"\nCorresponding value:";
    s.answers = {value};
    s.metric = Metric::SubspanEm;
    s.max_new_tokens = 100;
    out.push_back(std::move(s));
  });
  return out;
}

std::vector<Sample> longeval_samples(const std::string& path) {
  std::vector<Sample> out;
  for_each_jsonl(path, [&](const nlohmann::json& obj, size_t line) {
    const std::string where = path + ": line " + std::to_string(line);
    Sample s;
    s.id = "lines/" + std::to_string(line);
    s.prompt = json_string(obj, "prompt", where);
    s.answers = {std::to_string(json_int(obj, "expected_number", where))};
    s.metric = Metric::LastNumber;
    s.max_new_tokens = 100;
    out.push_back(std::move(s));
  });
  return out;
}

std::vector<Sample> babi_samples(const std::string& path) {
  std::vector<Sample> out;
  size_t n = 0;
  for (const BabiQuestion& q : parse_babi(read_text_file(path), path)) {
    Sample s;
    s.id = "babi/" + std::to_string(n++);
    s.prompt =
        "I will give you context with the facts about positions of different persons and objects and a question. "
        "You need to answer the question based only on the information from the facts. Answer with a single word.\n\n"
        "<context>\n" +
        q.story + "</context>\n\nQuestion: " + q.question + "\nAnswer:";
    s.answers = {q.answer};
    s.metric = Metric::StringMatchAll;
    s.max_new_tokens = 16;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

std::string format_kv_records(const std::vector<std::pair<std::string, std::string>>& records) {
  // lost-in-the-middle get_kv_retrieval_prompt: "{" before the first, " " before the others,
  // ",\n" between records and "}" after the last.
  std::string out;
  for (size_t i = 0; i < records.size(); ++i) {
    out += i == 0 ? "{" : " ";
    out += "\"" + records[i].first + "\": \"" + records[i].second + "\"";
    out += i + 1 == records.size() ? "}" : ",\n";
  }
  return out;
}

std::vector<BabiQuestion> parse_babi(const std::string& text, const std::string& where) {
  // Lines "<n> <statement>" or "<n> <question>\t<answer>\t<supporting ids>" (the shipped qa1 file
  // separates with '|' instead of tabs; both are accepted); n restarts at 1 for a new story. A question sees every
  // statement of its story before it.
  std::vector<BabiQuestion> out;
  std::string story;
  size_t start = 0, line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = trim(std::string_view(text).substr(start, end - start));
    start = end + 1;
    ++line_no;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find_first_not_of("0123456789") != space)
      fail(where, "line " + std::to_string(line_no) + ": expected \"<number> <text>\"");
    if (parse_int(line.substr(0, space), where, "line " + std::to_string(line_no) + ": number", 0, 1 << 30) == 1)
      story.clear();
    const std::string body = line.substr(space + 1);
    const size_t tab = body.find_first_of("\t|");
    if (tab == std::string::npos) {
      story += body + "\n";
      continue;
    }
    const size_t tab2 = body.find_first_of("\t|", tab + 1);
    BabiQuestion q;
    q.story = story;
    q.question = trim(body.substr(0, tab));
    q.answer = trim(body.substr(tab + 1, tab2 == std::string::npos ? std::string::npos : tab2 - tab - 1));
    if (q.answer.empty()) fail(where, "line " + std::to_string(line_no) + ": question without an answer");
    out.push_back(std::move(q));
  }
  return out;
}

Task make_shipped_task(const ShippedSetOptions& options) {
  if (options.file.empty()) fail("shipped task", "file: missing");
  std::vector<Sample> all;
  std::string name;
  switch (options.set) {
    case ShippedSet::RulerNiah:
      all = ruler_samples(options.file);
      name = "ruler_niah";
      break;
    case ShippedSet::KvRetrieval:
      all = kv_samples(options.file);
      name = "kv_retrieval";
      break;
    case ShippedSet::LongEvalLines:
      all = longeval_samples(options.file);
      name = "longeval_lines";
      break;
    case ShippedSet::Babi:
      all = babi_samples(options.file);
      name = "babi";
      break;
  }
  Task task;
  task.name = name;
  for (size_t i : choose_records(split_records(all.size(), options.split), options.samples, options.seed)) {
    Sample s = std::move(all[i]);
    if (options.max_new_tokens > 0) s.max_new_tokens = options.max_new_tokens;
    task.samples.push_back(std::move(s));
  }
  return task;
}

}  // namespace nammkit
