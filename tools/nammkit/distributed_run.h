// The command-line side of a distributed (MPI) run: the --rank-timeout flag and the wrapper that turns
// any rank's exception into one error line and the end of every rank.
#pragma once
#include <functional>
#include <string>

#include "distributed/cluster.h"
#include "distributed/coordinator.h"
#include "tools/nammkit/args.h"

namespace nammkit::cli {

// --rank-timeout SECONDS (default 300): how long an awaited rank may stay silent.
dist::CoordinatorOptions rank_timeout(const Args& args, const std::string& command);

// Runs `body` as this process's rank and returns its exit code. An exception thrown by it prints
// "error: <message>" (prefixed by the rank and host on ranks other than 0) and ends every rank.
int run_distributed(dist::Cluster& cluster, dist::CoordinatorOptions options,
                    const std::function<int(dist::Coordinator&)>& body);

}  // namespace nammkit::cli
