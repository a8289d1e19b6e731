#include "tools/nammkit/args.h"

#include <cmath>
#include <cstdlib>

namespace nammkit::cli {

Args::Args(const std::string& command, const std::vector<std::string>& args, const std::set<std::string>& valued,
           const std::set<std::string>& switches)
    : command_(command) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) == 0) {
      std::string flag = a, value;
      bool inline_value = false;
      if (auto eq = a.find('='); eq != std::string::npos) {
        flag = a.substr(0, eq);
        value = a.substr(eq + 1);
        inline_value = true;
      }
      if (valued.count(flag)) {
        if (!inline_value) {
          if (i + 1 >= args.size()) fail("nammkit " + command_, flag + " needs a value");
          value = args[++i];
        }
        values_.emplace(flag, value);
      } else if (switches.count(flag) && !inline_value) {
        switches_on_.insert(flag);
      } else {
        fail("nammkit " + command_, "unknown option " + flag);
      }
    } else {
      positional_.push_back(a);
    }
  }
}

std::string Args::get(const std::string& flag, const std::string& fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second;
}

std::string Args::require(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) fail("nammkit " + command_, "missing required option " + flag);
  return it->second;
}

static double parse_number(const std::string& command, const std::string& flag, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') fail("nammkit " + command, flag + ": not a number: '" + text + "'");
  return v;
}

int Args::get_int(const std::string& flag, int fallback, int lo, int hi) const {
  if (!values_.count(flag)) return fallback;
  const double v = parse_number(command_, flag, get(flag));
  if (v != std::floor(v)) fail("nammkit " + command_, flag + ": not an integer: '" + get(flag) + "'");
  if (!(v >= lo && v <= hi)) {
    fail("nammkit " + command_,
         flag + ": " + get(flag) + " is out of range (" + std::to_string(lo) + " to " + std::to_string(hi) + ")");
  }
  return static_cast<int>(v);
}

double Args::get_double(const std::string& flag, double fallback) const {
  if (!values_.count(flag)) return fallback;
  return parse_number(command_, flag, get(flag));
}

std::vector<std::string> Args::get_all(const std::string& flag) const {
  std::vector<std::string> out;
  auto [lo, hi] = values_.equal_range(flag);
  for (auto it = lo; it != hi; ++it) out.push_back(it->second);
  return out;
}

}  // namespace nammkit::cli
