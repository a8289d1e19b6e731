// libFuzzer target: policy files (namm/policy_file.h). The first input byte chooses the format of the
// rest: even = the binary .nammp envelope (parse_policy), odd = JSON (policy_from_json). A file
// either parser accepts must build its policy and survive both round trips.
#include <cstdlib>

#include "namm/policy_file.h"
#include "tests/fuzz/fuzz_common.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::Split input = fuzz::split_selector(data, size);
  const uint8_t selector = input.selector;
  const std::string_view rest = input.rest;  // not a structured binding: clang 14 cannot capture those
  PolicyFile file;
  try {
    file = selector % 2 == 0 ? parse_policy(rest, "fuzz.nammp") : policy_from_json(rest, "fuzz.json");
  } catch (const Error&) {
    return 0;
  }
  // Accepted: everything downstream must work (an Error here is a bug, so it aborts).
  (void)make_policy(file);
  (void)describe_policy(file);
  (void)parse_policy(serialize_policy(file), "round trip");
  (void)policy_from_json(policy_to_json(file), "round trip");
  return 0;
}
