#include "transformer/backend.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "core/error.h"
#include "transformer/lockstep.h"
#include "transformer/session.h"

namespace nammkit {

namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const Model& model) : model_(model) {}
  Device device() const override { return Device::Cpu; }
  std::string name() const override { return "cpu"; }
  const Model& model() const override { return model_; }
  std::unique_ptr<InferenceSession> new_session(MemoryPolicy* policy, const SessionOptions& options) const override {
    return std::make_unique<Session>(model_, policy, options);
  }
  std::unique_ptr<Backend> new_lockstep_backend(const LockstepCapacity& /*capacity*/) const override {
    return std::make_unique<LockstepCpuBackend>(model_);
  }

 private:
  const Model& model_;
};

// The entry point libnammkit_cuda.so exports (kernels/cuda_module.cpp): a new CUDA backend
// owned by the caller, or nullptr with the reason in *error.
using CudaBackendEntry = Backend* (*)(const Model* model, std::string* error);
constexpr const char* kCudaEntry = "nammkit_cuda_backend_v1";
constexpr const char* kCudaModule = "libnammkit_cuda.so";

// Where the module is looked for: $NAMMKIT_CUDA_MODULE, else next to the running executable.
std::string cuda_module_path() {
  if (const char* env = std::getenv("NAMMKIT_CUDA_MODULE"); env && *env) return env;
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(kCudaModule) : (exe.parent_path() / kCudaModule).string();
}

// Loads the module once per process (it is never unloaded: backends made by it live in its code).
// Returns the entry point, or nullptr with the reason in *error.
CudaBackendEntry load_cuda_entry(std::string* error) {
  static std::once_flag once;
  static CudaBackendEntry entry = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    const std::string path = cuda_module_path();
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      load_error = "cannot load the CUDA backend " + path + ": " + (why ? why : "unknown error") +
                   " (build with -DNAMMKIT_CUDA=ON, or set NAMMKIT_CUDA_MODULE)";
      return;
    }
    entry = reinterpret_cast<CudaBackendEntry>(dlsym(handle, kCudaEntry));
    if (!entry) load_error = path + ": no symbol " + kCudaEntry + " (a module from another nammkit version?)";
  });
  if (!entry) *error = load_error;
  return entry;
}

// Whether the machine has an NVIDIA GPU, without loading any CUDA library.
bool nvidia_gpu_present() {
  std::error_code ec;
  return std::filesystem::exists("/dev/nvidia0", ec) || std::filesystem::exists("/dev/nvidiactl", ec);
}

std::unique_ptr<Backend> make_cuda_backend(const Model& model, std::string* error) {
  const CudaBackendEntry entry = load_cuda_entry(error);
  if (!entry) return nullptr;
  return std::unique_ptr<Backend>(entry(&model, error));
}

}  // namespace

DeviceChoice DeviceChoice::parse(const std::string& text, const std::string& where) {
  if (text == "cpu") return {Cpu};
  if (text == "cuda") return {Cuda};
  if (text == "auto") return {Auto};
  fail(where, "expected cpu, cuda or auto, got '" + text + "'");
}

std::unique_ptr<Backend> make_cpu_backend(const Model& model) { return std::make_unique<CpuBackend>(model); }

std::unique_ptr<Backend> make_backend(const Model& model, DeviceChoice choice, bool quiet) {
  if (choice.kind == DeviceChoice::Cpu) return make_cpu_backend(model);
  if (choice.kind == DeviceChoice::Cuda) {
    std::string error;
    std::unique_ptr<Backend> backend = make_cuda_backend(model, &error);
    if (!backend) fail("--device cuda", error);
    return backend;
  }
  if (nvidia_gpu_present()) {
    std::string error;
    if (std::unique_ptr<Backend> backend = make_cuda_backend(model, &error)) return backend;
    if (!quiet) std::fprintf(stderr, "device auto: running on the CPU (%s)\n", error.c_str());
  }
  return make_cpu_backend(model);
}

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double log_prob(std::span<const float> logits, int32_t target) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
  return static_cast<double>(logits[size_t(target)]) - mx - std::log(sum);
}

Generation generate_greedy(InferenceSession& session, std::span<const int32_t> prompt, const GenerateOptions& options,
                           const std::function<bool(int32_t)>& stop) {
  using clock = std::chrono::steady_clock;
  Generation g;
  if (options.max_new_tokens <= 0) return g;
  const auto t0 = clock::now();
  const std::vector<float>* logits = &session.feed(prompt);
  const auto t1 = clock::now();
  g.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int i = 0; i < options.max_new_tokens; ++i) {
    const int32_t next = argmax(*logits);
    if (options.stop_at_eos && options.eos_id >= 0 && next == options.eos_id) break;
    g.tokens.push_back(next);
    if (stop && stop(next)) break;
    if (i + 1 == options.max_new_tokens) break;
    const int32_t one[1] = {next};
    logits = &session.feed(one);
  }
  g.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return g;
}

}  // namespace nammkit
