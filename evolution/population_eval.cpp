#include "evolution/population_eval.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <thread>

#include "core/error.h"
#include "evolution/interrupt.h"
#include "evolution/rng.h"

namespace nammkit::evo {

TbbPopulationEvaluator::TbbPopulationEvaluator(TbbEvalSettings settings, PromptFn fn)
    : settings_(settings), fn_(std::move(fn)) {
  if (settings_.pool_size < 1) fail("population eval", "pool_size: must be >= 1");
  if (settings_.prompts_per_generation < 0) fail("population eval", "prompts_per_generation: must be >= 0");
  if (!fn_) fail("population eval", "fn: empty callable");
}

TbbPopulationEvaluator::TbbPopulationEvaluator(TbbEvalSettings settings,
                                               std::function<double(std::span<const double>, int)> fn)
    : TbbPopulationEvaluator(settings, [f = std::move(fn)](std::span<const double> p, const PromptContext& c) {
        return PromptScore{f(p, c.prompt)};
      }) {}

std::vector<int> TbbPopulationEvaluator::prompts_for(int64_t generation) const {
  std::vector<int> all(settings_.pool_size);
  std::iota(all.begin(), all.end(), 0);
  const int k = settings_.prompts_per_generation;
  if (k == 0 || k >= settings_.pool_size) return all;
  // Partial Fisher-Yates with an RNG of its own per generation: the sample of generation g does not
  // depend on how many generations ran before (so a resumed run sees the same prompts).
  Rng rng(derive_seed(settings_.seed, static_cast<uint64_t>(generation)));
  for (int i = 0; i < k; ++i) {
    const int j = i + static_cast<int>(rng.uniform() * (settings_.pool_size - i));
    std::swap(all[i], all[std::min(j, settings_.pool_size - 1)]);
  }
  all.resize(k);
  return all;
}

double failure_fitness(std::span<const double> finite) {
  const auto [lo, hi] = std::minmax_element(finite.begin(), finite.end());
  return *lo - std::max(*hi - *lo, 1e-9 * std::max(1.0, std::abs(*lo)));
}

PromptContext EvalRequest::context(size_t item) const {
  const size_t per_column = prompts.size();
  const int column = static_cast<int>(item / per_column);
  return PromptContext{generation, &task_set, single_vector ? -1 : column, prompts[item % per_column]};
}

std::vector<ItemOutcome> run_items(const PromptFn& fn, const EvalRequest& request, std::span<const size_t> items,
                                   bool stop_on_interrupt, bool* interrupted, int dedicated_threads) {
  std::vector<ItemOutcome> out(items.size());
  std::atomic<bool> stop{false};
  const Eigen::MatrixXd& params = *request.params;
  // Runs item i unless an interrupt request has arrived; false once it has.
  auto run_one = [&](size_t i) {
    if (stop_on_interrupt && interrupt_requested()) {
      stop = true;
      return false;
    }
    const size_t item = items[i];
    const PromptContext ctx = request.context(item);
    const Eigen::Index column = static_cast<Eigen::Index>(item / request.prompts.size());
    std::span<const double> x(params.col(column).data(), static_cast<size_t>(params.rows()));
    const std::string where = "prompt " + std::to_string(ctx.prompt) + ": ";
    try {
      out[i].score = fn(x, ctx);
      if (!std::isfinite(out[i].score.score)) out[i].error = where + "score is " + std::to_string(out[i].score.score);
    } catch (const std::exception& e) {
      out[i].error = where + e.what();
    } catch (...) {
      out[i].error = where + "unknown exception";
    }
    return true;
  };
  if (dedicated_threads > 0) {
    // Threads of their own, which may block on each other (lockstep batches): TBB workers must not.
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    const size_t n_threads = std::min(items.size(), static_cast<size_t>(dedicated_threads));
    for (size_t k = 0; k < n_threads; ++k)
      threads.emplace_back([&] {
        for (size_t i = next++; i < items.size(); i = next++)
          if (!run_one(i)) return;
      });
    for (std::thread& thread : threads) thread.join();
  } else {
    tbb::parallel_for(tbb::blocked_range<size_t>(0, items.size(), 1), [&](const tbb::blocked_range<size_t>& range) {
      for (size_t i = range.begin(); i != range.end(); ++i)
        if (!run_one(i)) return;
    });
  }
  // Also after the loop: a request that arrived while the last items ran gives the same outcome as one
  // that arrived earlier, whatever the thread scheduling was.
  if (stop_on_interrupt && interrupt_requested()) stop = true;
  if (interrupted) *interrupted = stop;
  return out;
}

std::vector<ItemOutcome> TbbPopulationEvaluator::run_all(const EvalRequest& request, bool stop_on_interrupt,
                                                         bool* interrupted) const {
  if (runner_) return runner_->run(request, interrupted);
  std::vector<size_t> all(request.items());
  std::iota(all.begin(), all.end(), size_t{0});
  return run_items(fn_, request, all, stop_on_interrupt, interrupted, settings_.dedicated_threads);
}

GenerationEval TbbPopulationEvaluator::evaluate(const Eigen::MatrixXd& population, int64_t generation,
                                                const std::string& task_set) {
  const EvalRequest request{&population, generation, task_set, prompts_for(generation), false};
  const int members = static_cast<int>(population.cols());
  const int per_member = static_cast<int>(request.prompts.size());
  bool interrupted = false;
  const std::vector<ItemOutcome> items = run_all(request, settings_.stop_on_interrupt, &interrupted);

  GenerationEval out;
  out.evaluations = static_cast<int64_t>(items.size());
  if (interrupted) {
    out.interrupted = true;
    return out;
  }
  // The reduction runs in item order, so results do not depend on where or in which order items ran.
  out.fitness.assign(members, 0.0);
  std::vector<double> finite;
  double cache_sum = 0;
  int64_t cache_count = 0;
  for (int m = 0; m < members; ++m) {
    double sum = 0;
    std::string reason;
    for (int p = 0; p < per_member; ++p) {
      const ItemOutcome& item = items[static_cast<size_t>(m) * per_member + p];
      if (!item.error.empty()) {
        if (reason.empty()) reason = item.error;
        continue;
      }
      sum += item.score.score;
      if (std::isfinite(item.score.cache_size)) {
        cache_sum += item.score.cache_size;
        ++cache_count;
      }
    }
    const double mean = sum / per_member;
    if (reason.empty() && !std::isfinite(mean)) reason = "mean score is not finite";
    if (reason.empty()) {
      out.fitness[m] = mean;
      finite.push_back(mean);
    } else {
      out.failures.push_back({m, reason});
    }
  }
  if (finite.empty())
    fail("population eval", "generation " + std::to_string(generation) + ": all " + std::to_string(members) +
                                " members failed; first: " + out.failures.front().reason);
  const double penalty = failure_fitness(finite);
  for (const MemberFailure& f : out.failures) out.fitness[f.member] = penalty;
  if (cache_count > 0) out.mean_cache_size = cache_sum / static_cast<double>(cache_count);
  return out;
}

double TbbPopulationEvaluator::evaluate_vector(std::span<const double> params, int64_t generation,
                                               const std::string& task_set) {
  const Eigen::MatrixXd column = Eigen::Map<const Eigen::VectorXd>(params.data(), Eigen::Index(params.size()));
  const EvalRequest request{&column, generation, task_set, prompts_for(generation), true};
  // The mean's evaluation runs to the end here: an interrupt is handled between generations.
  bool interrupted = false;
  const std::vector<ItemOutcome> items = run_all(request, false, &interrupted);
  if (interrupted) fail("population eval", "mean evaluation: interrupted");
  double sum = 0;
  for (const ItemOutcome& item : items) {
    if (!item.error.empty()) fail("population eval", "mean evaluation: " + item.error);
    sum += item.score.score;
  }
  const double mean = sum / static_cast<double>(items.size());
  if (!std::isfinite(mean)) fail("population eval", "mean evaluation: score is not finite");
  return mean;
}

}  // namespace nammkit::evo
