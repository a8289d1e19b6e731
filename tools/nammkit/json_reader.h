// Reading a JSON config object field by field, with errors that name the file and the field path
// ("configs/x.json: cmaes.sigma0: expected a number > 0") and a check that no unknown field slipped in.
#pragma once
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace nammkit::cli {

class JsonReader {
 public:
  // `where`: the file name; `path`: the dotted path of this object inside it ("" for the root).
  JsonReader(const nlohmann::json& object, std::string where, std::string path);

  bool has(const std::string& key) const { return object_.contains(key); }
  std::string field(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  [[noreturn]] void fail_at(const std::string& key, const std::string& problem) const;

  std::string get_string(const std::string& key, const std::string& fallback);
  std::string require_string(const std::string& key);
  int get_int(const std::string& key, int fallback, int min_value, int max_value);
  double get_double(const std::string& key, double fallback, double min_value, double max_value);
  bool get_bool(const std::string& key, bool fallback);
  // The raw value (for task descriptions handed to the task registry), marked as read.
  const nlohmann::json& require_raw(const std::string& key);
  // A nested object or array element reader.
  JsonReader object(const std::string& key);
  std::vector<JsonReader> array_of_objects(const std::string& key);
  // Throws on the first field of the object that no getter asked for (typos, stale keys).
  void finish() const;

 private:
  const nlohmann::json& object_;
  std::string where_, path_;
  std::set<std::string> read_;
};

}  // namespace nammkit::cli
