// Where the shared data lives and how task files name paths.
//
// The shared folder is $NAMMKIT_SHARED_DIR when set (the test runner sets it), else "../shared"
// relative to the working directory (the project root, where the tools are run from).
#pragma once
#include <string>

namespace nammkit {

std::string default_shared_dir();
// Where scripts/fetch_models.sh puts what it fetches (SmolLM2, jieba's dictionary): $NAMMKIT_MODELS_DIR
// when set, else "models" relative to the working directory (the project root).
std::string default_models_dir();
// `path` as is when absolute, else joined to `base_dir` (empty base: as is, relative to the cwd).
std::string resolve_path(const std::string& base_dir, const std::string& path);

}  // namespace nammkit
