// The runtime interface every backend implements, and the one greedy generation loop.
//
// A Backend is a frozen Model placed on a device (the CPU, or a CUDA GPU). It makes
// InferenceSessions: one sequence each, with its own per-(layer, KV head) KV cache managed by a
// MemoryPolicy at the same absolute positions on every backend (transformer/memory_policy.h).
// tasks/, the evolution drivers and the CLI use only these two interfaces, so everything that runs
// on the CPU runs on the GPU too.
//
// The CPU backend is Session (transformer/session.h). The CUDA backend is CudaSession
// (kernels/cuda_session.h), built as a separate shared module (libnammkit_cuda.so) that
// make_backend() loads with dlopen only when the CUDA device is asked for, or when `auto` finds an
// NVIDIA GPU: a CPU run maps no CUDA library.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "transformer/memory_policy.h"
#include "transformer/model.h"

namespace nammkit {

// The memory policy's update interval in absolute tokens when nothing sets one: the paper's n_up. It is
// called update_interval everywhere (configs, policy files, structs) and --interval on the command line.
inline constexpr int kDefaultUpdateInterval = 512;

struct SessionOptions {
  int prefill_chunk = 128;                       // tokens per forward during prefill (bounds the attention matrix)
  int update_interval = kDefaultUpdateInterval;  // the policy runs whenever the absolute token count hits a multiple
  bool attention_bf16 = false;  // round the probabilities handed to the policy to bf16 (the reference does)
  // Sliding-window attention (B'MOJO's in-context window): a query at position p sees the keys at
  // positions > p - sliding_window plus the cache's memory entries. 0 = no window. After each policy
  // update, every kept token that is already outside the window becomes a memory entry; tokens that
  // leave the window between updates are hidden until the policy decides on them. CPU only.
  int sliding_window = 0;
  // CPU, block-quantised weights: multiply with f32 activations (exact to f32 rounding: logits within
  // ~1e-3 of a float64 forward of the same weights) instead of llama.cpp's 8-bit activation products
  // (several times faster; moves SmolLM2's logits by ~0.25 rms). CUDA ignores it (f16 weights).
  bool float_activations = false;
};

// Counters a caller can read after a run.
struct SessionStats {
  int64_t policy_updates = 0;  // update rounds (each covers all layers)
  int64_t tokens_evicted = 0;  // summed over layers and KV heads
  double policy_seconds = 0;   // time spent inside MemoryPolicy::update and compaction
};

// One sequence through a frozen model on some device.
class InferenceSession {
 public:
  virtual ~InferenceSession() = default;

  // Forgets the sequence: empty cache, position 0, policy->begin_sequence().
  virtual void reset() = 0;
  // Runs `tokens` (split into prefill chunks and at update boundaries) and returns the logits after
  // the last one ([vocab]). When `all_logits` is given it receives [tokens.size()][vocab] logits.
  virtual const std::vector<float>& feed(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr) = 0;
  // Sets the absolute position of the next token (e.g. after positions taken by injected memories).
  virtual void set_position(int64_t position) = 0;

  virtual int64_t position() const = 0;  // absolute tokens processed so far
  virtual const SessionStats& stats() const = 0;
  virtual const ModelConfig& config() const = 0;
  // The cache as the policy sees it: tokens held by one (layer, KV head), and by all of them.
  virtual int head_len(int layer, int kv_head) const = 0;
  virtual size_t total_tokens() const = 0;
};

enum class Device { Cpu, Cuda };

// "cpu" | "cuda" | "auto" (`where` names the flag in errors). Auto resolves in make_backend.
struct DeviceChoice {
  enum Kind { Cpu, Cuda, Auto } kind = Auto;
  static DeviceChoice parse(const std::string& text, const std::string& where);
};

// What a lockstep backend plans its memory for (0: nothing planned, buffers grow as needed).
struct LockstepCapacity {
  int sequences = 0;  // sessions alive at once
  int rows = 0;       // tokens in one step: sequences x prefill_chunk
  int max_len = 0;    // the longest cache of one (layer, KV head): the run's context
};

// A Model on a device. Thread-safe: sessions may be made and run concurrently, one per thread.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 NVIDIA H200"
  // The host model: configuration and tokenizer. It must outlive the backend.
  virtual const Model& model() const = 0;
  // `policy` (may be null: full cache) must outlive the session. Throws Error for options the
  // backend does not support (e.g. a sliding window on CUDA).
  virtual std::unique_ptr<InferenceSession> new_session(MemoryPolicy* policy, const SessionOptions& options) const = 0;
  // The same model on the same device, but every session it makes runs its forward passes in lockstep
  // batches with the others (transformer/lockstep.h on the CPU, kernels/cuda_lockstep.h on CUDA; read
  // their threading rule). `capacity` is what to plan memory for (the GPU allocates its step buffers
  // up front; more still works, by growing). Null when the backend has no such form. Must not outlive
  // this backend.
  virtual std::unique_ptr<Backend> new_lockstep_backend(const LockstepCapacity& /*capacity*/) const { return nullptr; }
};

// The CPU backend over `model` (which must outlive it).
std::unique_ptr<Backend> make_cpu_backend(const Model& model);

// The backend for `choice`: Cpu, Cuda (loads libnammkit_cuda.so: next to the running executable,
// or $NAMMKIT_CUDA_MODULE; Error when it cannot be loaded or finds no device), or Auto (CUDA when an
// NVIDIA GPU is present and the module loads, else the CPU; says which on stderr when not quiet).
std::unique_ptr<Backend> make_backend(const Model& model, DeviceChoice choice, bool quiet = false);

struct GenerateOptions {
  int max_new_tokens = 64;
  bool stop_at_eos = true;
  int32_t eos_id = -1;  // < 0: no EOS token
};

struct Generation {
  std::vector<int32_t> tokens;  // generated ids, without the prompt
  double prefill_seconds = 0;   // feeding the prompt (up to the first generated token's logits)
  double decode_seconds = 0;    // the single-token steps after it
};

// Greedy decoding, the one generation loop of every backend: feeds `prompt`, then takes argmax
// tokens until EOS (when stop_at_eos), max_new_tokens, or `stop` returns true for a token just
// produced (it sees each new id; the token is kept). The last token is never fed back.
Generation generate_greedy(InferenceSession& session, std::span<const int32_t> prompt, const GenerateOptions& options,
                           const std::function<bool(int32_t)>& stop = {});

int32_t argmax(std::span<const float> logits);
// log softmax(logits)[target], accumulated in double.
double log_prob(std::span<const float> logits, int32_t target);

}  // namespace nammkit
