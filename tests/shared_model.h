// The models tests run: the shipped stories260K (../shared) and SmolLM2-135M-Instruct Q4_1, fetched by
// scripts/fetch_models.sh into models/ ($NAMMKIT_MODELS_DIR overrides). Each is loaded once per test
// binary. Tests that need one start with REQUIRE_STORIES() / REQUIRE_SMOLLM2(), so they skip with a
// clear message when the file is missing (CI fetches both, so there they run).
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "core/file_io.h"
#include "transformer/backend.h"
#include "transformer/loader.h"

namespace nammkit::testing {

inline const std::string kStories = std::string(NAMMKIT_SHARED_DIR) + "/models/stories260K/stories260K.bin";

inline const Model& stories() {
  static const Model model = load_model(kStories);
  return model;
}

// stories260K on the CPU backend (transformer/backend.h).
inline const Backend& stories_cpu() {
  static const std::unique_ptr<Backend> backend = make_cpu_backend(stories());
  return *backend;
}

inline const std::string& smollm2_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("NAMMKIT_MODELS_DIR");
    return std::string(dir && *dir ? dir : NAMMKIT_SOURCE_DIR "/models") + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  }();
  return path;
}

inline const Model& smollm2() {
  static const Model model = load_model(smollm2_path());
  return model;
}

}  // namespace nammkit::testing

#define REQUIRE_STORIES()                                    \
  if (!::nammkit::file_exists(::nammkit::testing::kStories)) \
  GTEST_SKIP() << "shared model missing: " << ::nammkit::testing::kStories

#define REQUIRE_SMOLLM2()                                          \
  if (!::nammkit::file_exists(::nammkit::testing::smollm2_path())) \
  GTEST_SKIP() << "model missing: " << ::nammkit::testing::smollm2_path() << " (run bash scripts/fetch_models.sh)"
