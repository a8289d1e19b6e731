// Prints the C++ runtime's logits for a token sequence, for tools/train_testbed/check_fixture.py.
//   check_logits MODEL.gguf CHUNK id0 id1 ...   ->  one line per position: "pos v0 v1 ... v(V-1)"
//   check_logits MODEL.gguf --encode FILE       ->  the ids of FILE's bytes (BOS first), one line
// Build (against an existing nammkit build tree; see README.md):
//   g++ -std=c++20 -O2 -I. tools/train_testbed/check_logits.cpp BUILD/transformer/libnammkit_transformer.a
//       -fopenmp -lpthread -o /tmp/check_logits
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "transformer/loader.h"
#include "transformer/session.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL CHUNK id...\n", argv[0]);
    return 2;
  }
  const nammkit::Model m = nammkit::load_model(argv[1]);
  if (std::string(argv[2]) == "--encode") {
    std::FILE* f = std::fopen(argv[3], "rb");
    std::string text;
    for (int c; f && (c = std::fgetc(f)) != EOF;) text.push_back(static_cast<char>(c));
    if (f) std::fclose(f);
    for (int32_t id : m.tokenizer.encode(text, true)) std::printf("%d ", id);
    std::printf("\n");
    const std::vector<int32_t> ids = m.tokenizer.encode(text, true);
    return m.tokenizer.decode(ids) == text ? 0 : 3;
  }
  nammkit::SessionOptions opt;
  opt.prefill_chunk = std::atoi(argv[2]);
  std::vector<int32_t> tokens;
  for (int i = 3; i < argc; ++i) tokens.push_back(std::atoi(argv[i]));
  nammkit::Session s(m, nullptr, opt);
  std::vector<float> all;
  s.feed(tokens, &all);
  const size_t V = m.config.vocab_size;
  for (size_t p = 0; p < tokens.size(); ++p) {
    std::printf("%zu", p);
    for (size_t v = 0; v < V; ++v) std::printf(" %.9g", all[p * V + v]);
    std::printf("\n");
  }
  return 0;
}
