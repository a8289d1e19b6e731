// nammkit plot RUN_DIR: RUN_DIR/log.jsonl -> RUN_DIR/fitness.svg (fitness curves and mean cache size).
#include <cstdio>

#include "core/error.h"
#include "core/file_io.h"
#include "evolution/fitness_plot.h"
#include "evolution/metrics_log.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"

namespace {

int cmd_plot(const std::vector<std::string>& argv) {
  nammkit::cli::Args args("plot", argv, {"--out"}, {"--help"});
  if (args.has("--help") || args.positional().size() != 1) {
    std::fprintf(stderr,
                 "usage: nammkit plot RUN_DIR [--out FILE]\n"
                 "  Reads RUN_DIR/log.jsonl and writes an SVG of the best/mean fitness and the mean cache size\n"
                 "  per generation to RUN_DIR/fitness.svg (or FILE).\n");
    return args.has("--help") ? 0 : 2;
  }
  const std::string run_dir = args.positional()[0];
  if (!nammkit::is_directory(run_dir)) nammkit::fail(run_dir, "not a directory");
  const std::string out = args.get("--out", run_dir + "/fitness.svg");
  const auto records = nammkit::evo::read_log(run_dir + "/log.jsonl");
  nammkit::write_file_atomic(out, nammkit::evo::render_fitness_svg(records, run_dir));
  std::printf("%s: %zu generations\n", out.c_str(), records.size());
  return 0;
}

}  // namespace

NAMMKIT_COMMAND("plot", "plot a run's fitness and cache size (RUN_DIR/log.jsonl -> fitness.svg)", cmd_plot);
