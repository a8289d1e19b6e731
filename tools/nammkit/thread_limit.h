// --threads N for the sub-commands: limits TBB's worker pool for the lifetime of the returned object.
#pragma once
#include <tbb/global_control.h>

#include <algorithm>
#include <memory>

#include "tools/nammkit/args.h"

namespace nammkit::cli {

// nullptr (no limit: all cores) unless --threads was given.
inline std::unique_ptr<tbb::global_control> thread_limit(const Args& args) {
  if (!args.has("--threads")) return nullptr;
  return std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                               std::max(1, args.get_int("--threads", 1)));
}

}  // namespace nammkit::cli
