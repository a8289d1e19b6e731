#include "evolution/metrics_log.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"

namespace nammkit::evo {

namespace {

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

double get_number(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return GenerationRecord::kMissing;
  if (!it->is_number()) fail(where, std::string(key) + ": not a number");
  return it->get<double>();
}

template <typename T>
T get_integer(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(where, std::string(key) + ": missing");
  if (!it->is_number_integer()) fail(where, std::string(key) + ": not an integer");
  return it->get<T>();
}

}  // namespace

nlohmann::json to_json(const GenerationRecord& r) {
  nlohmann::json j;
  j["generation"] = r.generation;
  j["stage"] = r.stage;
  j["task_set"] = r.task_set;
  j["lambda"] = r.lambda;
  j["restarts"] = r.restarts;
  j["best_fitness"] = number_or_null(r.best_fitness);
  j["mean_fitness"] = number_or_null(r.mean_fitness);
  j["median_fitness"] = number_or_null(r.median_fitness);
  j["mean_eval_fitness"] = number_or_null(r.mean_eval_fitness);
  j["sigma"] = number_or_null(r.sigma);
  j["mean_cache_size"] = number_or_null(r.mean_cache_size);
  j["evaluations"] = r.evaluations;
  j["evals_per_second"] = number_or_null(r.evals_per_second);
  j["elapsed_seconds"] = number_or_null(r.elapsed_seconds);
  j["failures"] = r.failures;
  nlohmann::json details = nlohmann::json::array();
  for (const MemberFailure& f : r.failure_details) details.push_back({{"member", f.member}, {"reason", f.reason}});
  j["failure_details"] = details;
  return j;
}

GenerationRecord record_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "line: not a JSON object");
  GenerationRecord r;
  r.generation = get_integer<int64_t>(j, "generation", where);
  r.stage = get_integer<int>(j, "stage", where);
  r.task_set = j.value("task_set", "");
  r.lambda = j.contains("lambda") ? get_integer<int>(j, "lambda", where) : 0;
  r.restarts = j.contains("restarts") ? get_integer<int>(j, "restarts", where) : 0;
  r.best_fitness = get_number(j, "best_fitness", where);
  r.mean_fitness = get_number(j, "mean_fitness", where);
  r.median_fitness = get_number(j, "median_fitness", where);
  r.mean_eval_fitness = get_number(j, "mean_eval_fitness", where);
  r.sigma = get_number(j, "sigma", where);
  r.mean_cache_size = get_number(j, "mean_cache_size", where);
  r.evaluations = j.contains("evaluations") ? get_integer<int64_t>(j, "evaluations", where) : 0;
  r.evals_per_second = get_number(j, "evals_per_second", where);
  r.elapsed_seconds = get_number(j, "elapsed_seconds", where);
  r.failures = j.contains("failures") ? get_integer<int>(j, "failures", where) : 0;
  if (auto it = j.find("failure_details"); it != j.end() && it->is_array())
    for (const auto& f : *it) r.failure_details.push_back({f.value("member", -1), f.value("reason", "")});
  return r;
}

std::string log_line(const GenerationRecord& record) { return to_json(record).dump(); }

void append_log_line(const std::string& path, const GenerationRecord& record) { append_line(path, log_line(record)); }

std::vector<GenerationRecord> read_log(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<GenerationRecord> records;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ": line " + std::to_string(number);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail(where, "json: not valid JSON");
    records.push_back(record_from_json(j, where));
  }
  return records;
}

void truncate_log(const std::string& path, int64_t generation, const std::string& last_line, const std::string& key) {
  if (!file_exists(path) && last_line.empty()) return;
  std::istringstream in(file_exists(path) ? read_file(path) : std::string());
  std::string kept, line;
  bool changed = false, has_last = false;
  for (int number = 1; std::getline(in, line); ++number) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    // A torn last line (a kill while appending) is dropped as well.
    if (j.is_discarded() || !j.is_object() || !j.contains(key) || !j[key].is_number_integer() ||
        j[key].get<int64_t>() >= generation) {
      changed = true;
      continue;
    }
    has_last = has_last || j[key].get<int64_t>() == generation - 1;
    kept += line + '\n';
  }
  if (!has_last && !last_line.empty()) {
    kept += last_line + '\n';
    changed = true;
  }
  if (changed) write_file_atomic(path, kept);
}

}  // namespace nammkit::evo
