// Runtime throughput: prefill and decode tokens/s at several context lengths and thread counts,
// peak RSS, and decode speed against the memory-bandwidth bound (weight bytes per token / copy
// bandwidth). One JSON object per line.
//
//   bench_runtime [--quick]        (--quick: contexts 512 and 2048 only, fewer decode steps)
#include <tbb/global_control.h>

#include <cstring>

#include "bench/bench_util.h"
#include "core/file_io.h"
#include "transformer/loader.h"
#include "transformer/session.h"

using namespace nammkit;
using namespace nammkit::bench;

static void run_model(const Model& model, const std::vector<int>& contexts, int decode_steps, double bandwidth) {
  for (int threads : {1, 2}) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    for (int ctx : contexts) {
      std::vector<int32_t> tokens(ctx);
      for (int i = 0; i < ctx; ++i) tokens[i] = 3 + (i * 7919) % (model.config.vocab_size - 3);
      Session s(model);
      const double t0 = now_seconds();
      const std::vector<float>* logits = &s.feed(tokens);
      const double t1 = now_seconds();
      for (int i = 0; i < decode_steps; ++i) {
        const int32_t next[1] = {argmax(*logits)};
        logits = &s.feed(next);
      }
      const double t2 = now_seconds();
      const double decode_tps = decode_steps / (t2 - t1);
      const double bound_tps = bandwidth / double(model.weight_bytes_per_token());
      emit({{"bench", "runtime"},
            {"model", model.config.name},
            {"format", model.format},
            {"threads", threads},
            {"context", ctx},
            {"prefill_tok_s", ctx / (t1 - t0)},
            {"decode_tok_s", decode_tps},
            {"weight_mib_per_token", model.weight_bytes_per_token() / 1048576.0},
            {"bandwidth_bound_tok_s", bound_tps},
            {"decode_vs_bound", decode_tps / bound_tps},
            {"peak_rss_mib", peak_rss_mib()}});
    }
  }
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::vector<int> contexts = quick ? std::vector<int>{512, 2048} : std::vector<int>{512, 2048, 4096};
  const double bandwidth = copy_bandwidth_bytes_per_s();
  emit({{"bench", "copy_bandwidth"}, {"gb_s", bandwidth / 1e9}});

  const std::string stories = std::string(NAMMKIT_SHARED_DIR) + "/models/stories260K/stories260K.bin";
  if (file_exists(stories)) run_model(load_model(stories), contexts, quick ? 32 : 128, bandwidth);

  // A 150M-parameter Llama shape whose weights (F16 / Q8_0) far exceed the caches: the
  // memory-bandwidth target is judged on these.
  for (DType type : {DType::F16, DType::Q8_0}) {
    const Model m = synthetic_model(1024, 2816, 8, 16, 4, 32000, type);
    run_model(m, {512}, quick ? 8 : 32, bandwidth);
  }
  return 0;
}
