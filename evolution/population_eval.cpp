#include "evolution/population_eval.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>

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

GenerationEval TbbPopulationEvaluator::evaluate(const Eigen::MatrixXd& population, int64_t generation,
                                                const std::string& task_set) {
  const std::vector<int> prompts = prompts_for(generation);
  const int members = static_cast<int>(population.cols());
  const int per_member = static_cast<int>(prompts.size());
  const size_t tasks = static_cast<size_t>(members) * per_member;
  std::vector<PromptScore> scores(tasks);
  std::vector<std::string> errors(tasks);
  std::atomic<bool> interrupted{false};

  tbb::parallel_for(tbb::blocked_range<size_t>(0, tasks, 1), [&](const tbb::blocked_range<size_t>& range) {
    for (size_t t = range.begin(); t != range.end(); ++t) {
      if (settings_.stop_on_interrupt && interrupt_requested()) {
        interrupted = true;
        return;
      }
      const int member = static_cast<int>(t / per_member);
      PromptContext ctx{generation, &task_set, member, prompts[t % per_member]};
      std::span<const double> params(population.col(member).data(), static_cast<size_t>(population.rows()));
      try {
        scores[t] = fn_(params, ctx);
        if (!std::isfinite(scores[t].score))
          errors[t] = "prompt " + std::to_string(ctx.prompt) + ": score is " + std::to_string(scores[t].score);
      } catch (const std::exception& e) {
        errors[t] = "prompt " + std::to_string(ctx.prompt) + ": " + e.what();
      } catch (...) {
        errors[t] = "prompt " + std::to_string(ctx.prompt) + ": unknown exception";
      }
    }
  });

  GenerationEval out;
  out.evaluations = static_cast<int64_t>(tasks);
  // Also after the loop: a request that arrived while the last tasks ran gives the same outcome as one
  // that arrived earlier, whatever the thread scheduling was.
  if (settings_.stop_on_interrupt && interrupt_requested()) interrupted = true;
  if (interrupted) {
    out.interrupted = true;
    return out;
  }
  out.fitness.assign(members, 0.0);
  std::vector<double> finite;
  double cache_sum = 0;
  int64_t cache_count = 0;
  for (int m = 0; m < members; ++m) {
    double sum = 0;
    std::string reason;
    for (int p = 0; p < per_member; ++p) {
      const size_t t = static_cast<size_t>(m) * per_member + p;
      if (!errors[t].empty()) {
        if (reason.empty()) reason = errors[t];
        continue;
      }
      sum += scores[t].score;
      if (std::isfinite(scores[t].cache_size)) {
        cache_sum += scores[t].cache_size;
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
  const std::vector<int> prompts = prompts_for(generation);
  std::vector<double> scores(prompts.size());
  tbb::parallel_for(size_t{0}, prompts.size(), [&](size_t i) {
    PromptContext ctx{generation, &task_set, -1, prompts[i]};
    scores[i] = fn_(params, ctx).score;  // an exception propagates to the caller
  });
  double sum = 0;
  for (double s : scores) sum += s;
  const double mean = sum / static_cast<double>(scores.size());
  if (!std::isfinite(mean)) fail("population eval", "mean evaluation: score is not finite");
  return mean;
}

}  // namespace nammkit::evo
