// nammkit: evolve, evaluate and export neural memory managers for transformers.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/error.h"
#include "tools/nammkit/commands.h"

namespace nammkit::cli {
std::map<std::string, Command>& command_registry() {
  static std::map<std::string, Command> registry;
  return registry;
}
}  // namespace nammkit::cli

static void print_usage() {
  std::fprintf(stderr, "usage: nammkit <command> [options]\n\ncommands:\n");
  for (const auto& [name, command] : nammkit::cli::command_registry())
    std::fprintf(stderr, "  %-10s %s\n", name.c_str(), command.summary.c_str());
  std::fprintf(stderr, "\nRun 'nammkit <command> --help' for its options.\n");
}

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const auto& registry = nammkit::cli::command_registry();
  auto it = registry.find(argv[1]);
  if (it == registry.end()) {
    std::fprintf(stderr, "nammkit: unknown command '%s'\n", argv[1]);
    print_usage();
    return 2;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    return it->second.run(args);
  } catch (const nammkit::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
