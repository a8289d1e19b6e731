// libFuzzer target: the GGUF loader (transformer/gguf.h) on a file of the fuzzed bytes: the header,
// metadata and tensor-info parser, the tokenizer builder, and the model loader's checks.
#include "tests/fuzz/fuzz_common.h"
#include "transformer/gguf.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("model.gguf", fuzz::as_view(data, size));
  fuzz::expect_ok_or_error([&] {
    GgufFile file(path);
    for (const GgufTensorInfo& t : file.tensors()) (void)t.elements();
  });
  fuzz::expect_ok_or_error([&] {
    Tokenizer tok = load_gguf_tokenizer(path);
    (void)tok.decode(tok.encode("Hello, world 123", true));
  });
  fuzz::expect_ok_or_error([&] { (void)load_gguf(path); });
  return 0;
}
