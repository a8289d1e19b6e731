// Format detection from a file's bytes and the load_model dispatch.
#include "transformer/loader.h"

#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/file_io.h"
#include "transformer/gguf.h"
#include "transformer/llama2c.h"
#include "transformer/safetensors.h"

namespace nammkit {

namespace {

bool directory_has_safetensors(const std::string& dir) {
  bool found = false;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0) found = true;
    }
    ::closedir(d);
  }
  return found;
}

struct FileStart {
  uint64_t size = 0;
  std::string bytes;  // up to the first 32 bytes
};

FileStart read_start(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, std::string("cannot open file: ") + std::strerror(errno));
  FileStart s;
  s.size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  s.bytes.resize(std::min<uint64_t>(s.size, 32));
  in.read(s.bytes.data(), static_cast<std::streamsize>(s.bytes.size()));
  return s;
}

bool plausible_llama2c(const FileStart& s, Llama2cHeader* header) {
  if (s.bytes.size() < sizeof(Llama2cHeader)) return false;
  std::memcpy(header, s.bytes.data(), sizeof(Llama2cHeader));
  return !llama2c_header_problem(*header).has_value();
}

}  // namespace

const char* format_name(ModelFormat f) {
  switch (f) {
    case ModelFormat::Gguf: return "gguf";
    case ModelFormat::Safetensors: return "safetensors";
    case ModelFormat::Llama2c: return "llama2c";
    case ModelFormat::Unknown: return "unknown";
  }
  return "unknown";
}

ModelFormat detect_format(const std::string& path) {
  if (is_directory(path)) {
    return file_exists(path + "/config.json") && directory_has_safetensors(path) ? ModelFormat::Safetensors
                                                                                 : ModelFormat::Unknown;
  }
  if (!file_exists(path)) return ModelFormat::Unknown;
  const FileStart s = read_start(path);
  if (s.bytes.size() >= 4 && s.bytes.compare(0, 4, "GGUF") == 0) return ModelFormat::Gguf;
  if (s.bytes.size() >= 9) {
    uint64_t header_len;
    std::memcpy(&header_len, s.bytes.data(), 8);
    if (s.bytes[8] == '{' && header_len >= 2 && header_len <= s.size - 8) return ModelFormat::Safetensors;
  }
  // llama2.c has no magic: a plausible header whose implied size is exactly the file's.
  Llama2cHeader h;
  if (plausible_llama2c(s, &h) && llama2c_expected_size(h) == s.size) return ModelFormat::Llama2c;
  return ModelFormat::Unknown;
}

Model load_model(const std::string& path) {
  if (!file_exists(path)) fail(path, "cannot open: no such file or directory");
  switch (detect_format(path)) {
    case ModelFormat::Gguf: return load_gguf(path);
    case ModelFormat::Safetensors: return load_safetensors(path);
    case ModelFormat::Llama2c: return load_llama2c(path);
    case ModelFormat::Unknown: break;
  }
  if (is_directory(path)) {
    fail(path, file_exists(path + "/config.json") ? "no .safetensors file in the directory"
                                                  : "config.json: missing (not a Hugging Face model directory)");
  }
  // A llama2.c header with the wrong size is almost always a truncated download: say so.
  Llama2cHeader h;
  const FileStart s = read_start(path);
  if (plausible_llama2c(s, &h)) {
    const uint64_t expected = llama2c_expected_size(h);
    fail(path, std::string(s.size < expected ? "truncated: " : "size mismatch: ") +
                   "looks like a llama2.c checkpoint but has " + std::to_string(s.size) +
                   " bytes where its header implies " + std::to_string(expected));
  }
  // llama2.c checkpoints have no magic but are named *.bin: a header of small integers with a zero
  // or negative dimension is a broken checkpoint, not an unknown format; name the field.
  if (path.ends_with(".bin") && s.bytes.size() >= sizeof(Llama2cHeader)) {
    int32_t fields[7];
    std::memcpy(fields, s.bytes.data(), sizeof(fields));
    const bool small =
        std::all_of(std::begin(fields), std::end(fields), [](int32_t v) { return std::abs(int64_t{v}) <= (1 << 24); });
    if (const auto problem = llama2c_header_problem(h); small && problem) fail(path, "llama2.c header: " + *problem);
  }
  fail(path, "unknown model format (not GGUF, safetensors or a llama2.c checkpoint)");
}

}  // namespace nammkit
