// libFuzzer target: the tokenizer.json parser (load_hf_tokenizer, transformer/safetensors.h) with the
// tiny_llama_hf fixture's config.json beside it; a tokenizer it accepts must encode and decode.
#include "tests/fuzz/fuzz_common.h"
#include "transformer/safetensors.h"
#include "transformer/tokenizer.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string config = fuzz::read_source_file("tests/fixtures/tiny_llama_hf/config.json");
  static const bool once = (fuzz::write_scratch("config.json", config), true);
  (void)once;
  fuzz::write_scratch("tokenizer.json", fuzz::as_view(data, size));
  fuzz::expect_ok_or_error([&] {
    Tokenizer tok(load_hf_tokenizer(fuzz::scratch_dir()));
    const std::vector<int32_t> ids = tok.encode("Hello, world! 123 \xc3\xa9t\xc3\xa9", true);
    (void)tok.decode(ids);
    for (int32_t id : ids) (void)tok.decode_token(-1, id);
  });
  return 0;
}
