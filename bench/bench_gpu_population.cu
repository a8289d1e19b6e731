// bench_gpu_population: the time of one CMA-ES generation on the GPU, λ members x P prompts of C tokens
// each (then D greedy answer tokens), batched (kernels/cuda_lockstep.h: every sequence in one lockstep
// group, one thread each) against member by member (each member's prompts through a plain CudaSession,
// one after another, as the member-parallel path runs a member).
//
// Default: λ = 32, P = 8, C = 4096, D = 16 on a synthetic Llama-3-8B-shaped model (bench_gpu_model's
// shape, 8 of 32 layers unless --layers), f16 weights and KV, full cache (--policy namm: a random-
// parameter NAMM per member, update every 512 tokens; with --namm device (default) its spectrogram and
// BAM scores run on the device (kernels/namm_device.h; in lockstep batched over the step's sequences),
// with --namm host on the host. Either way the attention probabilities cross PCIe, and each sequence
// keeps up to 512 f32 attention rows per (layer, KV head) on the host between updates: ~0.5 GB per
// sequence at 4K on the 8-layer shape, so use far fewer than 256 sequences there). Member by member is timed on
// --measure-members members (default 1) and scaled to λ. With --model PATH a real checkpoint instead (contexts capped
// at its own).
//
// JSON lines: {"mode":"member",...} (seconds for one member's P prompts, and the generation estimate),
// {"mode":"lockstep",...} (seconds for the whole generation, steps, mean and largest batch), and
// {"ratio":...}: throughput of lockstep over member by member, and lockstep's generation time in units of
// one member's (the issue's target: <= 3, i.e. >= λ/3 = 10.7x the throughput at λ = 32).
//
// Usage: bench_gpu_population [--members 32] [--prompts 8] [--context 4096] [--decode 16] [--layers 8]
//                             [--policy full|namm] [--namm device|host] [--measure-members 1] [--model PATH]
// Without a CUDA device it prints {"bench":"gpu_population","skipped":"no CUDA device"} and exits 0.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/llama3_shape.h"
#include "kernels/cuda_lockstep.h"
#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/cuda_util.h"
#include "namm/policy_file.h"
#include "transformer/loader.h"

using namespace nammkit;
using namespace nammkit::kernels;
using nammkit::bench::llama3_8b_shape;

namespace {

void emit(nlohmann::json line) {
  line["bench"] = "gpu_population";
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Settings {
  int members = 32, prompts = 8, context = 4096, decode = 16, layers = 8, measure_members = 1;
  std::string policy = "full", namm = "device", model_path;
};

std::unique_ptr<MemoryPolicy> member_policy(const Settings& s, int member) {
  if (s.policy == "full") return nullptr;
  PolicyFile f = make_namm_policy_file(ScorerKind::Bam);
  std::mt19937 rng(1000 + member);
  std::normal_distribution<float> n(0.0f, 0.5f);
  for (int i = 0; i < f.params_size(); ++i) f.set_params(i, n(rng));
  return make_policy(f);
}

std::vector<int32_t> prompt_tokens(int vocab, int context, int prompt) {
  std::mt19937 rng(7 + prompt);
  std::uniform_int_distribution<int32_t> u(1, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(context));
  for (int32_t& x : t) x = u(rng);
  return t;
}

// One (member, prompt) sequence: the prompt, then `decode` greedy tokens.
void run_sequence(InferenceSession& session, const std::vector<int32_t>& prompt, int decode) {
  GenerateOptions g;
  g.max_new_tokens = decode;
  g.stop_at_eos = false;
  generate_greedy(session, prompt, g);
}

void time_generation(const CudaModel& model, const Settings& s, const std::string& model_name) {
  const ModelConfig& c = model.config();
  const int context = std::min(s.context, c.max_seq_len - s.decode);
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < s.prompts; ++p) prompts.push_back(prompt_tokens(c.vocab_size, context, p));
  CudaSessionOptions o;
  o.session.prefill_chunk = 512;
  o.session.update_interval = 512;
  o.kv_dtype = DType::F16;
  o.namm_on_device = s.namm == "device";
  const nlohmann::json common = {{"model", model_name},  {"layers", c.n_layers}, {"members", s.members},
                                 {"prompts", s.prompts}, {"context", context},   {"decode", s.decode},
                                 {"policy", s.policy},   {"namm", s.namm}};
  {  // warm-up: cuBLAS handles, module load, the first GEMM plans
    CudaSession warm(model, nullptr, o);
    warm.feed(std::span<const int32_t>(prompts[0]).first(std::min<size_t>(64, prompts[0].size())));
  }

  // Member by member: each member's prompts one after another.
  const auto t0 = std::chrono::steady_clock::now();
  for (int m = 0; m < s.measure_members; ++m)
    for (int p = 0; p < s.prompts; ++p) {
      std::unique_ptr<MemoryPolicy> policy = member_policy(s, m);
      CudaSession session(model, policy.get(), o);
      run_sequence(session, prompts[size_t(p)], s.decode);
    }
  const double one_member = seconds_since(t0) / s.measure_members;
  nlohmann::json member = common;
  member.update({{"mode", "member"},
                 {"members_measured", s.measure_members},
                 {"member_seconds", one_member},
                 {"generation_seconds_estimate", one_member * s.members}});
  emit(member);

  // Lockstep: every (member, prompt) sequence in one group, a thread each.
  const int n = s.members * s.prompts;
  CudaLockstepOptions lo;
  lo.max_rows = n * o.session.prefill_chunk;
  lo.max_sequences = n;
  lo.max_len = context + s.decode;
  CudaLockstepGroup group(model, lo);
  std::vector<std::unique_ptr<MemoryPolicy>> policies;
  std::vector<std::unique_ptr<CudaSession>> sessions;
  CudaSessionOptions go = o;
  go.reserve_tokens = s.policy == "full" ? context + s.decode : 1024;  // the memory planned up front
  for (int i = 0; i < n; ++i) {
    policies.push_back(member_policy(s, i / s.prompts));
    sessions.push_back(std::make_unique<CudaSession>(model, policies.back().get(), go, &group));
  }
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      try {
        run_sequence(*sessions[size_t(i)], prompts[size_t(i % s.prompts)], s.decode);
      } catch (const std::exception& e) {
        errors[size_t(i)] = e.what();
      }
      sessions[size_t(i)].reset();  // leave the group
    });
  for (std::thread& t : threads) t.join();
  const double generation = seconds_since(t1);
  for (const std::string& e : errors)
    if (!e.empty()) throw Error("bench_gpu_population: a lockstep sequence failed: " + e);
  const LockstepStats st = group.stats();
  nlohmann::json lockstep = common;
  lockstep.update({{"mode", "lockstep"},
                   {"generation_seconds", generation},
                   {"steps", st.steps},
                   {"mean_batch", st.steps ? double(st.chunks) / double(st.steps) : 0.0},
                   {"max_batch", st.max_batch}});
  emit(lockstep);
  nlohmann::json ratio = common;
  ratio.update({{"ratio", "lockstep/member"},
                {"throughput_gain", one_member * s.members / generation},
                {"generation_over_one_member", generation / one_member}});
  emit(ratio);
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_device_available()) {
    emit({{"skipped", "no CUDA device"}});
    return 0;
  }
  try {
    Settings s;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (i + 1 >= argc) throw Error("bench_gpu_population: " + a + ": missing value");
      const std::string v = argv[++i];
      if (a == "--members") s.members = std::stoi(v);
      else if (a == "--prompts") s.prompts = std::stoi(v);
      else if (a == "--context") s.context = std::stoi(v);
      else if (a == "--decode") s.decode = std::stoi(v);
      else if (a == "--layers") s.layers = std::stoi(v);
      else if (a == "--measure-members") s.measure_members = std::stoi(v);
      else if (a == "--policy") s.policy = v;
      else if (a == "--namm") s.namm = v;
      else if (a == "--model") s.model_path = v;
      else throw Error("bench_gpu_population: unknown option " + a);
    }
    if (s.policy != "full" && s.policy != "namm") throw Error("bench_gpu_population: --policy: full or namm");
    if (s.namm != "device" && s.namm != "host") throw Error("bench_gpu_population: --namm: device or host");
    if (s.members < 1 || s.prompts < 1 || s.context < 1 || s.decode < 1 || s.measure_members < 1 || s.layers < 1)
      throw Error(
          "bench_gpu_population: --members, --prompts, --context, --decode, --layers and "
          "--measure-members must be >= 1");
    if (!s.model_path.empty()) {
      const Model host = load_model(s.model_path);
      const CudaModel model(host);
      time_generation(model, s, host.config.name.empty() ? s.model_path : host.config.name);
    } else {
      const CudaModel model = CudaModel::synthetic(llama3_8b_shape(s.layers), DType::F16, 1);
      time_generation(model, s, model.config().name);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
