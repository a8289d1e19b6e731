// libFuzzer target: Memory3 bank files (namm/memory_bank.h), read with MemoryBank::from_bytes; every
// chunk of a bank that opens is verified (which reads its whole tensor block).
#include "namm/memory_bank.h"
#include "tests/fuzz/fuzz_common.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::expect_ok_or_error([&] {
    MemoryBank bank = MemoryBank::from_bytes(std::string(fuzz::as_view(data, size)), "fuzz.bank");
    for (int c = 0; c < bank.n_chunks(); ++c) {
      fuzz::expect_ok_or_error([&] { bank.verify_chunk(c); });
    }
  });
  return 0;
}
