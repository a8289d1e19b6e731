#include "tasks/data_paths.h"

#include <cstdlib>
#include <filesystem>

namespace nammkit {

std::string default_shared_dir() {
  const char* env = std::getenv("NAMMKIT_SHARED_DIR");
  return env && *env ? std::string(env) : std::string("../shared");
}

std::string default_models_dir() {
  const char* env = std::getenv("NAMMKIT_MODELS_DIR");
  return env && *env ? std::string(env) : std::string("models");
}

std::string resolve_path(const std::string& base_dir, const std::string& path) {
  if (path.empty() || base_dir.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

}  // namespace nammkit
