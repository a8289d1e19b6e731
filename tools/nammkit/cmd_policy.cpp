// `nammkit policy`: inspect, convert and create policy files (namm/policy_file.h).
//
//   nammkit policy show FILE                  human-readable summary
//   nammkit policy to-json FILE               JSON on stdout
//   nammkit policy from-json JSON OUT         JSON -> binary policy file (validated)
//   nammkit policy init OUT [--kind namm_bam|namm_mlp] [--baseline SPEC] [--interval N]
//                                             an all-zero NAMM policy (keeps everything), or a
//                                             baseline from a spec such as "h2o:0.25"
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "namm/policy_file.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"

namespace nammkit::cli {
namespace {

constexpr const char* kUsage =
    "usage: nammkit policy show FILE\n"
    "       nammkit policy to-json FILE\n"
    "       nammkit policy from-json JSON OUT\n"
    "       nammkit policy init OUT [--kind namm_bam|namm_mlp] [--baseline SPEC] [--interval N]\n"
    "SPEC: full | streaming:BUDGET[,sinks=N] | h2o:BUDGET[,heavy=R] | l2:BUDGET | random:BUDGET[,seed=N]\n"
    "      BUDGET is tokens (512) or a fraction of the tokens seen (0.25)\n";

void expect_positional(const Args& args, size_t n, const std::string& what) {
  if (args.positional().size() != n)
    fail("nammkit policy " + what, "expected " + std::to_string(n) + " argument(s)\n" + kUsage);
}

int cmd_policy(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::fputs(kUsage, argv.empty() ? stderr : stdout);
    return argv.empty() ? 2 : 0;
  }
  const std::string sub = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (sub == "show") {
    Args args("policy show", rest, {});
    expect_positional(args, 1, sub);
    const std::string path = args.positional()[0];
    std::printf("file:            %s\n%s", path.c_str(), describe_policy(load_policy(path)).c_str());
    return 0;
  }
  if (sub == "to-json") {
    Args args("policy to-json", rest, {});
    expect_positional(args, 1, sub);
    std::printf("%s\n", policy_to_json(load_policy(args.positional()[0])).c_str());
    return 0;
  }
  if (sub == "from-json") {
    Args args("policy from-json", rest, {});
    expect_positional(args, 2, sub);
    const std::string in = args.positional()[0], out = args.positional()[1];
    save_policy(policy_from_json(read_file(in), in), out);
    std::fprintf(stderr, "wrote %s\n", out.c_str());
    return 0;
  }
  if (sub == "init") {
    Args args("policy init", rest, {"--kind", "--baseline", "--interval"});
    expect_positional(args, 1, sub);
    PolicyFile file;
    if (args.has("--baseline")) {
      if (args.has("--kind")) fail("nammkit policy init", "--kind and --baseline exclude each other");
      file = make_baseline_policy_file(args.get("--baseline"));
    } else {
      const std::string kind = args.get("--kind", "namm_bam");
      if (kind != "namm_bam" && kind != "namm_mlp")
        fail("nammkit policy init", "--kind: expected namm_bam or namm_mlp, got '" + kind + "'");
      file = make_namm_policy_file(kind == "namm_bam" ? ScorerKind::Bam : ScorerKind::Mlp);
    }
    file.set_update_interval(run_update_interval(args.get_int("--interval", 0), &file, nullptr));
    const std::string out = args.positional()[0];
    save_policy(file, out);
    std::fprintf(stderr, "wrote %s (%s)\n", out.c_str(), policy_kind_name(file.kind()));
    return 0;
  }
  fail("nammkit policy", "unknown sub-command '" + sub + "'\n" + kUsage);
}

}  // namespace
NAMMKIT_COMMAND("policy", "show, convert (JSON) and create memory-policy files", cmd_policy);
}  // namespace nammkit::cli
