// One model, one thread count: prefill speed on a P-token prompt and decode speed after a C-token
// context, and the process's peak RSS, as one JSON line. bench/bench_llamacpp.py runs it beside
// llama.cpp (llama-cpp-python) on the same GGUF and the same token ids.
//
//   bench_generate --model M.gguf [--threads 1] [--prompt-tokens 512] [--context 512] [--decode 64]
//                  [--ids FILE]   (FILE: whitespace-separated token ids; default: a fixed pseudo-random
//                                  sequence)
#include <tbb/global_control.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/error.h"
#include "core/text.h"
#include "transformer/backend.h"
#include "transformer/loader.h"

using namespace nammkit;
using namespace nammkit::bench;

namespace {

std::vector<int32_t> token_ids(const std::string& ids_file, size_t n, int vocab) {
  std::vector<int32_t> ids;
  if (!ids_file.empty()) {
    std::ifstream in(ids_file);
    if (!in) fail(ids_file, "cannot open");
    ids.assign(std::istream_iterator<int32_t>(in), std::istream_iterator<int32_t>());
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab) fail(ids_file, "token id " + std::to_string(id) + " outside the vocabulary");
    }
  } else {
    for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(3 + (i * 7919) % (vocab - 3)));
  }
  if (ids.size() < n) fail(ids_file, std::to_string(ids.size()) + " ids, need " + std::to_string(n));
  ids.resize(n);
  return ids;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model_path, ids_file;
  int threads = 1, prompt_tokens = 512, context = 512, decode = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model_path = v;
    else if (k == "--ids") ids_file = v;
    else if (k == "--threads") threads = static_cast<int>(parse_int(v, "bench_generate", "--threads", 1, 1 << 20));
    else if (k == "--prompt-tokens")
      prompt_tokens = static_cast<int>(parse_int(v, "bench_generate", "--prompt-tokens", 1, 1 << 20));
    else if (k == "--context") context = static_cast<int>(parse_int(v, "bench_generate", "--context", 1, 1 << 20));
    else if (k == "--decode") decode = static_cast<int>(parse_int(v, "bench_generate", "--decode", 1, 1 << 20));
    else fail("bench_generate", "unknown option " + k);
  }
  if (model_path.empty()) fail("bench_generate", "--model is required");
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(threads));
  const Model model = load_model(model_path);
  const std::unique_ptr<Backend> backend = make_cpu_backend(model);
  const std::vector<int32_t> ids =
      token_ids(ids_file, static_cast<size_t>(std::max(prompt_tokens, context)), model.config.vocab_size);
  const SessionOptions options;  // nammkit's defaults (prefill chunks of 128 tokens)

  // Prefill: a fresh session fed the first P ids (one warm-up run first: page-in of the weights).
  double prefill_s = 0;
  for (int rep = 0; rep < 2; ++rep) {
    const std::unique_ptr<InferenceSession> s = backend->new_session(nullptr, options);
    const double t0 = now_seconds();
    s->feed(std::span<const int32_t>(ids).first(static_cast<size_t>(prompt_tokens)));
    prefill_s = now_seconds() - t0;
  }
  // Decode: C ids of context, then D single-token steps (greedy).
  const std::unique_ptr<InferenceSession> s = backend->new_session(nullptr, options);
  const std::vector<float>* logits = &s->feed(std::span<const int32_t>(ids).first(static_cast<size_t>(context)));
  const double t0 = now_seconds();
  for (int i = 0; i < decode; ++i) {
    const int32_t next[1] = {argmax(*logits)};
    logits = &s->feed(next);
  }
  const double decode_s = now_seconds() - t0;
  emit({{"engine", "nammkit"},
        {"model", file_stem(model_path)},
        {"threads", threads},
        {"prefill_tokens", prompt_tokens},
        {"prefill_tok_s", prompt_tokens / prefill_s},
        {"context", context},
        {"decode_tokens", decode},
        {"decode_tok_s", decode / decode_s},
        {"peak_rss_mib", peak_rss_mib()}});
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
