// Shared helpers of the libFuzzer targets (tests/fuzz/fuzz_*.cpp).
//
// The file loaders take paths, so a target writes its input into a per-process scratch directory and
// calls the real entry point. The contract under test: malformed input gives nammkit::Error (caught
// here), never a crash, a sanitizer report, a hang or another exception type (those abort the run).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"

namespace nammkit::fuzz {

// The scratch directory of this process (removed at exit).
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nammkit_fuzz_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static struct Remover {
      std::string path;
      ~Remover() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
      }
    } remover{tmpl};
    return tmpl;
  }();
  return dir;
}

// Writes `bytes` to <scratch>/<name> (replacing it) and returns the path.
inline std::string write_scratch(const std::string& name, std::string_view bytes) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

inline void remove_scratch(const std::string& name) {
  std::error_code ec;
  std::filesystem::remove(scratch_dir() + "/" + name, ec);
}

// A file of the source tree (fixtures the targets combine with the fuzzed bytes).
inline std::string read_source_file(const std::string& relative) {
  std::ifstream in(std::string(NAMMKIT_SOURCE_DIR) + "/" + relative, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs f; nammkit::Error is the expected answer to bad input.
template <class F>
void expect_ok_or_error(F&& f) {
  try {
    f();
  } catch (const nammkit::Error&) {
  }
}

// The input's first byte (a selector of what to fuzz) and the rest.
struct Split {
  uint8_t selector = 0;
  std::string_view rest;
};
inline Split split_selector(const uint8_t* data, size_t size) {
  if (size == 0) return {};
  return {data[0], std::string_view(reinterpret_cast<const char*>(data + 1), size - 1)};
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace nammkit::fuzz
