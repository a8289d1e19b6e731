// The flags every running sub-command shares: --threads N (TBB's worker pool) and --device.
#pragma once
#include <tbb/global_control.h>

#include <memory>

#include "tools/nammkit/args.h"
#include "transformer/backend.h"

namespace nammkit::cli {

inline constexpr int kMaxThreads = 1024;

// nullptr (no limit: all cores) unless --threads was given (1 to kMaxThreads).
inline std::unique_ptr<tbb::global_control> thread_limit(const Args& args) {
  if (!args.has("--threads")) return nullptr;
  return std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                               args.get_int("--threads", 1, 1, kMaxThreads));
}

// --device cpu|cuda|auto (default auto: CUDA when an NVIDIA GPU is present and the module loads).
inline DeviceChoice device_choice(const Args& args, const std::string& command) {
  return DeviceChoice::parse(args.get("--device", "auto"), "nammkit " + command + ": --device");
}

inline constexpr const char* kDeviceHelp =
    "  --device D           cpu | cuda | auto (default auto: CUDA when a GPU is present)\n";

}  // namespace nammkit::cli
