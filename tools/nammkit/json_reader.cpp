#include "tools/nammkit/json_reader.h"

#include <cmath>

namespace nammkit::cli {

JsonReader::JsonReader(const nlohmann::json& object, std::string where, std::string path)
    : object_(object), where_(std::move(where)), path_(std::move(path)) {
  if (!object_.is_object()) fail(where_, (path_.empty() ? std::string("top level") : path_) + ": expected an object");
}

void JsonReader::fail_at(const std::string& key, const std::string& problem) const {
  fail(where_, field(key) + ": " + problem);
}

std::string JsonReader::get_string(const std::string& key, const std::string& fallback) {
  read_.insert(key);
  if (!object_.contains(key)) return fallback;
  const auto& v = object_.at(key);
  if (!v.is_string()) fail_at(key, "expected a string");
  return v.get<std::string>();
}

std::string JsonReader::require_string(const std::string& key) {
  if (!object_.contains(key)) fail_at(key, "missing (required)");
  return get_string(key, "");
}

int JsonReader::get_int(const std::string& key, int fallback, int min_value, int max_value) {
  read_.insert(key);
  if (!object_.contains(key)) return fallback;
  const auto& v = object_.at(key);
  if (!v.is_number_integer()) fail_at(key, "expected an integer");
  const int64_t x = v.get<int64_t>();
  if (x < min_value || x > max_value)
    fail_at(key, "must be in [" + std::to_string(min_value) + ", " + std::to_string(max_value) + "], got " +
                     std::to_string(x));
  return static_cast<int>(x);
}

double JsonReader::get_double(const std::string& key, double fallback, double min_value, double max_value) {
  read_.insert(key);
  if (!object_.contains(key)) return fallback;
  const auto& v = object_.at(key);
  if (!v.is_number()) fail_at(key, "expected a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < min_value || x > max_value)
    fail_at(key, "must be in [" + std::to_string(min_value) + ", " + std::to_string(max_value) + "], got " + v.dump());
  return x;
}

bool JsonReader::get_bool(const std::string& key, bool fallback) {
  read_.insert(key);
  if (!object_.contains(key)) return fallback;
  const auto& v = object_.at(key);
  if (!v.is_boolean()) fail_at(key, "expected true or false");
  return v.get<bool>();
}

const nlohmann::json& JsonReader::require_raw(const std::string& key) {
  read_.insert(key);
  if (!object_.contains(key)) fail_at(key, "missing (required)");
  return object_.at(key);
}

JsonReader JsonReader::object(const std::string& key) {
  read_.insert(key);
  static const nlohmann::json empty = nlohmann::json::object();
  if (!object_.contains(key)) return JsonReader(empty, where_, field(key));
  return JsonReader(object_.at(key), where_, field(key));
}

std::vector<JsonReader> JsonReader::array_of_objects(const std::string& key) {
  const nlohmann::json& v = require_raw(key);
  if (!v.is_array() || v.empty()) fail_at(key, "expected a non-empty array");
  std::vector<JsonReader> out;
  for (size_t i = 0; i < v.size(); ++i) out.emplace_back(v[i], where_, field(key) + "[" + std::to_string(i) + "]");
  return out;
}

void JsonReader::finish() const {
  for (const auto& [key, value] : object_.items())
    if (!read_.count(key)) fail(where_, field(key) + ": unknown field");
}

}  // namespace nammkit::cli
