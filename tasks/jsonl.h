// JSON Lines input: one JSON object per non-blank line, plain or gzip-compressed (".gz").
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace nammkit {

// Reads the whole file; decompresses when the name ends in ".gz" (zlib). Error naming the path.
std::string read_text_file(const std::string& path);

// Calls fn(object, line_number) for every non-blank line. A line that is not a JSON object fails
// with "<path>: line <n>: <problem>".
void for_each_jsonl(const std::string& path, const std::function<void(const nlohmann::json&, size_t)>& fn);

// Typed field access for loaders: Error "<where>: <field>: missing" / ": expected <type>".
std::string json_string(const nlohmann::json& obj, const std::string& field, const std::string& where);
int64_t json_int(const nlohmann::json& obj, const std::string& field, const std::string& where);
std::vector<std::string> json_string_list(const nlohmann::json& obj, const std::string& field,
                                          const std::string& where);

}  // namespace nammkit
