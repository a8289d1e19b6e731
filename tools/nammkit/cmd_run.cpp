// nammkit run: greedy generation on the CPU or CUDA backend, streaming text and reporting tokens/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>

#include "namm/bank_retriever.h"
#include "namm/export_bmojo.h"
#include "namm/memory3_reader.h"
#include "namm/memory_bank.h"
#include "namm/policy_file.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/thread_limit.h"
#include "transformer/backend.h"
#include "transformer/chat_template.h"
#include "transformer/loader.h"
#include "transformer/session.h"

namespace nammkit::cli {
namespace {

const char* kRunHelp =
    "usage: nammkit run --model PATH [--prompt TEXT] [options]\n"
    "  --model PATH          GGUF file, Hugging Face directory, or llama2.c .bin\n"
    "  --prompt TEXT         prompt (default: empty, i.e. BOS only)\n"
    "  --chat                send --prompt as a user message in the model's chat template (tokenizer.chat_template,\n"
    "                        ChatML family) and print the assistant's reply, stopping at the end of its turn\n"
    "  --max-new-tokens N    tokens to generate (default 64)\n"
    "  --chunk N             prefill chunk size (default 128)\n"
    "  --policy FILE         manage the KV cache with a policy file (its own update interval unless --interval)\n"
    "  --baseline SPEC       ... or with a baseline: streaming:256 | h2o:0.25 | l2:512 | random:0.5 | full\n"
    "  --memory bmojo:W,M[,interval=N][,scorer=namm|innovation|recency|h2o|random]\n"
    "                        B'MOJO mode: sliding window W plus an eidetic memory of M tokens per head,\n"
    "                        chosen by the --policy NAMM (scorer namm) or a baseline scorer\n"
    "  --bank BANK           Memory3's read path: BM25-retrieve 5 chunks of the memory bank (nammkit export --target\n"
    "                        memory3) for the prompt and again every 64 generated tokens, injecting their memories\n"
    "                        (CPU; excludes --policy, --baseline and --memory); the retrievals go to stderr\n"
    "  --interval N          memory-policy update interval in absolute tokens (default: the file's, else 512)\n"
    "  --threads N           worker threads (default: all cores)\n"
    "  --device auto|cpu|cuda  where to run (default auto: CUDA when a GPU is present and the CUDA module loads)\n"
    "  --no-bos              do not prepend BOS (models trained without BOS, e.g. SmolLM2, never get one)\n"
    "  --ignore-eos          keep generating after EOS\n"
    "  --float-activations   quantised weights times f32 activations: the exact function of the stored weights\n"
    "                        (default: 8-bit activations as llama.cpp, several times faster)\n";

constexpr int kMaxNewTokens = 1 << 24;

int run_command(const std::vector<std::string>& raw) {
  Args args("run", raw,
            {"--model", "--prompt", "--max-new-tokens", "--chunk", "--interval", "--threads", "--policy", "--baseline",
             "--memory", "--device", "--bank"},
            {"--help", "--no-bos", "--ignore-eos", "--chat", "--float-activations"});
  if (args.has("--help")) {
    std::fputs(kRunHelp, stdout);
    return 0;
  }
  const auto threads = thread_limit(args);

  Model model = load_model(args.require("--model"));
  // --chat: the prompt is one user turn in the model's template; the reply ends at the turn's end.
  const bool chat = args.has("--chat");
  std::optional<ChatTemplate> chat_template;
  if (chat) chat_template = chat_template_of(model.tokenizer, args.get("--model"));
  SessionOptions options;
  options.prefill_chunk = args.get_int("--chunk", options.prefill_chunk, 1, kMaxNewTokens);
  options.float_activations = args.has("--float-activations");
  const int interval_flag = args.get_int("--interval", 0);
  options.update_interval = run_update_interval(interval_flag, nullptr, nullptr);
  if (args.has("--policy") && args.has("--baseline")) fail("nammkit run", "--policy and --baseline exclude each other");
  std::unique_ptr<MemoryPolicy> policy;
  if (args.has("--memory")) {
    if (args.has("--baseline")) fail("nammkit run", "--memory and --baseline exclude each other");
    const MemoryMode mode = parse_memory_mode(args.get("--memory"), "nammkit run: --memory");
    const PolicyFile file = args.has("--policy") ? load_policy(args.get("--policy")) : PolicyFile();
    MemoryModeRuntime runtime = make_memory_mode(mode, args.has("--policy") ? &file : nullptr, options);
    options = runtime.session;
    policy = std::move(runtime.policy);
  } else if (args.has("--policy") || args.has("--baseline")) {
    PolicyFile file =
        args.has("--policy") ? load_policy(args.get("--policy")) : make_baseline_policy_file(args.get("--baseline"));
    file.set_update_interval(run_update_interval(interval_flag, args.has("--policy") ? &file : nullptr, nullptr));
    apply_policy_session(file, options);
    policy = make_policy(file);
  }
  const DeviceChoice device = device_choice(args, "run");
  // --bank: Memory3 memories are entries of the CPU Session's cache that no policy may evict.
  std::optional<MemoryBank> bank;
  std::optional<BankRetriever> retriever;
  if (args.has("--bank")) {
    if (args.has("--policy") || args.has("--baseline") || args.has("--memory"))
      fail("nammkit run", "--bank excludes --policy, --baseline and --memory (nothing may evict the memories)");
    if (device.kind == DeviceChoice::Cuda)
      fail("nammkit run", "--bank: Memory3 memories run on the CPU backend only; use --device cpu");
    bank.emplace(MemoryBank::open(args.get("--bank")));
    bank->check_model(model.config);
    retriever.emplace(*bank);
  }
  if (options.sliding_window > 0 && device.kind == DeviceChoice::Cuda)
    fail("nammkit run", "--memory bmojo: the CUDA backend has no sliding window yet; use --device cpu");
  // B'MOJO's sliding window exists on the CPU backend only, so auto means the CPU there.
  const std::unique_ptr<Backend> backend =
      make_backend(model, options.sliding_window > 0 || bank ? DeviceChoice{DeviceChoice::Cpu} : device);
  const std::unique_ptr<InferenceSession> session = backend->new_session(policy.get(), options);

  const std::vector<int32_t> prompt =
      chat ? apply_chat_template(*chat_template, model.tokenizer, {{"user", args.get("--prompt")}}, true)
           : model.tokenizer.encode(args.get("--prompt"), !args.has("--no-bos"));
  if (prompt.empty()) fail("nammkit run", "--prompt: an empty prompt without BOS leaves nothing to run");
  // Positions past the trained context are extrapolated RoPE: refuse a prompt that does not fit and
  // stop generation at the context's end.
  const int context = model.config.max_seq_len;
  if (prompt.size() > static_cast<size_t>(context)) {
    fail("nammkit run", "--prompt: " + std::to_string(prompt.size()) + " tokens do not fit the model's context of " +
                            std::to_string(context) + " tokens");
  }
  GenerateOptions gen;
  gen.max_new_tokens = args.get_int("--max-new-tokens", 64, 0, kMaxNewTokens);
  // --bank: the memories take the positions before the prompt (BOS, prefix, the longest chunk).
  int memory_positions = 0;
  if (bank) {
    for (const auto& ch : bank->index().chunks()) memory_positions = std::max(memory_positions, ch.n_tokens());
    memory_positions += bank->index().prefix_tokens_size();
  }
  if (const int room = context - memory_positions - static_cast<int>(prompt.size()); gen.max_new_tokens > room) {
    std::fprintf(stderr, "note: --max-new-tokens %d cut to %d: the model's context is %d tokens\n", gen.max_new_tokens,
                 room, context);
    gen.max_new_tokens = room;
  }
  gen.stop_at_eos = !args.has("--ignore-eos");
  gen.eos_id = model.tokenizer.eos_id();

  std::fprintf(stderr, "model %s (%s, %d layers, dim %d, vocab %d); prompt %zu tokens\n", model.config.name.c_str(),
               model.format.c_str(), model.config.n_layers, model.config.dim, model.config.vocab_size, prompt.size());
  if (backend->device() != Device::Cpu) std::fprintf(stderr, "device: %s\n", backend->name().c_str());
  if (!chat) {  // a chat prints only the reply, not the templated conversation
    std::fputs(model.tokenizer.decode(std::vector<int32_t>(prompt.begin(), prompt.end())).c_str(), stdout);
    std::fflush(stdout);
  }

  int32_t prev = prompt.back();
  auto print_token = [&](int32_t id) {
    if (chat && gen.stop_at_eos &&
        std::find(chat_template->stop_ids.begin(), chat_template->stop_ids.end(), id) != chat_template->stop_ids.end())
      return true;  // <|im_end|> (or EOS): the assistant's turn is over
    std::fputs(model.tokenizer.decode_token(prev, id).c_str(), stdout);
    std::fflush(stdout);
    prev = id;
    return false;
  };
  Generation g;
  if (bank) {
    Session memory_session(model, nullptr, options);
    Memory3ReadOptions read;
    read.generate = gen;
    auto print_retrieval = [&](const Memory3Retrieval& r) {
      std::fprintf(stderr, "memory3: retrieval after %d generated tokens:", r.generated);
      for (const RetrievedChunk& c : r.chunks)
        std::fprintf(stderr, " %s (%.3f)", bank->index().chunks(c.index).id().c_str(), c.score);
      std::fprintf(stderr, "%s\n", r.chunks.empty() ? " none (no chunk shares a term with the query)" : "");
    };
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    std::optional<clock::time_point> t_first;
    const Memory3Generation m = generate_with_retrieval(
        memory_session, *bank, *retriever, prompt, read,
        [&](int32_t id) {
          if (!t_first) t_first = clock::now();
          return print_token(id);
        },
        print_retrieval);
    g.tokens = m.tokens;
    const auto t1 = t_first.value_or(clock::now());
    g.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    g.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  } else {
    g = generate_greedy(*session, prompt, gen, print_token);
  }
  const int steps = std::max(0, static_cast<int>(g.tokens.size()) - 1);  // the first token came from the prefill
  std::fprintf(stdout, "\n");
  std::fprintf(stderr, "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s)\n",
               prompt.size(), g.prefill_seconds, prompt.size() / std::max(g.prefill_seconds, 1e-9), steps,
               g.decode_seconds, steps / std::max(g.decode_seconds, 1e-9));
  if (policy) {
    const ModelConfig& c = model.config;
    std::fprintf(
        stderr, "policy %s: %lld update(s), %lld token(s) evicted; cache now %zu of %lld tokens per head on average\n",
        policy->name().c_str(), static_cast<long long>(session->stats().policy_updates),
        static_cast<long long>(session->stats().tokens_evicted),
        session->total_tokens() / size_t(c.n_layers * c.n_kv_heads), static_cast<long long>(session->position()));
  }
  return 0;
}

}  // namespace

NAMMKIT_COMMAND("run", "generate text greedily with a model (--model M --prompt TEXT)", run_command);

}  // namespace nammkit::cli
