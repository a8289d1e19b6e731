// libFuzzer target: the Hugging Face directory loader (transformer/safetensors.h). The first input
// byte chooses what the rest is:
//   0: a .safetensors file (u64 header length, JSON header, data), opened alone;
//   1: config.json, parsed by read_hf_config;
//   2: a .safetensors file in a directory with the tiny_llama_hf fixture's config.json and
//      tokenizer.json, loaded as a model (so the tensor names, shapes and dtypes are checked).
#include "tests/fuzz/fuzz_common.h"
#include "transformer/safetensors.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string config = fuzz::read_source_file("tests/fixtures/tiny_llama_hf/config.json");
  static const std::string tokenizer = fuzz::read_source_file("tests/fixtures/tiny_llama_hf/tokenizer.json");
  const fuzz::Split input = fuzz::split_selector(data, size);
  const uint8_t selector = input.selector;
  const std::string_view rest = input.rest;  // not a structured binding: clang 14 cannot capture those
  const std::string dir = fuzz::scratch_dir();
  switch (selector % 3) {
    case 0: {
      fuzz::remove_scratch("config.json");
      const std::string path = fuzz::write_scratch("model.safetensors", rest);
      fuzz::expect_ok_or_error([&] {
        SafetensorsFile file(path);
        for (const SafetensorsTensor& t : file.tensors()) (void)file.find(t.name);
      });
      break;
    }
    case 1:
      fuzz::write_scratch("config.json", rest);
      fuzz::expect_ok_or_error([&] { (void)read_hf_config(dir); });
      break;
    default:
      fuzz::write_scratch("config.json", config);
      fuzz::write_scratch("tokenizer.json", tokenizer);
      fuzz::write_scratch("model.safetensors", rest);
      fuzz::expect_ok_or_error([&] { (void)load_safetensors(dir); });
      break;
  }
  return 0;
}
