#include "tools/nammkit/evaluation.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/error.h"
#include "core/text.h"
#include "namm/baselines.h"
#include "namm/policy_file.h"
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tools/nammkit/rank_device.h"
#include "tools/nammkit/sample_runner.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {

struct Row {
  std::string label;
  PolicyFile file;
};

// The model, its backend and the task set: what every rank of an eval loads alike.
struct EvalSetup {
  Model model;
  std::unique_ptr<Backend> backend;
  std::vector<Task> tasks;
  std::vector<const Sample*> samples;  // every task's samples in order: a sample's index in jobs
  RunOptions run;                      // the update interval comes from each row's policy file
};

std::unique_ptr<EvalSetup> load_setup(const EvalOptions& options, bool announce) {
  auto setup = std::make_unique<EvalSetup>();
  setup->model = load_model(options.model);
  setup->backend = make_backend(setup->model, options.device, !announce);
  TaskContext context;
  context.tokenizer = &setup->model.tokenizer;
  setup->tasks = load_task_set(options.tasks_file, context);
  if (setup->tasks.empty()) fail(options.tasks_file, "no tasks");
  for (const Task& task : setup->tasks)
    for (const Sample& sample : task.samples) setup->samples.push_back(&sample);
  setup->run.max_context = options.max_context;
  setup->run.session.prefill_chunk = options.prefill_chunk;
  setup->run.session.float_activations = options.float_activations;
  return setup;
}

SampleRunner row_runner(const EvalSetup& setup, dist::Coordinator* coordinator) {
  return SampleRunner(
      *setup.backend, [&setup](int i) -> const Sample& { return *setup.samples.at(size_t(i)); }, setup.run, coordinator,
      "eval_row");
}

// Runs all samples of all tasks under one policy description.
PolicyRow run_row(const EvalSetup& setup, SampleRunner& runner, const Row& row) {
  PolicyRow out;
  out.label = row.label;
  std::vector<int> all(setup.samples.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = int(i);
  const std::vector<RunResult> every = runner.run(all, &row.file, "the row " + row.label);
  double seconds = 0, tokens = 0;
  size_t next = 0;
  for (const Task& task : setup.tasks) {
    const std::vector<RunResult> results(every.begin() + std::ptrdiff_t(next),
                                         every.begin() + std::ptrdiff_t(next + task.samples.size()));
    next += task.samples.size();
    TaskRow t;
    t.task = task.name;
    t.samples = int(results.size());
    const int n_layers = setup.model.config.n_layers;
    t.mean_cache_per_layer.assign(n_layers, 0.0);
    t.max_cache_per_layer.assign(n_layers, 0);
    double task_seconds = 0, task_tokens = 0;
    for (const RunResult& r : results) {
      t.outcomes.push_back({r.score, r.cache.mean});
      t.score += r.score;
      t.mean_cache += r.cache.mean;
      t.max_cache = std::max(t.max_cache, r.cache.max);
      for (int l = 0; l < n_layers; ++l) {
        t.mean_cache_per_layer[l] += r.cache.mean_per_layer[l];
        t.max_cache_per_layer[l] = std::max(t.max_cache_per_layer[l], r.cache.max_per_layer[l]);
      }
      task_seconds += r.prefill_seconds + r.decode_seconds;
      task_tokens += r.prompt_tokens + r.generated_tokens;
    }
    const double n = std::max<size_t>(1, results.size());
    t.score /= n;
    t.mean_cache /= n;
    for (double& v : t.mean_cache_per_layer) v /= n;
    t.tokens_per_second = task_seconds > 0 ? task_tokens / task_seconds : 0;
    seconds += task_seconds;
    tokens += task_tokens;
    out.tasks.push_back(std::move(t));
  }
  out.tokens_per_second = seconds > 0 ? tokens / seconds : 0;
  return out;
}

// Normalised by the full cache on the same samples, by the one fitness implementation (tasks/fitness).
void normalise(PolicyRow& row, const PolicyRow& full, const std::vector<Task>& tasks, double epsilon) {
  std::vector<TaskFitness> per_task;
  for (size_t t = 0; t < row.tasks.size(); ++t) {
    per_task.push_back(normalise_task(tasks[t].name, row.tasks[t].outcomes, full.tasks[t].outcomes, epsilon,
                                      floors_at_epsilon(tasks[t].samples.front())));
    row.tasks[t].normalised = per_task.back().ratio;
  }
  const FitnessReport report = combine_tasks(std::move(per_task), 0.0, epsilon);
  row.mean_normalised = report.mean_ratio;
  row.mean_cache = report.mean_cache;
  row.cache_fraction = report.full_mean_cache > 0 ? report.mean_cache / report.full_mean_cache : 0;
}

// "--policy FILE[:F]": a policy file, and for a NAMM optionally a fixed budget F (a fraction of the
// tokens seen; namm/selection.h's keep_fraction) in place of its threshold. Label "namm(FILE)[:F]".
Row policy_row(const std::string& spec) {
  const size_t colon = spec.find_last_of(':');
  const bool has_budget = colon != std::string::npos && colon + 1 < spec.size() &&
                          spec.find_first_not_of("0123456789.", colon + 1) == std::string::npos;
  const std::string path = has_budget ? spec.substr(0, colon) : spec;
  Row row{"namm(" + base_name(path) + ")", load_policy(path)};
  if (!has_budget) return row;
  const std::string budget_text = spec.substr(colon + 1);
  const Budget budget = Budget::parse(budget_text, "--policy " + spec);
  if (!budget.is_fraction) fail("--policy " + spec, "budget: expected a fraction of the tokens seen, in (0, 1]");
  if (row.file.kind() != POLICY_NAMM_BAM && row.file.kind() != POLICY_NAMM_MLP)
    fail("--policy " + spec, "budget: only a NAMM policy takes one (a baseline's goes in --baseline)");
  row.file.mutable_namm()->set_keep_fraction(budget.value);
  validate_policy_file(row.file, "--policy " + spec);
  row.label += ":" + budget_text;
  return row;
}

}  // namespace

EvalReport run_eval(const EvalOptions& options, dist::Coordinator* coordinator) {
  if (coordinator) select_rank_gpu(options.device, coordinator->local_rank());
  auto load = [&] { return load_setup(options, true); };
  const std::unique_ptr<EvalSetup> setup = coordinator ? coordinator->busy(load) : load();
  const Model& model = setup->model;
  const std::vector<Task>& tasks = setup->tasks;
  warn_training_split(tasks, options.tasks_file);
  SampleRunner runner = row_runner(*setup, coordinator);
  runner.serve();

  std::vector<Row> namm_rows;
  for (const std::string& spec : options.policy_files) namm_rows.push_back(policy_row(spec));
  const PolicyFile* first_file = namm_rows.empty() ? nullptr : &namm_rows[0].file;
  const int interval = run_update_interval(options.update_interval, nullptr, first_file);  // baselines and full

  EvalReport report;
  report.model = model.config.name;
  report.device = setup->backend->name();
  if (coordinator) report.device += " x " + std::to_string(coordinator->size()) + " ranks";
  std::fprintf(stderr, "eval: device %s\n", report.device.c_str());
  PolicyFile full_file = make_baseline_policy_file("full");
  full_file.set_update_interval(interval);
  std::fprintf(stderr, "eval: full cache...\n");
  report.rows.push_back(run_row(*setup, runner, {"full", full_file}));
  normalise(report.rows[0], report.rows[0], tasks, options.epsilon);

  for (Row& row : namm_rows)
    row.file.set_update_interval(run_update_interval(options.update_interval, &row.file, nullptr));
  for (const Row& row : namm_rows) {
    std::fprintf(stderr, "eval: %s...\n", row.label.c_str());
    report.rows.push_back(run_row(*setup, runner, row));
    normalise(report.rows.back(), report.rows[0], tasks, options.epsilon);
  }
  for (const std::string& spec : options.baselines) {
    auto run_spec = [&](const std::string& full_spec) {
      PolicyFile file = make_baseline_policy_file(full_spec);
      file.set_update_interval(interval);
      std::fprintf(stderr, "eval: %s...\n", full_spec.c_str());
      PolicyRow row = run_row(*setup, runner, {full_spec, file});
      normalise(row, report.rows[0], tasks, options.epsilon);
      return row;
    };
    if (spec.find(':') != std::string::npos || spec == "full") {
      report.rows.push_back(run_spec(spec));
      continue;
    }
    if (namm_rows.empty())
      fail("nammkit eval", "--baseline " + spec + ": no budget given and no --policy whose cache size it could match");
    // Match the first policy's mean cache fraction. A budget fraction f keeps f * (tokens seen) at each
    // update, but the cache also holds what arrived since the last update, so the resulting fraction is
    // not f: a few secant steps on f make the two mean cache sizes agree.
    const double target = report.rows[1].cache_fraction;
    auto with_budget = [&](double f) {
      char budget[32];
      std::snprintf(budget, sizeof budget, "%.4f", std::clamp(f, 1e-4, 1.0));
      return run_spec(spec + ":" + budget);
    };
    double f_prev = target, f = target;
    PolicyRow prev = with_budget(f), best = prev;
    f = target * target / std::max(prev.cache_fraction, 1e-6);
    for (int step = 0; step < 4 && std::abs(best.cache_fraction - target) > 0.005; ++step) {
      PolicyRow row = with_budget(f);
      if (std::abs(row.cache_fraction - target) < std::abs(best.cache_fraction - target)) best = row;
      const double slope = (row.cache_fraction - prev.cache_fraction) / (f - f_prev);
      if (!std::isfinite(slope) || slope <= 0) break;
      f_prev = f;
      prev = row;
      f = std::clamp(f + (target - row.cache_fraction) / slope, 1e-4, 1.0);
    }
    report.rows.push_back(best);
  }
  if (coordinator) coordinator->stop();
  return report;
}

int serve_eval(const EvalOptions& options, dist::Coordinator& coordinator) {
  select_rank_gpu(options.device, coordinator.local_rank());
  std::unique_ptr<EvalSetup> setup;
  try {
    setup = coordinator.busy([&] { return load_setup(options, false); });
  } catch (const std::exception& e) {
    coordinator.set_setup_error(coordinator.describe(coordinator.rank()) + ", loading: " + e.what());
    coordinator.serve();
    return 1;
  }
  SampleRunner runner = row_runner(*setup, &coordinator);
  runner.serve();
  coordinator.serve();
  return 0;
}

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j;
  j["model"] = model;
  j["device"] = device;
  for (const PolicyRow& r : rows) {
    nlohmann::json row = {{"policy", r.label},
                          {"mean_normalised", r.mean_normalised},
                          {"mean_cache", r.mean_cache},
                          {"cache_fraction", r.cache_fraction},
                          {"tokens_per_second", r.tokens_per_second}};
    for (const TaskRow& t : r.tasks)
      row["tasks"].push_back({{"task", t.task},
                              {"samples", t.samples},
                              {"score", t.score},
                              {"normalised", t.normalised},
                              {"mean_cache", t.mean_cache},
                              {"max_cache", t.max_cache},
                              {"mean_cache_per_layer", t.mean_cache_per_layer},
                              {"max_cache_per_layer", t.max_cache_per_layer},
                              {"tokens_per_second", t.tokens_per_second}});
    j["rows"].push_back(row);
  }
  return j;
}

std::string EvalReport::table() const {
  std::ostringstream o;
  char buf[256];
  size_t width = 8;
  for (const PolicyRow& r : rows) width = std::max(width, r.label.size());
  o << "model: " << model << "\n";
  std::snprintf(buf, sizeof buf, "%-*s", int(width), "policy");
  o << buf;
  for (const TaskRow& t : rows[0].tasks) {
    std::snprintf(buf, sizeof buf, "  %22s", (t.task + " (n=" + std::to_string(t.samples) + ")").c_str());
    o << buf;
  }
  o << "   mean norm  cache mean  cache max  cache %   tok/s\n";
  for (const PolicyRow& r : rows) {
    std::snprintf(buf, sizeof buf, "%-*s", int(width), r.label.c_str());
    o << buf;
    int max_cache = 0;
    for (const TaskRow& t : r.tasks) {
      std::snprintf(buf, sizeof buf, "  %11.4f (%6.3f)   ", t.score, t.normalised);
      o << buf;
      max_cache = std::max(max_cache, t.max_cache);
    }
    std::snprintf(buf, sizeof buf, "   %9.3f  %10.1f  %9d  %6.1f%%  %6.0f\n", r.mean_normalised, r.mean_cache,
                  max_cache, 100.0 * r.cache_fraction, r.tokens_per_second);
    o << buf;
  }
  o << "\ncache per layer (mean/max tokens per KV head, first task):\n";
  for (const PolicyRow& r : rows) {
    std::snprintf(buf, sizeof buf, "%-*s", int(width), r.label.c_str());
    o << buf;
    const TaskRow& t = r.tasks[0];
    for (size_t l = 0; l < t.mean_cache_per_layer.size(); ++l) {
      std::snprintf(buf, sizeof buf, "  L%zu %6.1f/%-4d", l, t.mean_cache_per_layer[l], t.max_cache_per_layer[l]);
      o << buf;
    }
    o << "\n";
  }
  return o.str();
}

}  // namespace nammkit::cli
