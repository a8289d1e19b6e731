// A small "--flag value" / "--switch" argument parser for the sub-commands.
// Unknown flags are errors that name the flag, so a typo never silently changes a run.
#pragma once
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace nammkit::cli {

class Args {
 public:
  // `valued`: flags that take a value; `switches`: flags without one. Positional arguments are kept in order.
  Args(const std::string& command, const std::vector<std::string>& args, const std::set<std::string>& valued,
       const std::set<std::string>& switches = {});

  bool has(const std::string& flag) const { return values_.count(flag) || switches_on_.count(flag); }
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  std::string require(const std::string& flag) const;  // throws Error naming the missing flag
  // An integer value; Error naming the flag when it is not one or lies outside [lo, hi].
  int get_int(const std::string& flag, int fallback, int lo = std::numeric_limits<int>::min(),
              int hi = std::numeric_limits<int>::max()) const;
  double get_double(const std::string& flag, double fallback) const;
  // All values of a flag given several times, in order (e.g. --policy A --policy B).
  std::vector<std::string> get_all(const std::string& flag) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_;
  std::multimap<std::string, std::string> values_;
  std::set<std::string> switches_on_;
  std::vector<std::string> positional_;
};

}  // namespace nammkit::cli
