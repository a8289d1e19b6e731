// The nammkit sub-command registry. Each sub-command lives in its own cmd_<name>.cpp and registers
// itself with NAMMKIT_COMMAND(name, summary, function); main.cpp dispatches on argv[1].
//
// A command function gets the arguments after its name and returns the exit code. It may throw
// nammkit::Error: main prints its one-line message to stderr and exits 1.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nammkit::cli {

using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string summary;
  CommandFn run;
};

std::map<std::string, Command>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(const std::string& name, const std::string& summary, CommandFn fn) {
    command_registry()[name] = Command{summary, std::move(fn)};
  }
};

}  // namespace nammkit::cli

#define NAMMKIT_COMMAND(name, summary, fn) \
  static ::nammkit::cli::CommandRegistrar nammkit_command_registrar_##fn(name, summary, fn)
