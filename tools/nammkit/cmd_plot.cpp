// nammkit plot RUN_DIR: RUN_DIR/log.jsonl -> RUN_DIR/fitness.svg: for CMA-ES the fitness curves and the
// mean cache size per generation; for the RL trainers (a log of "iteration"s) the rollouts' mean and max
// reward and the held-out evaluations against the training model runs.
// nammkit plot --evals A.json [B.json...] --out F.svg: eval reports -> score against cache fraction.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "evolution/fitness_plot.h"
#include "evolution/metrics_log.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/svg_chart.h"
#include "tools/nammkit/tradeoff_plot.h"

namespace {

// The RL log (rl/rl_trainer.h's RlRecord lines) as a line chart against model runs.
std::string render_rl_svg(const std::string& log_path, const std::string& title, size_t* lines) {
  using nammkit::cli::ChartSeries;
  ChartSeries mean{"rollouts: mean reward", nammkit::cli::series_color(0), {}};
  ChartSeries max{"rollouts: max reward", nammkit::cli::series_color(0), {}, 1.0, true};
  ChartSeries eval{"greedy policy: held-out score", nammkit::cli::series_color(1), {}, 2.0};
  std::istringstream in(nammkit::read_file(log_path));
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("model_runs") || !j["model_runs"].is_number())
      nammkit::fail(log_path, "line " + std::to_string(number) + ": not an RL log record (model_runs missing)");
    const double x = j["model_runs"].get<double>();
    auto add = [&](ChartSeries& s, const char* key) {
      if (j.contains(key) && j[key].is_number()) s.points.emplace_back(x, j[key].get<double>());
    };
    add(mean, "mean_reward");
    add(max, "max_reward");
    add(eval, "eval");
    ++*lines;
  }
  nammkit::cli::LineChart chart;
  chart.title = title;
  chart.x_label = "training model runs";
  chart.y_label = "reward (normalised score + cache term) / held-out score";
  chart.series = {mean, max};
  if (!eval.points.empty()) chart.series.push_back(eval);
  return nammkit::cli::render_line_chart(chart);
}

bool is_rl_log(const std::string& path) {
  std::istringstream in(nammkit::read_file(path));
  std::string first;
  std::getline(in, first);
  const nlohmann::json j = nlohmann::json::parse(first, nullptr, false);
  return !j.is_discarded() && j.is_object() && j.contains("iteration");
}

int cmd_plot(const std::vector<std::string>& argv) {
  nammkit::cli::Args args("plot", argv, {"--out", "--title"}, {"--help", "--evals"});
  const bool evals = args.has("--evals");
  if (args.has("--help") || (evals ? args.positional().empty() || !args.has("--out") : args.positional().size() != 1)) {
    std::fprintf(stderr,
                 "usage: nammkit plot RUN_DIR [--out FILE]\n"
                 "       nammkit plot --evals REPORT.json [REPORT.json...] --out FILE.svg [--title T]\n"
                 "  Reads RUN_DIR/log.jsonl and writes an SVG to RUN_DIR/fitness.svg (or FILE): for CMA-ES the\n"
                 "  best/mean fitness and the mean cache size per generation; for REINFORCE / PPO the rollouts'\n"
                 "  mean and max reward and the held-out score against the training model runs.\n"
                 "  --evals: `nammkit eval --json` reports -> the score (fraction of full) against the mean cache\n"
                 "  (fraction of full): one line per policy through its budgets, a dot for a single point.\n");
    return args.has("--help") ? 0 : 2;
  }
  if (evals) {
    const std::string out = args.get("--out", "");
    nammkit::write_file_atomic(
        out, nammkit::cli::render_tradeoff_svg(args.positional(), args.get("--title", "score against cache size")));
    std::printf("%s: %zu reports\n", out.c_str(), args.positional().size());
    return 0;
  }
  const std::string run_dir = args.positional()[0];
  if (!nammkit::is_directory(run_dir)) nammkit::fail(run_dir, "not a directory");
  const std::string out = args.get("--out", run_dir + "/fitness.svg");
  const std::string log = run_dir + "/log.jsonl";
  if (is_rl_log(log)) {
    size_t lines = 0;
    nammkit::write_file_atomic(out, render_rl_svg(log, run_dir, &lines));
    std::printf("%s: %zu iterations\n", out.c_str(), lines);
    return 0;
  }
  const auto records = nammkit::evo::read_log(log);
  nammkit::write_file_atomic(out, nammkit::evo::render_fitness_svg(records, run_dir));
  std::printf("%s: %zu generations\n", out.c_str(), records.size());
  return 0;
}

}  // namespace

NAMMKIT_COMMAND("plot", "plot a run's fitness and cache size (RUN_DIR/log.jsonl -> fitness.svg)", cmd_plot);
