#include "tools/nammkit/rl_rollouts.h"

#include "core/error.h"
#include "distributed/messages.pb.h"
#include "distributed/work_split.h"
#include "evolution/rng.h"

namespace nammkit::cli {

NammRolloutSource::NammRolloutSource(const ExperimentConfig& config, const EvolutionSetup& setup,
                                     const FeatureNormalizer& normalizer, dist::Coordinator* coordinator)
    : config_(config), setup_(setup), normalizer_(normalizer), coordinator_(coordinator) {
  for (const StageConfig& stage : config_.stages) {
    const StagePool& pool = setup_.pools.at(stage.name);
    evo::TbbEvalSettings s;
    s.pool_size = int(pool.entries.size());
    s.prompts_per_generation = stage.prompts_per_generation;
    s.seed = config_.seed;
    s.dedicated_threads = setup_.population_threads;
    samplers_.emplace(stage.name, std::make_unique<evo::TbbPopulationEvaluator>(
                                      s, [this, &pool](std::span<const double> params, const evo::PromptContext& ctx) {
                                        return rollout(pool, params, ctx);
                                      }));
  }
  if (coordinator_ && coordinator_->is_root()) {
    coordinator_->on("rl_rollouts", [this](const std::string& payload) { return serve_rollouts(payload); });
    coordinator_->on("rl_gradients", [this](const std::string& payload) { return serve_gradients(payload); });
  }
}

uint64_t NammRolloutSource::rollout_seed(int64_t iteration, const evo::PromptContext& ctx) const {
  uint64_t s = evo::derive_seed(config_.seed ^ 0x524c524f4c4c4f55ull, static_cast<uint64_t>(iteration));
  s = evo::derive_seed(s, static_cast<uint64_t>(ctx.prompt));
  return evo::derive_seed(s, static_cast<uint64_t>(ctx.member));
}

evo::PromptScore NammRolloutSource::rollout(const StagePool& pool, std::span<const double> params,
                                            const evo::PromptContext& ctx) {
  // Called concurrently: each item writes only its own slot (a request's prompts are distinct).
  DecisionTrace& trace = slots_[size_t(ctx.member) * pool_size_ + size_t(ctx.prompt)];
  NammPolicy policy(setup_.namm, to_floats(params), normalizer_);
  policy.set_sampling(StochasticKeep{config_.rl.temperature, rollout_seed(iteration_, ctx)}, &trace);
  return prompt_score(
      weights_, ctx.prompt,
      run_sample(setup_.population_backend(), &policy, *pool.entries[size_t(ctx.prompt)].sample, setup_.run));
}

evo::EvalRequest NammRolloutSource::request_for(std::span<const double> params, int64_t iteration,
                                                const std::string& task_set, Eigen::MatrixXd& columns) {
  if (!samplers_.count(task_set)) fail("rl rollouts", "unknown stage '" + task_set + "'");
  const int K = config_.rl.samples_per_prompt;
  columns.resize(Eigen::Index(params.size()), K);
  for (int k = 0; k < K; ++k)
    columns.col(k) = Eigen::Map<const Eigen::VectorXd>(params.data(), Eigen::Index(params.size()));
  evo::EvalRequest request;
  request.params = &columns;
  request.generation = iteration;
  request.task_set = task_set;
  request.prompts = samplers_.at(task_set)->prompts_for(iteration);
  return request;
}

std::vector<evo::ItemOutcome> NammRolloutSource::run_here(const evo::EvalRequest& request,
                                                          std::span<const size_t> items, bool* interrupted) {
  const StagePool& pool = setup_.pools.at(request.task_set);
  weights_ = pool_weights(pool, request.prompts, config_.epsilon, config_.cache_weight);
  iteration_ = request.generation;
  pool_size_ = pool.entries.size();
  slots_.assign(size_t(config_.rl.samples_per_prompt) * pool_size_, DecisionTrace{});
  held_.clear();
  std::vector<evo::ItemOutcome> outcomes = samplers_.at(request.task_set)->run_here(request, items, interrupted);
  for (size_t i = 0; i < outcomes.size() && !*interrupted; ++i) {
    const evo::PromptContext ctx = request.context(items[i]);
    held_[items[i]] = std::move(slots_[size_t(ctx.member) * pool_size_ + size_t(ctx.prompt)]);
  }
  slots_.clear();
  return outcomes;
}

std::vector<rl::Rollout> NammRolloutSource::rollouts(std::span<const double> params, int64_t iteration,
                                                     const std::string& task_set, bool* interrupted) {
  Eigen::MatrixXd columns;
  const evo::EvalRequest request = request_for(params, iteration, task_set, columns);
  const StagePool& pool = setup_.pools.at(task_set);
  std::vector<rl::Rollout> out(request.items());
  for (size_t t = 0; t < out.size(); ++t) {
    const evo::PromptContext ctx = request.context(t);
    out[t].prompt = ctx.prompt;
    out[t].task = pool.tasks[size_t(pool.entries[size_t(ctx.prompt)].task)].name;
  }
  if (!coordinator_) {
    std::vector<size_t> items(out.size());
    for (size_t t = 0; t < items.size(); ++t) items[t] = t;
    const std::vector<evo::ItemOutcome> outcomes = run_here(request, items, interrupted);
    if (*interrupted) return {};
    for (size_t t = 0; t < out.size(); ++t) {
      out[t].reward = outcomes[t].score.score;
      out[t].cache_size = outcomes[t].score.cache_size;
      out[t].error = outcomes[t].error;
      out[t].trace = std::move(held_.at(t));  // the trainer computes the gradients here
    }
    held_.clear();
    return out;
  }
  // Spread the items over the ranks, balanced by expected tokens; the traces stay where they ran.
  dist::RlRolloutJobMsg job;
  job.set_iteration(iteration);
  job.set_task_set(task_set);
  job.mutable_params()->Add(params.begin(), params.end());
  job.mutable_prompts()->Add(request.prompts.begin(), request.prompts.end());
  std::vector<double> costs;
  for (size_t t = 0; t < out.size(); ++t)
    costs.push_back(expected_tokens(*pool.entries[size_t(out[t].prompt)].sample, config_.max_context));
  for (int r : dist::assign_by_cost(costs, coordinator_->size())) job.add_rank_of_item(r);
  const std::vector<std::string> replies =
      coordinator_->run("rl_rollouts", job.SerializeAsString(), "iteration " + std::to_string(iteration));
  std::vector<bool> seen(out.size(), false);
  std::vector<dist::RlRolloutsMsg> parsed(replies.size());
  for (size_t r = 0; r < replies.size(); ++r) {
    if (!parsed[r].ParseFromString(replies[r]))
      fail(coordinator_->describe(int(r)), "rl_rollouts: reply does not parse");
    *interrupted = *interrupted || parsed[r].interrupted();
  }
  if (*interrupted) return {};  // the trainer discards the iteration; latest.ckpt is before it
  for (size_t r = 0; r < replies.size(); ++r) {
    const dist::RlRolloutsMsg& reply = parsed[r];
    for (const dist::RlRolloutMsg& m : reply.rollouts()) {
      if (m.item() >= out.size() || seen[m.item()] || job.rank_of_item(int(m.item())) != int(r))
        fail(coordinator_->describe(int(r)), "rl_rollouts: reply names an item it was not given");
      seen[m.item()] = true;
      rl::Rollout& o = out[m.item()];
      o.reward = m.reward();
      o.cache_size = m.cache_size();
      o.decisions = m.decisions();
      o.log_prob = m.log_prob();
      o.error = m.error();
    }
  }
  for (size_t t = 0; t < out.size(); ++t)
    if (!seen[t]) fail("rl_rollouts", "no reply for item " + std::to_string(t));
  return out;
}

std::string NammRolloutSource::serve_rollouts(const std::string& payload) {
  dist::RlRolloutJobMsg job;
  if (!job.ParseFromString(payload)) fail("rl_rollouts", "malformed request");
  if (!samplers_.count(job.task_set())) fail("rl_rollouts", "unknown stage '" + job.task_set() + "'");
  const std::vector<double> params(job.params().begin(), job.params().end());
  if (int(params.size()) != setup_.namm.scorer.n_params()) fail("rl_rollouts", "wrong number of parameters");
  Eigen::MatrixXd columns;
  const evo::EvalRequest request = request_for(params, job.iteration(), job.task_set(), columns);
  if (std::vector<int>(job.prompts().begin(), job.prompts().end()) != request.prompts ||
      size_t(job.rank_of_item_size()) != request.items())
    fail("rl_rollouts", "the root's prompts differ from this rank's (another config or task data?)");
  const std::vector<size_t> mine =
      dist::items_of(std::vector<int>(job.rank_of_item().begin(), job.rank_of_item().end()), coordinator_->rank());
  bool interrupted = false;
  const std::vector<evo::ItemOutcome> outcomes = run_here(request, mine, &interrupted);
  dist::RlRolloutsMsg reply;
  if (interrupted) {  // some items never ran: report that, not their (default) outcomes
    reply.set_interrupted(true);
    return reply.SerializeAsString();
  }
  for (size_t i = 0; i < mine.size(); ++i) {
    dist::RlRolloutMsg* m = reply.add_rollouts();
    m->set_item(mine[i]);
    m->set_reward(outcomes[i].score.score);
    m->set_cache_size(outcomes[i].score.cache_size);
    m->set_error(outcomes[i].error);
    const DecisionTrace& trace = held_.at(mine[i]);
    m->set_decisions(trace.decisions());
    m->set_log_prob(trace.log_prob());
  }
  return reply.SerializeAsString();
}

std::vector<rl::RolloutGradient> NammRolloutSource::gradients(const ScorerShape& shape, std::span<const float> params,
                                                              std::span<const rl::Rollout> batch,
                                                              std::span<const size_t> used,
                                                              std::span<const double> advantages,
                                                              const rl::SurrogateOptions& options) {
  if (!coordinator_) return rl::RolloutSource::gradients(shape, params, batch, used, advantages, options);
  dist::RlGradientJobMsg job;
  job.mutable_params()->Add(params.begin(), params.end());
  job.set_temperature(options.temperature);
  job.set_clip(options.clip);
  job.set_iteration(iteration_);
  for (size_t i = 0; i < used.size(); ++i) {
    job.add_items(used[i]);
    job.add_advantages(advantages[i]);
  }
  const std::vector<std::string> replies = coordinator_->run("rl_gradients", job.SerializeAsString(), "a gradient");
  std::map<size_t, size_t> position;  // item -> index in `used`
  for (size_t i = 0; i < used.size(); ++i) position[used[i]] = i;
  std::vector<rl::RolloutGradient> out(used.size());
  std::vector<bool> seen(used.size(), false);
  for (size_t r = 0; r < replies.size(); ++r) {
    dist::RlGradientsMsg reply;
    if (!reply.ParseFromString(replies[r])) fail(coordinator_->describe(int(r)), "rl_gradients: reply does not parse");
    for (const dist::RlGradientMsg& m : reply.gradients()) {
      const auto it = position.find(m.item());
      if (it == position.end() || seen[it->second] || m.gradient_size() != shape.n_params())
        fail(coordinator_->describe(int(r)), "rl_gradients: reply for an item it was not asked for");
      seen[it->second] = true;
      rl::RolloutGradient& g = out[it->second];
      g.gradient.assign(m.gradient().begin(), m.gradient().end());
      g.objective = m.objective();
      g.clipped = m.clipped();
      g.kl = m.kl();
    }
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (!seen[i]) fail("rl_gradients", "no rank held the trace of item " + std::to_string(used[i]));
  return out;
}

std::string NammRolloutSource::serve_gradients(const std::string& payload) {
  dist::RlGradientJobMsg job;
  if (!job.ParseFromString(payload) || job.items_size() != job.advantages_size() ||
      job.params_size() != setup_.namm.scorer.n_params())
    fail("rl_gradients", "malformed request");
  if (job.iteration() != iteration_)
    fail("rl_gradients", "asks for iteration " + std::to_string(job.iteration()) + ", this rank holds the traces of " +
                             std::to_string(iteration_));
  const std::vector<float> params(job.params().begin(), job.params().end());
  rl::SurrogateOptions options;
  options.temperature = job.temperature();
  options.clip = job.clip();
  std::vector<size_t> mine;  // indices into the job's items whose traces are here
  std::vector<rl::RolloutTerm> terms;
  for (int i = 0; i < job.items_size(); ++i)
    if (const auto it = held_.find(job.items(i)); it != held_.end()) {
      mine.push_back(size_t(i));
      terms.push_back({&it->second, job.advantages(i)});
    }
  const std::vector<rl::RolloutGradient> sums = rl::rollout_gradients(setup_.namm.scorer, params, terms, options);
  dist::RlGradientsMsg reply;
  for (size_t k = 0; k < mine.size(); ++k) {
    dist::RlGradientMsg* m = reply.add_gradients();
    m->set_item(job.items(int(mine[k])));
    m->mutable_gradient()->Add(sums[k].gradient.begin(), sums[k].gradient.end());
    m->set_objective(sums[k].objective);
    m->set_clipped(sums[k].clipped);
    m->set_kl(sums[k].kl);
  }
  return reply.SerializeAsString();
}

}  // namespace nammkit::cli
