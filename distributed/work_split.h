// Static, deterministic assignment of work items to ranks, balanced by their expected cost (tokens).
#pragma once
#include <span>
#include <vector>

namespace nammkit::dist {

// rank_of[i] for each item: longest-processing-time-first greedy. Items go in order of decreasing cost
// (ties: lower index first) to the rank with the least cost so far (ties: lower rank). The result depends
// only on the costs and the number of ranks. Throws Error when ranks < 1 or a cost is negative or NaN.
std::vector<int> assign_by_cost(std::span<const double> costs, int ranks);

// The items of `rank` under an assignment, in increasing order.
std::vector<size_t> items_of(std::span<const int> rank_of, int rank);

}  // namespace nammkit::dist
