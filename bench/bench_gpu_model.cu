// bench_gpu_model: tokens/s of the GPU runtime (kernels/cuda_session.h) on a synthetic model shaped like
// Llama-3-8B (dim 4096, SwiGLU 14336, 32 query heads, 8 KV heads, head_dim 128, vocab 128256, f16
// weights and KV) with pseudo-random weights generated on the device. By default 8 of the 32 layers
// (--layers 32 for the whole model): prefill and decode times scale about linearly with the layer count,
// except the output layer.
//
// For each context (default 4K, 16K, 32K) and each policy (full cache; a NAMM from
// make_namm_policy_file with random BAM parameters, update every 512 tokens, so it really evicts) one
// JSON line: prefill tokens/s over the context (chunks of 512), decode tokens/s over --decode tokens
// after it, mean cached tokens per head at the end, policy updates and the seconds spent in them
// (host NAMM scoring + copies + compaction).
//
// With --model PATH it instead runs one real checkpoint (GGUF, safetensors or llama2.c) through the CPU
// Session (--threads N, default all cores) and the CudaSession on the same random prompt: one JSON line
// per (backend, context) with prefill and decode tokens/s, then one with the GPU/CPU ratios. Contexts
// are capped at the model's own.
//
// Usage: bench_gpu_model [--layers N] [--contexts 4096,16384,32768] [--decode 64]
//        bench_gpu_model --model PATH [--contexts 512,2048] [--decode 64] [--threads N]
// Without a CUDA device it prints {"bench":"gpu_model","skipped":"no CUDA device"} and exits 0.
#include <tbb/global_control.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "bench/llama3_shape.h"
#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/cuda_util.h"
#include "namm/policy_file.h"
#include "transformer/loader.h"
#include "transformer/session.h"

using namespace nammkit;
using namespace nammkit::kernels;
using nammkit::bench::llama3_8b_shape;

namespace {

void emit(nlohmann::json line) {
  line["bench"] = "gpu_model";
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

std::unique_ptr<MemoryPolicy> random_namm() {
  PolicyFile f = make_namm_policy_file(ScorerKind::Bam);
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 0.5f);
  for (int i = 0; i < f.params_size(); ++i) f.set_params(i, n(rng));
  return make_policy(f);
}

struct Throughput {
  double prefill_tokens_per_s, decode_tokens_per_s;
};

// Prefill `context` tokens in one feed, then `decode` greedy steps (the one generation loop).
Throughput time_session(InferenceSession& session, std::span<const int32_t> tokens, int context, int decode) {
  GenerateOptions g;
  g.max_new_tokens = decode + 1;  // the first token comes from the prefill's logits
  g.stop_at_eos = false;
  const Generation r = generate_greedy(session, tokens.first(size_t(context)), g);
  return {context / r.prefill_seconds, decode > 0 ? decode / r.decode_seconds : 0.0};
}

void run(const CudaModel& model, int context, int decode, const std::string& policy_name) {
  std::unique_ptr<MemoryPolicy> policy = policy_name == "namm" ? random_namm() : nullptr;
  CudaSessionOptions o;
  o.session.prefill_chunk = 512;
  o.session.update_interval = 512;
  o.kv_dtype = DType::F16;
  o.reserve_tokens = policy ? 1024 : context + decode;
  CudaSession session(model, policy.get(), o);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> u(0, model.config().vocab_size - 1);
  std::vector<int32_t> tokens(size_t(context) + decode);
  for (int32_t& t : tokens) t = u(rng);

  const Throughput t = time_session(session, tokens, context, decode);
  const ModelConfig& c = model.config();
  const double heads = double(c.n_layers) * c.n_kv_heads;
  emit({{"policy", policy_name},
        {"layers", c.n_layers},
        {"context", context},
        {"prefill_tokens_per_s", t.prefill_tokens_per_s},
        {"decode_tokens", decode},
        {"decode_tokens_per_s", t.decode_tokens_per_s},
        {"mean_cache_tokens_per_head", double(session.total_tokens()) / heads},
        {"policy_updates", session.stats().policy_updates},
        {"policy_seconds", session.stats().policy_seconds},
        {"tokens_evicted", session.stats().tokens_evicted}});
}

void run_real_model(const std::string& path, const std::vector<int>& contexts, int decode, int threads) {
  const Model model = load_model(path);
  const CudaModel gpu_model(model);
  const int max_context = model.config.max_seq_len - decode;
  for (int asked : contexts) {
    const int context = std::min(asked, max_context);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> u(1, model.config.vocab_size - 1);
    std::vector<int32_t> tokens(size_t(context) + decode);
    for (int32_t& t : tokens) t = u(rng);
    SessionOptions so;
    so.prefill_chunk = 512;
    Throughput cpu{}, gpu{};
    {
      Session warm(model, nullptr, so);  // first-touch of the weights and the thread pool stay out of the timing
      warm.feed(std::span<const int32_t>(tokens).first(8));
      Session session(model, nullptr, so);
      cpu = time_session(session, tokens, context, decode);
    }
    {
      CudaSessionOptions go;
      go.session = so;
      CudaSession warm(gpu_model, nullptr, go);  // module load, cuBLAS handles
      warm.feed(std::span<const int32_t>(tokens).first(8));
      CudaSession session(gpu_model, nullptr, go);
      gpu = time_session(session, tokens, context, decode);
    }
    const nlohmann::json common = {{"model", model.config.name.empty() ? path : model.config.name},
                                   {"context", context},
                                   {"decode_tokens", decode}};
    nlohmann::json c = common, g = common, r = common;
    c.update({{"backend", "cpu"},
              {"threads", threads},
              {"prefill_tokens_per_s", cpu.prefill_tokens_per_s},
              {"decode_tokens_per_s", cpu.decode_tokens_per_s}});
    g.update({{"backend", "cuda"},
              {"prefill_tokens_per_s", gpu.prefill_tokens_per_s},
              {"decode_tokens_per_s", gpu.decode_tokens_per_s}});
    r.update({{"ratio", "cuda/cpu"},
              {"prefill", gpu.prefill_tokens_per_s / cpu.prefill_tokens_per_s},
              {"decode", gpu.decode_tokens_per_s / cpu.decode_tokens_per_s}});
    emit(c);
    emit(g);
    emit(r);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_device_available()) {
    emit({{"skipped", "no CUDA device"}});
    return 0;
  }
  try {
    int layers = 8, decode = 64, threads = 0;
    std::string model_path;
    std::vector<int> contexts = {4096, 16384, 32768};
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (i + 1 >= argc) throw Error("bench_gpu_model: " + a + ": missing value");
      if (a == "--layers") layers = std::stoi(argv[++i]);
      else if (a == "--decode") decode = std::stoi(argv[++i]);
      else if (a == "--contexts") contexts = parse_list(argv[++i]);
      else if (a == "--model") model_path = argv[++i];
      else if (a == "--threads") threads = std::stoi(argv[++i]);
      else throw Error("bench_gpu_model: unknown option " + a);
    }
    if (!model_path.empty()) {
      if (threads <= 0)
        threads = static_cast<int>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
      tbb::global_control limit(tbb::global_control::max_allowed_parallelism, size_t(threads));
      run_real_model(model_path, contexts, decode, threads);
      return 0;
    }
    const CudaModel model = CudaModel::synthetic(llama3_8b_shape(layers), DType::F16, 1);
    emit({{"model", model.config().name}, {"layers", layers}, {"weight_bytes", model.bytes()}});
    for (int context : contexts)
      for (const char* policy : {"full", "namm"}) run(model, context, decode, policy);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
