#include "distributed/population_runner.h"

#include "core/error.h"
#include "distributed/messages.pb.h"
#include "distributed/work_split.h"

namespace nammkit::dist {

DistributedItemRunner::DistributedItemRunner(Coordinator& coordinator, std::string job, ItemCost cost)
    : coordinator_(coordinator), job_(std::move(job)), cost_(std::move(cost)) {}

std::vector<evo::ItemOutcome> DistributedItemRunner::run(const evo::EvalRequest& request, bool* interrupted) {
  EvalRequestMsg msg;
  msg.set_generation(request.generation);
  msg.set_task_set(request.task_set);
  const Eigen::MatrixXd& params = *request.params;
  msg.set_rows(params.rows());
  msg.set_cols(params.cols());
  msg.mutable_params()->Add(params.data(), params.data() + params.size());
  for (int p : request.prompts) msg.add_prompts(p);
  msg.set_single_vector(request.single_vector);
  std::vector<double> costs(request.items());
  for (size_t t = 0; t < costs.size(); ++t) costs[t] = cost_(request.task_set, request.context(t).prompt);
  for (int r : assign_by_cost(costs, coordinator_.size())) msg.add_rank_of_item(r);

  const std::string what = request.single_vector
                               ? "the evaluation of the mean after generation " + std::to_string(request.generation)
                               : "generation " + std::to_string(request.generation);
  const std::vector<std::string> replies = coordinator_.run(job_, msg.SerializeAsString(), what);
  std::vector<evo::ItemOutcome> out(request.items());
  std::vector<bool> filled(out.size(), false);
  bool stopped = false;
  for (size_t r = 0; r < replies.size(); ++r) {
    ItemOutcomesMsg reply;
    if (!reply.ParseFromString(replies[r]))
      fail(coordinator_.describe(int(r)), "the reply to " + what + " does not parse");
    stopped = stopped || reply.interrupted();
    for (const ItemOutcomeMsg& item : reply.items()) {
      if (item.item() >= out.size() || msg.rank_of_item(int(item.item())) != int(r) || filled[item.item()])
        fail(coordinator_.describe(int(r)),
             "the reply to " + what + " has item " + std::to_string(item.item()) + ", which was not its own");
      out[item.item()] = {{item.score(), item.cache_size()}, item.error()};
      filled[item.item()] = true;
    }
  }
  if (interrupted) *interrupted = stopped;
  if (!stopped)
    for (size_t t = 0; t < filled.size(); ++t)
      if (!filled[t])
        fail(coordinator_.describe(msg.rank_of_item(int(t))), what + ": item " + std::to_string(t) + " missing");
  return out;
}

void serve_items(Coordinator& coordinator, const std::string& job, LocalItems local) {
  coordinator.on(job, [&coordinator, local = std::move(local)](const std::string& payload) {
    EvalRequestMsg msg;
    if (!msg.ParseFromString(payload)) fail("evaluation request", "does not parse");
    if (msg.rows() < 0 || msg.cols() < 1 || msg.params_size() != msg.rows() * msg.cols() || msg.prompts_size() < 1 ||
        msg.rank_of_item_size() != msg.cols() * msg.prompts_size())
      fail("evaluation request", "inconsistent sizes");
    const Eigen::MatrixXd params = Eigen::Map<const Eigen::MatrixXd>(msg.params().data(), msg.rows(), msg.cols());
    evo::EvalRequest request;
    request.params = &params;
    request.generation = msg.generation();
    request.task_set = msg.task_set();
    request.prompts.assign(msg.prompts().begin(), msg.prompts().end());
    request.single_vector = msg.single_vector();
    const std::vector<int> rank_of(msg.rank_of_item().begin(), msg.rank_of_item().end());
    const std::vector<size_t> mine = items_of(rank_of, coordinator.rank());
    bool interrupted = false;
    const std::vector<evo::ItemOutcome> outcomes = local(request, mine, &interrupted);
    ItemOutcomesMsg reply;
    reply.set_interrupted(interrupted);
    for (size_t i = 0; i < mine.size(); ++i) {
      ItemOutcomeMsg* item = reply.add_items();
      item->set_item(mine[i]);
      item->set_score(outcomes[i].score.score);
      item->set_cache_size(outcomes[i].score.cache_size);
      item->set_error(outcomes[i].error);
    }
    return reply.SerializeAsString();
  });
}

}  // namespace nammkit::dist
