// Evaluating a CMA-ES population: the interface the trainer calls once per generation, and a TBB
// implementation that scores every (member, prompt) pair in parallel with a user callable.
//
// A generation is a list of work items, (column, prompt) pairs in column-major order. Running the items
// is separate from reducing them to fitness values, so the items can run elsewhere (an ItemRunner: other
// MPI ranks, distributed/) while the reduction, and so the result, stays the same.
//
// Fitness is maximised. A member whose evaluation throws or yields NaN/inf is not allowed to stop the
// run: it gets a penalty fitness strictly below every successful member of that generation (see
// failure_fitness) and is reported with the reason. -inf is not used because CMA-ES needs finite values
// (its stop criteria take differences of fitness values).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace nammkit::evo {

struct MemberFailure {
  int member = 0;
  std::string reason;
};

struct GenerationEval {
  std::vector<double> fitness;  // one finite value per member (failures already penalised)
  std::vector<MemberFailure> failures;
  // Mean of the cache sizes the evaluator reported, NaN when it reported none.
  double mean_cache_size = std::numeric_limits<double>::quiet_NaN();
  int64_t evaluations = 0;   // elementary evaluations done ((member, prompt) pairs)
  bool interrupted = false;  // stopped early on an interrupt request: fitness is incomplete
};

class PopulationEvaluator {
 public:
  virtual ~PopulationEvaluator() = default;
  // population: n x lambda, column k = member k. generation: the global generation index (the same
  // number on a resumed run). task_set: the current stage's opaque task-set id.
  virtual GenerationEval evaluate(const Eigen::MatrixXd& population, int64_t generation,
                                  const std::string& task_set) = 0;
};

// What one (member, prompt) evaluation returns: its score and, optionally, the cache size it ended with.
struct PromptScore {
  double score = 0;
  double cache_size = std::numeric_limits<double>::quiet_NaN();
};

struct PromptContext {
  int64_t generation = 0;
  const std::string* task_set = nullptr;
  int member = -1;  // -1 when evaluating a single vector (e.g. the mean)
  int prompt = 0;   // index into the task set's prompt pool
};

using PromptFn = std::function<PromptScore(std::span<const double> params, const PromptContext& context)>;

// What a generation (or the evaluation of one vector) asks for. Item t is column t / prompts.size() of
// `params` on prompt prompts[t % prompts.size()].
struct EvalRequest {
  const Eigen::MatrixXd* params = nullptr;  // n x columns
  int64_t generation = 0;
  std::string task_set;
  std::vector<int> prompts;
  bool single_vector = false;  // one column, evaluated as member -1 (the CMA-ES mean)

  size_t items() const { return static_cast<size_t>(params->cols()) * prompts.size(); }
  PromptContext context(size_t item) const;
};

// The result of one item: its score, or why it failed (a thrown nammkit::Error or std::exception, or a
// score that is not finite). An empty `error` means success.
struct ItemOutcome {
  PromptScore score;
  std::string error;
};

// Runs `items` (indices into the request's items) with `fn` on TBB threads, returning their outcomes in
// the order of `items`. Sets *interrupted (and leaves the rest unrun) when stop_on_interrupt and an
// interrupt request arrives. dedicated_threads > 0 runs them on that many threads of their own instead,
// each taking the next item when done: for items that wait on each other (lockstep batches,
// transformer/lockstep.h), which must not occupy TBB's workers. The outcomes are the same either way.
std::vector<ItemOutcome> run_items(const PromptFn& fn, const EvalRequest& request, std::span<const size_t> items,
                                   bool stop_on_interrupt, bool* interrupted, int dedicated_threads = 0);

// Where a generation's items run. The default (none set) is run_items on this process for all items.
class ItemRunner {
 public:
  virtual ~ItemRunner() = default;
  // The outcomes of all request.items(), in item order; sets *interrupted when the work stopped early.
  virtual std::vector<ItemOutcome> run(const EvalRequest& request, bool* interrupted) = 0;
};

struct TbbEvalSettings {
  int pool_size = 1;               // prompts available in the task set, indices 0..pool_size-1
  int prompts_per_generation = 0;  // sampled without replacement per generation; 0 or >= pool = all
  uint64_t seed = 0;               // prompt sampling is seeded by (seed, generation)
  // Poll interrupt_requested() between evaluations; a request seen during a generation skips the
  // remaining work and marks the generation interrupted (the trainer then discards it).
  bool stop_on_interrupt = true;
  // > 0: run the items on this many dedicated threads (run_items); 0: on TBB's workers.
  int dedicated_threads = 0;
};

// Evaluates members x prompts with tbb::parallel_for; fitness of a member = mean score over the
// generation's prompts. Every member of a generation sees the same prompts (common random numbers).
// The per-member reduction runs in prompt order after the parallel loop, so results do not depend on
// thread scheduling. `fn` is called concurrently and must be thread-safe.
class TbbPopulationEvaluator : public PopulationEvaluator {
 public:
  TbbPopulationEvaluator(TbbEvalSettings settings, PromptFn fn);
  // Convenience: a callable that only returns a score.
  TbbPopulationEvaluator(TbbEvalSettings settings, std::function<double(std::span<const double>, int)> fn);

  GenerationEval evaluate(const Eigen::MatrixXd& population, int64_t generation, const std::string& task_set) override;

  // Mean score of one vector (e.g. the CMA-ES mean) over the same prompts as `generation`. Throws
  // nammkit::Error if an evaluation fails (there is nothing to rank it against).
  double evaluate_vector(std::span<const double> params, int64_t generation, const std::string& task_set);

  // The prompt indices of a generation: a deterministic function of (seed, generation).
  std::vector<int> prompts_for(int64_t generation) const;

  // Runs the items elsewhere from now on (not owned; must outlive this evaluator). nullptr: here.
  void set_runner(ItemRunner* runner) { runner_ = runner; }
  // Runs some items of a request here (what an ItemRunner does with its share).
  std::vector<ItemOutcome> run_here(const EvalRequest& request, std::span<const size_t> items,
                                    bool* interrupted) const {
    return run_items(fn_, request, items, settings_.stop_on_interrupt, interrupted, settings_.dedicated_threads);
  }

 private:
  // All items of a request, on the runner or here; `stop_on_interrupt` applies when they run here.
  std::vector<ItemOutcome> run_all(const EvalRequest& request, bool stop_on_interrupt, bool* interrupted) const;

  TbbEvalSettings settings_;
  PromptFn fn_;
  ItemRunner* runner_ = nullptr;
};

// The fitness given to failed members: lowest finite fitness minus max(range of the finite values,
// 1e-9 max(1, |lowest|)), so failures rank last without distorting the scale much.
double failure_fitness(std::span<const double> finite_values);

}  // namespace nammkit::evo
