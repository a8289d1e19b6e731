// bench_population: the time of one CMA-ES generation's evaluation, lockstep-batched against member by
// member (transformer/lockstep.h vs TBB over (member, prompt) pairs), on the CPU.
//
// A generation is `members` x `prompts` sequences: each feeds a prompt of `tokens` random token ids and
// greedily decodes `new_tokens` more under its own NAMM (random BAM parameters per member, bias
// `bias`; update_interval 512 unless --interval), as evolve's population evaluation does. Both paths
// run the same sequences; "identical" says whether every sequence generated the same tokens and kept
// the same cache (the lockstep path is bit-identical by construction; this re-checks it at scale).
// Timed: best of --repeats runs per path, paths interleaved. One JSON line per model.
//
//   bench_population [--model testbed|stories260K|smollm2|synthetic-8b|PATH] [--members 16] [--prompts 4]
//                    [--tokens 2048] [--new-tokens 8] [--layers 1] [--sequences 64] [--repeats 1]
//
// synthetic-8b: Llama-3-8B's layer shape (dim 4096, 32 query / 8 KV heads of 128, hidden 14336) with
// random Q4_0 weights, --layers layers and a 256-token vocabulary: a cost model, not a language model.
#include <Eigen/Dense>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/error.h"
#include "evolution/population_eval.h"
#include "namm/namm_policy.h"
#include "transformer/backend.h"
#include "transformer/loader.h"
#include "transformer/lockstep.h"

namespace nammkit {
namespace {

struct Options {
  std::string model = "testbed";
  int members = 16, prompts = 4, tokens = 2048, new_tokens = 8, layers = 1, sequences = 64, repeats = 1;
  int interval = 512;
  double bias = 0.0;
};

struct PathResult {
  double seconds = 1e300;
  std::vector<std::vector<int32_t>> generated;  // per item
  std::vector<double> cache;                    // per item: mean cached tokens per (layer, KV head)
};

PathResult run_generation(const Backend& backend, const Options& o, const Eigen::MatrixXd& params,
                          const std::vector<std::vector<int32_t>>& prompts, int dedicated_threads) {
  const NammConfig config = NammConfig::reference();
  const FeatureNormalizer normalizer = FeatureNormalizer::identity(config.spectrogram.n_bins());
  PathResult r;
  r.generated.resize(size_t(o.members) * size_t(o.prompts));
  r.cache.resize(r.generated.size());
  evo::EvalRequest request;
  request.params = &params;
  for (int p = 0; p < o.prompts; ++p) request.prompts.push_back(p);
  const evo::PromptFn fn = [&](std::span<const double> x, const evo::PromptContext& ctx) {
    NammPolicy policy(config, std::vector<float>(x.begin(), x.end()), normalizer);
    SessionOptions session;
    session.update_interval = o.interval;
    const auto s = backend.new_session(&policy, session);
    GenerateOptions g;
    g.max_new_tokens = o.new_tokens;
    g.stop_at_eos = false;
    const size_t item = size_t(ctx.member) * size_t(o.prompts) + size_t(ctx.prompt);
    r.generated[item] = generate_greedy(*s, prompts[size_t(ctx.prompt)], g).tokens;
    r.cache[item] = double(s->total_tokens()) / (s->config().n_layers * s->config().n_kv_heads);
    return evo::PromptScore{0.0, r.cache[item]};
  };
  std::vector<size_t> items(request.items());
  for (size_t i = 0; i < items.size(); ++i) items[i] = i;
  const double t0 = bench::now_seconds();
  const std::vector<evo::ItemOutcome> outcomes = evo::run_items(fn, request, items, false, nullptr, dedicated_threads);
  r.seconds = bench::now_seconds() - t0;
  for (const evo::ItemOutcome& out : outcomes)
    if (!out.error.empty()) fail("bench_population", out.error);
  return r;
}

Model load(const Options& o) {
  if (o.model == "synthetic-8b") return bench::synthetic_model(4096, 14336, o.layers, 32, 8, 256, DType::Q4_0);
  if (o.model == "testbed") return load_model(std::string(NAMMKIT_SOURCE_DIR) + "/models/testbed/testbed.gguf");
  if (o.model == "stories260K")
    return load_model(std::string(NAMMKIT_SHARED_DIR) + "/models/stories260K/stories260K.bin");
  if (o.model == "smollm2")
    return load_model(std::string(NAMMKIT_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  return load_model(o.model);
}

int main_checked(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("bench_population", a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") o.model = value();
    else if (a == "--members") o.members = std::stoi(value());
    else if (a == "--prompts") o.prompts = std::stoi(value());
    else if (a == "--tokens") o.tokens = std::stoi(value());
    else if (a == "--new-tokens") o.new_tokens = std::stoi(value());
    else if (a == "--layers") o.layers = std::stoi(value());
    else if (a == "--sequences") o.sequences = std::stoi(value());
    else if (a == "--repeats") o.repeats = std::stoi(value());
    else if (a == "--interval") o.interval = std::stoi(value());
    else if (a == "--bias") o.bias = std::stod(value());
    else fail("bench_population", "unknown option " + a + " (see the header of bench/bench_population.cpp)");
  }
  const Model model = load(o);
  const ModelConfig& c = model.config;
  const int n = NammConfig::reference().scorer.n_params();
  Eigen::MatrixXd params(n, o.members);
  std::mt19937 rng(1);
  std::normal_distribution<double> normal(0.0, 0.5);
  for (int m = 0; m < o.members; ++m)
    for (int i = 0; i < n; ++i) params(i, m) = normal(rng);
  params.row(n - 1).setConstant(o.bias);
  std::vector<std::vector<int32_t>> prompts(size_t(o.prompts));
  std::uniform_int_distribution<int32_t> token(0, c.vocab_size - 1);
  for (auto& p : prompts)
    for (int t = 0; t < o.tokens; ++t) p.push_back(token(rng));

  const auto cpu = make_cpu_backend(model);
  PathResult apart, together;
  LockstepGroup::Stats stats;
  bool repeatable = true;  // every repeat of each path gave what its first run gave
  for (int r = 0; r < o.repeats; ++r) {
    PathResult a = run_generation(*cpu, o, params, prompts, 0);
    const LockstepCpuBackend lockstep(model);
    PathResult b = run_generation(lockstep, o, params, prompts, o.sequences);
    if (r > 0)
      repeatable = repeatable && a.generated == apart.generated && a.cache == apart.cache &&
                   b.generated == together.generated && b.cache == together.cache;
    if (r == 0 || a.seconds < apart.seconds) apart = std::move(a);
    if (r == 0 || b.seconds < together.seconds) {
      together = std::move(b);
      stats = lockstep.group().stats();
    }
  }
  double mean_cache = 0;
  for (double x : apart.cache) mean_cache += x / double(apart.cache.size());
  const double sequence_tokens = double(o.members) * o.prompts * (o.tokens + o.new_tokens);
  bench::emit({{"bench", "population_generation"},
               {"model", c.name},
               {"weight_mib_per_token", double(model.weight_bytes_per_token()) / (1 << 20)},
               {"layers", c.n_layers},
               {"members", o.members},
               {"prompts", o.prompts},
               {"prompt_tokens", o.tokens},
               {"new_tokens", o.new_tokens},
               {"update_interval", o.interval},
               {"member_parallel_s", apart.seconds},
               {"lockstep_s", together.seconds},
               {"speedup", apart.seconds / together.seconds},
               {"member_parallel_tok_s", sequence_tokens / apart.seconds},
               {"lockstep_tok_s", sequence_tokens / together.seconds},
               {"lockstep_sequences", o.sequences},
               {"lockstep_steps", stats.steps},
               {"lockstep_mean_batch", stats.steps ? double(stats.chunks) / double(stats.steps) : 0.0},
               {"mean_cache_tokens", mean_cache},
               {"identical", apart.generated == together.generated && apart.cache == together.cache},
               {"repeats", o.repeats},
               {"repeatable", repeatable},
               {"threads", int(std::thread::hardware_concurrency())}});
  return 0;
}

}  // namespace
}  // namespace nammkit

int main(int argc, char** argv) {
  try {
    return nammkit::main_checked(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
