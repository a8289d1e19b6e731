#include "tasks/jsonl.h"

#include <zlib.h>

#include <cstring>

#include "core/error.h"
#include "core/file_io.h"

namespace nammkit {
namespace {

std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail(path, std::string("cannot open file: ") + std::strerror(errno));
  std::string out;
  char buffer[1 << 16];
  while (true) {
    const int n = gzread(f, buffer, sizeof(buffer));
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(f, &code);
      gzclose(f);
      fail(path, "gzip: " + message);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

}  // namespace

std::string read_text_file(const std::string& path) {
  if (!file_exists(path)) fail(path, "cannot open file: no such file");
  return path.ends_with(".gz") ? read_gzip(path) : read_file(path);
}

void for_each_jsonl(const std::string& path, const std::function<void(const nlohmann::json&, size_t)>& fn) {
  const std::string text = read_text_file(path);
  size_t line_no = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    const std::string_view line(text.data() + start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, "line " + std::to_string(line_no) + ": invalid JSON: " + e.what());
    }
    if (!obj.is_object()) fail(path, "line " + std::to_string(line_no) + ": expected a JSON object");
    fn(obj, line_no);
  }
}

std::string json_string(const nlohmann::json& obj, const std::string& field, const std::string& where) {
  auto it = obj.find(field);
  if (it == obj.end()) fail(where, field + ": missing");
  if (!it->is_string()) fail(where, field + ": expected a string");
  return it->get<std::string>();
}

int64_t json_int(const nlohmann::json& obj, const std::string& field, const std::string& where) {
  auto it = obj.find(field);
  if (it == obj.end()) fail(where, field + ": missing");
  if (!it->is_number_integer()) fail(where, field + ": expected an integer");
  return it->get<int64_t>();
}

std::vector<std::string> json_string_list(const nlohmann::json& obj, const std::string& field,
                                          const std::string& where) {
  auto it = obj.find(field);
  if (it == obj.end()) fail(where, field + ": missing");
  if (it->is_null()) return {};
  if (!it->is_array()) fail(where, field + ": expected a list of strings");
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string()) fail(where, field + ": expected a list of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace nammkit
