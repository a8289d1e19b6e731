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
// Usage: bench_gpu_model [--layers N] [--contexts 4096,16384,32768] [--decode 64]
// Without a CUDA device it prints {"bench":"gpu_model","skipped":"no CUDA device"} and exits 0.
#include <chrono>
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

#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/cuda_util.h"
#include "namm/policy_file.h"

using namespace nammkit;
using namespace nammkit::kernels;

namespace {

void emit(nlohmann::json line) {
  line["bench"] = "gpu_model";
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

ModelConfig llama3_8b_shape(int layers) {
  ModelConfig c;
  c.architecture = "llama";
  c.name = "synthetic-llama3-8b-shape";
  c.dim = 4096;
  c.hidden_dim = 14336;
  c.n_layers = layers;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_seq_len = 32768;
  c.norm_eps = 1e-5f;
  c.rope_theta = 500000.0f;
  c.rope_style = RopeStyle::HalfSplit;
  return c;
}

std::unique_ptr<MemoryPolicy> random_namm() {
  PolicyFile f = make_namm_policy_file(ScorerKind::Bam);
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 0.5f);
  for (int i = 0; i < f.params_size(); ++i) f.set_params(i, n(rng));
  return make_policy(f);
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

  const auto t0 = std::chrono::steady_clock::now();
  std::span<const int32_t> all(tokens);
  const std::vector<float>* logits = &session.feed(all.first(size_t(context)));
  const double prefill_s = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < decode; ++i) {
    const int32_t one[1] = {argmax(*logits)};
    logits = &session.feed(one);
  }
  const double decode_s = seconds_since(t1);
  const ModelConfig& c = model.config();
  const double heads = double(c.n_layers) * c.n_kv_heads;
  emit({{"policy", policy_name},
        {"layers", c.n_layers},
        {"context", context},
        {"prefill_tokens_per_s", context / prefill_s},
        {"decode_tokens", decode},
        {"decode_tokens_per_s", decode > 0 ? decode / decode_s : 0.0},
        {"mean_cache_tokens_per_head", double(session.total_tokens()) / heads},
        {"policy_updates", session.stats().policy_updates},
        {"policy_seconds", session.stats().policy_seconds},
        {"tokens_evicted", session.stats().tokens_evicted}});
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_device_available()) {
    emit({{"skipped", "no CUDA device"}});
    return 0;
  }
  try {
    int layers = 8, decode = 64;
    std::vector<int> contexts = {4096, 16384, 32768};
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (i + 1 >= argc) throw Error("bench_gpu_model: " + a + ": missing value");
      if (a == "--layers") layers = std::stoi(argv[++i]);
      else if (a == "--decode") decode = std::stoi(argv[++i]);
      else if (a == "--contexts") contexts = parse_list(argv[++i]);
      else throw Error("bench_gpu_model: unknown option " + a);
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
