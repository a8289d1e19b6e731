// libFuzzer target: the llama2.c loader (transformer/llama2c.h). The first input byte chooses:
//   even: the rest is a model .bin (7 int32 header + weights), with no tokenizer beside it;
//   odd:  the rest is a tokenizer.bin (max token length, then score, length, bytes per token) read
//         for a vocabulary of 1 + (second byte) entries.
#include "tests/fuzz/fuzz_common.h"
#include "transformer/llama2c.h"
#include "transformer/tokenizer.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::Split input = fuzz::split_selector(data, size);
  const uint8_t selector = input.selector;
  const std::string_view rest = input.rest;  // not a structured binding: clang 14 cannot capture those
  if (selector % 2 == 0) {
    fuzz::remove_scratch("tokenizer.bin");
    const std::string path = fuzz::write_scratch("model.bin", rest);
    fuzz::expect_ok_or_error([&] { (void)load_llama2c(path); });
  } else {
    if (rest.empty()) return 0;
    const int vocab = 1 + static_cast<uint8_t>(rest[0]);
    fuzz::write_scratch("tokenizer.bin", rest.substr(1));
    fuzz::expect_ok_or_error([&] {
      Tokenizer tok(load_llama2c_tokenizer(fuzz::scratch_dir() + "/model.bin", vocab));
      (void)tok.decode(tok.encode("Once upon a time", true));
    });
  }
  return 0;
}
