// libFuzzer target: experiment configs (tools/nammkit/experiment_config.h), read from a file as
// `nammkit evolve` / `nammkit eval` read them.
#include "tests/fuzz/fuzz_common.h"
#include "tools/nammkit/experiment_config.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("config.json", fuzz::as_view(data, size));
  fuzz::expect_ok_or_error([&] { (void)cli::load_experiment_config(path); });
  return 0;
}
