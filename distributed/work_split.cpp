#include "distributed/work_split.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "core/error.h"

namespace nammkit::dist {

std::vector<int> assign_by_cost(std::span<const double> costs, int ranks) {
  if (ranks < 1) fail("work split", "ranks: " + std::to_string(ranks) + " (need >= 1)");
  for (size_t i = 0; i < costs.size(); ++i)
    if (!(costs[i] >= 0)) fail("work split", "cost of item " + std::to_string(i) + ": " + std::to_string(costs[i]));
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(size_t(ranks), 0.0);
  std::vector<int> rank_of(costs.size(), 0);
  for (size_t item : order) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());  // first minimum
    rank_of[item] = r;
    load[size_t(r)] += costs[item];
  }
  return rank_of;
}

std::vector<size_t> items_of(std::span<const int> rank_of, int rank) {
  std::vector<size_t> out;
  for (size_t i = 0; i < rank_of.size(); ++i)
    if (rank_of[i] == rank) out.push_back(i);
  return out;
}

}  // namespace nammkit::dist
