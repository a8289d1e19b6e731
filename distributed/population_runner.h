// A population evaluation spread over the ranks of a distributed run: the root's evaluator
// (evolution/population_eval.h) hands each generation's (member, prompt) items to every rank through
// the coordinator, each rank runs its share on its own threads, and the outcomes come back to the root
// in item order, where the reduction to fitness is the same as in a single process. So an N-rank run
// gives the single-process results bit for bit.
#pragma once
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "distributed/coordinator.h"
#include "evolution/population_eval.h"

namespace nammkit::dist {

// Expected work of one item on a prompt of a task set (tokens), for balancing the shares.
using ItemCost = std::function<double(const std::string& task_set, int prompt)>;
// Runs some items of a request on this rank.
using LocalItems = std::function<std::vector<evo::ItemOutcome>(const evo::EvalRequest& request,
                                                               std::span<const size_t> items, bool* interrupted)>;

// On the root: the ItemRunner to give the evaluator. Every rank (the root too) must have registered the
// job's handler with serve_items().
class DistributedItemRunner : public evo::ItemRunner {
 public:
  DistributedItemRunner(Coordinator& coordinator, std::string job, ItemCost cost);
  std::vector<evo::ItemOutcome> run(const evo::EvalRequest& request, bool* interrupted) override;

 private:
  Coordinator& coordinator_;
  std::string job_;
  ItemCost cost_;
};

// On every rank: registers the handler of `job`, which runs this rank's share of a request with `local`.
void serve_items(Coordinator& coordinator, const std::string& job, LocalItems local);

}  // namespace nammkit::dist
