// The shipped stories260K model (../shared) for tests: loaded once per test binary. Tests that need
// it start with REQUIRE_STORIES(), so they skip with a clear message when the shared folder is missing.
#pragma once
#include <gtest/gtest.h>

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

}  // namespace nammkit::testing

#define REQUIRE_STORIES()                                    \
  if (!::nammkit::file_exists(::nammkit::testing::kStories)) \
  GTEST_SKIP() << "shared model missing: " << ::nammkit::testing::kStories
