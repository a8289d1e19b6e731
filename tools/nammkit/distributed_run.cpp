#include "tools/nammkit/distributed_run.h"

#include <cmath>

namespace nammkit::cli {

dist::CoordinatorOptions rank_timeout(const Args& args, const std::string& command) {
  dist::CoordinatorOptions options;
  options.timeout_seconds = args.get_double("--rank-timeout", options.timeout_seconds);
  if (!(options.timeout_seconds > 0) || !std::isfinite(options.timeout_seconds))
    fail("nammkit " + command, "--rank-timeout: must be a positive number of seconds");
  return options;
}

int run_distributed(dist::Cluster& cluster, dist::CoordinatorOptions options,
                    const std::function<int(dist::Coordinator&)>& body) {
  dist::Coordinator coordinator(cluster, options);
  try {
    return body(coordinator);
  } catch (const std::exception& e) {
    coordinator.fail_all(coordinator.is_root() ? e.what() : coordinator.describe(coordinator.rank()) + ": " + e.what());
  }
}

}  // namespace nammkit::cli
