// `nammkit export`: turn a memory policy into a Memory3 explicit-memory bank or a B'MOJO policy file
// (namm/export_memory3.h, namm/export_bmojo.h); `nammkit eval-export`: evaluate exported policies
// against the targets' own rules and baselines (the experiments are experiments/export_eval.h; this
// file parses their flags and prints their tables).
//
//   nammkit export --policy P --target memory3 --model M --chunks CHUNKS.jsonl --out BANK
//                  [--k 8] [--layers first-half|all|middle-half|A-B|a,b] [--prefix "Reference:"]
//                  [--selector namm|exp-sum|softmax-sum|random|first|last] [--seed S]
//   nammkit export --policy P --target bmojo --out FILE [--window W] [--memory M] [--interval N]
//                  [--innovation none|surprisal] [--granularity head|layer]
//   nammkit eval-export memory3 --policy P --model M [--babi FILE] [--questions N] [--k 8] [--layers ...]
//   nammkit eval-export memory3-qa --policy P --model M [--corpus BOOK.txt] [--chunks 1000] [--questions 40]
//                  [--k 8] [--layers ...] [--seed S] [--write-chunks FILE.jsonl]
//   nammkit eval-export bmojo --policy P --model M [--window W] [--memory M] [--interval N] [--samples N]
//   eval-export also takes --random-params SIGMA [--seed S]: replace the policy's parameters by
//   seeded N(0, SIGMA²) draws (a control: an untrained NAMM with non-trivial scores).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "core/sha256.h"
#include "experiments/export_eval.h"
#include "experiments/memory3_qa.h"
#include "namm/export_bmojo.h"
#include "namm/export_memory3.h"
#include "namm/memory_bank.h"
#include "namm/policy_file.h"
#include "tasks/data_paths.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/thread_limit.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {

constexpr const char* kExportUsage =
    "usage: nammkit export --policy P --target memory3 --model M --chunks CHUNKS.jsonl --out BANK\n"
    "                      [--k 8] [--layers first-half|all|middle-half|A-B|a,b,c] [--prefix \"Reference:\"]\n"
    "                      [--selector namm|exp-sum|softmax-sum|random|first|last] [--seed S]\n"
    "       nammkit export --policy P --target bmojo --out FILE [--window 512] [--memory 64] [--interval 512]\n"
    "                      [--innovation none|surprisal] [--granularity head|layer]\n"
    "CHUNKS.jsonl: one {\"id\": ..., \"text\": ...} per line, <= 128 tokens after the prefix.\n"
    "--device cpu|auto: exports run on the CPU backend (cuda is refused: it has no KV injection).\n";

constexpr const char* kEvalUsage =
    "usage: nammkit eval-export memory3 --policy P --model M [--babi FILE] [--questions 40] [--k 8]\n"
    "                      [--layers first-half] [--prefix \"Reference:\"] [--random-params SIGMA] [--seed S]\n"
    "       nammkit eval-export memory3-qa --policy P --model M [--corpus BOOK.txt] [--chunks 1000] [--questions 40]\n"
    "                      [--k 8] [--layers first-half] [--seed S] [--write-chunks FILE.jsonl] [--threads N]\n"
    "       nammkit eval-export bmojo --policy P --model M [--window 128] [--memory 32] [--interval 32]\n"
    "                      [--samples 4] [--random-params SIGMA] [--seed S]\n"
    "--device cpu|auto: these run on the CPU backend (cuda is refused: no KV injection or sliding window).\n";

PolicyFile load_policy_for_eval(const Args& args) {
  PolicyFile f = load_policy(args.require("--policy"));
  if (args.has("--random-params")) {
    const double sigma = args.get_double("--random-params", 0.5);
    if (!(sigma >= 0)) fail("--random-params", "expected a non-negative sigma");
    randomize_params(f, sigma, args.get_int("--seed", 0));
  }
  return f;
}

int export_memory3(const Args& args) {
  const std::string policy_path = args.require("--policy");
  const std::string policy_bytes = read_file(policy_path);
  const PolicyFile policy = parse_policy(policy_bytes, policy_path);
  Model model = load_model(args.require("--model"));
  Memory3Options opt;
  opt.k = args.get_int("--k", 8);
  opt.layers = parse_memory_layers(args.get("--layers", "first-half"), model.config.n_layers, "--layers");
  opt.selector = parse_memory3_selector(args.get("--selector", "namm"), "--selector");
  opt.prefix = args.get("--prefix", opt.prefix);
  opt.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  opt.attention_bf16 = policy.attention_bf16();
  std::optional<NammScoring> namm;
  if (opt.selector == Memory3Selector::Namm) namm = NammScoring::from(policy);
  const std::string chunks_path = args.require("--chunks");
  const std::vector<ReferenceChunk> chunks = read_reference_chunks(chunks_path);
  MemoryBankWriter writer(model, opt, sha256_hex(policy_bytes));
  const auto t0 = std::chrono::steady_clock::now();
  // Line numbers for errors: read_reference_chunks skips blank lines, so count them the same way.
  std::istringstream lines(read_file(chunks_path));
  std::vector<int> line_of;
  int no = 0;
  for (std::string line; std::getline(lines, line);) {
    ++no;
    if (line.find_first_not_of(" \t\r") != std::string::npos) line_of.push_back(no);
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    const std::string where = chunks_path + ": line " + std::to_string(line_of[i]);
    writer.add(encode_chunk(model, chunks[i], opt, where), namm ? &*namm : nullptr);
  }
  const std::string out = args.require("--out");
  writer.save(out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const MemoryBank bank = MemoryBank::open(out);  // read back: the file is what we claim
  std::printf("wrote %s: %d chunks, selector %s, k %d, %d memory layers, %llu bytes per chunk, %.2f ms per chunk\n",
              out.c_str(), bank.n_chunks(), bank.index().selector().c_str(), bank.index().k(),
              bank.index().layers_size(), static_cast<unsigned long long>(bank.index().chunk_bytes()),
              1e3 * secs / chunks.size());
  return 0;
}

int export_bmojo(const Args& args) {
  const PolicyFile policy = load_policy(args.require("--policy"));
  BmojoOptions o;
  o.window = args.get_int("--window", 512);
  o.memory = args.get_int("--memory", 64);
  o.interval = args.get_int("--interval", kDefaultUpdateInterval);
  const std::string gran = args.get("--granularity", "head");
  if (gran == "head") o.granularity = BMOJO_PER_KV_HEAD;
  else if (gran == "layer") o.granularity = BMOJO_TOKEN_PER_LAYER;
  else fail("--granularity", "expected head or layer, got '" + gran + "'");
  const std::string inn = args.get("--innovation", "none");
  InnovationFeature innovation = INNOVATION_NONE;
  if (inn == "surprisal") innovation = INNOVATION_LM_SURPRISAL;
  else if (inn != "none") fail("--innovation", "expected none or surprisal, got '" + inn + "'");
  const PolicyFile f = make_bmojo_export(policy, o, innovation);
  save_policy(f, args.require("--out"));
  std::fputs(describe_policy(f).c_str(), stdout);
  return 0;
}

// Memory3's injected entries and B'MOJO's sliding window exist on the CPU backend only: --device
// accepts cpu and auto (which then means the CPU) and refuses cuda with the reason.
void cpu_only(const Args& args, const std::string& command) {
  if (device_choice(args, command).kind == DeviceChoice::Cuda)
    fail("nammkit " + command + ": --device cuda",
         "Memory3 entries and B'MOJO's sliding window run on the CPU backend only; use --device cpu");
}

int export_command(const std::vector<std::string>& raw) {
  Args args("export", raw,
            {"--policy", "--target", "--model", "--chunks", "--out", "--k", "--layers", "--selector", "--prefix",
             "--seed", "--window", "--memory", "--interval", "--innovation", "--granularity", "--device"},
            {"--help"});
  if (args.has("--help") || raw.empty()) {
    std::fputs(kExportUsage, raw.empty() ? stderr : stdout);
    return raw.empty() ? 2 : 0;
  }
  cpu_only(args, "export");
  const std::string target = args.require("--target");
  if (target == "memory3") return export_memory3(args);
  if (target == "bmojo") return export_bmojo(args);
  fail("nammkit export", "--target: expected memory3 or bmojo, got '" + target + "'");
}

// ---------------------------------------------------------------------------------------------
// eval-export memory3

int eval_memory3(const Args& args) {
  Model model = load_model(args.require("--model"));
  const ModelConfig& c = model.config;
  const PolicyFile policy = load_policy_for_eval(args);
  Memory3EvalOptions opt;
  opt.babi_path = args.get("--babi", default_shared_dir() + "/data/babi/qa1_single-supporting-fact_test.txt");
  opt.questions = args.get_int("--questions", 40);
  opt.base.k = args.get_int("--k", 8);
  opt.base.layers = parse_memory_layers(args.get("--layers", "first-half"), c.n_layers, "--layers");
  opt.base.prefix = args.get("--prefix", opt.base.prefix);
  opt.base.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  const Memory3EvalResult r = eval_memory3(model, policy, opt);

  std::printf(
      "Memory3 export on %s: %d bAbI questions (%s), chunk = story (mean %.1f tokens), k = %d, memory layers %s\n",
      c.name.c_str(), r.n_questions, opt.babi_path.c_str(), r.mean_chunk_tokens, opt.base.k,
      args.get("--layers", "first-half").c_str());
  std::printf("policy: %s%s\n", policy_kind_name(policy.kind()),
              args.has("--random-params") ? (" with random params, sigma " + args.get("--random-params")).c_str() : "");
  std::printf("\n%-12s %9s %7s %9s %12s %12s %9s\n", "selector", "ans NLL", "top1", "gain G", "attn-out err",
              "answer kept", "ms/chunk");
  std::printf("%-12s %9.4f %7.3f %9s %12s %12s %9s\n", r.no_memory.name.c_str(), r.no_memory.nll, r.no_memory.top1, "0",
              "-", "-", "-");
  std::printf("%-12s %9.4f %7.3f %9s %12s %12s %9s\n", r.all_tokens.name.c_str(), r.all_tokens.nll, r.all_tokens.top1,
              "1", "0", "-", "-");
  for (const Memory3EvalRow& a : r.selectors)
    std::printf("%-12s %9.4f %7.3f %9.3f %12.4f %12.3f %9.2f\n", a.name.c_str(), a.nll, a.top1, a.gain,
                a.attention_error, a.answer_kept, a.ms_per_chunk);
  std::printf(
      "\ngain G = (NLL_nomem - NLL_sel) / (NLL_nomem - NLL_all); attn-out err = mean over memory layers, query\n"
      "heads and prompt queries of |o_k - o_all| / |o_all| (model-free); answer kept = share of (memory layer,\n"
      "KV head) whose k tokens include a token of the answer word.\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// eval-export memory3-qa (experiments/memory3_qa.h)

int eval_memory3_qa(const Args& args) {
  const auto threads = thread_limit(args);
  Model model = load_model(args.require("--model"));
  const ModelConfig& c = model.config;
  const PolicyFile policy = load_policy_for_eval(args);
  Memory3QaOptions opt;
  opt.corpus_path = args.get("--corpus", default_shared_dir() + "/data/books/pg84.txt");
  opt.chunks = args.get_int("--chunks", 1000, 1, 1 << 20);
  opt.questions = args.get_int("--questions", 40, 1, 1 << 20);
  opt.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  opt.base.k = args.get_int("--k", 8);
  opt.base.layers = parse_memory_layers(args.get("--layers", "first-half"), c.n_layers, "--layers");
  opt.base.seed = opt.seed;
  if (args.has("--write-chunks")) {  // the corpus as export --chunks input, for a whole bank
    std::string jsonl;
    for (const ReferenceChunk& ch : build_memory3_qa_corpus(model.tokenizer, opt).chunks)
      jsonl += nlohmann::json{{"id", ch.id}, {"text", ch.text}}.dump() + "\n";
    write_file_atomic(args.get("--write-chunks"), jsonl);
  }
  const Memory3QaResult r = eval_memory3_qa(model, policy, opt);

  std::printf(
      "Memory3 with retrieval on %s: %d chunks of %s (mean %.1f tokens), %d questions, k = %d, memory layers %s\n",
      c.name.c_str(), r.n_chunks, opt.corpus_path.c_str(), r.mean_chunk_tokens, r.n_questions, opt.base.k,
      args.get("--layers", "first-half").c_str());
  std::printf("policy: %s; retriever: Xapian BM25, recall@%d = %.3f (%.2f ms/query, index %.0f ms)\n",
              policy_kind_name(policy.kind()), opt.memories, r.recall, r.retrieve_ms, r.index_ms);
  std::printf("encoded %d chunks (those retrieved or holding an answer): %.1f ms/chunk; selection ms/chunk:",
              r.n_encoded, r.encode_ms_per_chunk);
  const char* names[] = {"namm", "exp-sum", "random"};
  for (size_t s = 0; s < r.select_ms_per_chunk.size(); ++s) std::printf(" %s %.2f", names[s], r.select_ms_per_chunk[s]);
  std::printf("\n\n%-34s %9s %7s\n", "memories", "ans NLL", "exact");
  for (const Memory3QaScore& row : r.rows) std::printf("%-34s %9.4f %7.3f\n", row.name.c_str(), row.nll, row.exact);
  std::printf("\nexact = every answer token is the argmax (greedy decoding writes the answer).\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// eval-export bmojo

int eval_bmojo(const Args& args) {
  Model model = load_model(args.require("--model"));
  const PolicyFile policy = load_policy_for_eval(args);
  BmojoEvalOptions opt;
  opt.base.window = args.get_int("--window", 128);
  opt.base.memory = args.get_int("--memory", 32);
  opt.base.interval = args.get_int("--interval", 32);
  opt.samples = args.get_int("--samples", 4);
  const BmojoEvalResult r = eval_bmojo(model, policy, opt);

  std::printf(
      "B'MOJO mode on %s: window W = %d, eidetic budget M = %d per (layer, KV head), n_up = %d, %d-token samples\n",
      model.config.name.c_str(), opt.base.window, opt.base.memory, opt.base.interval, r.context_tokens);
  std::printf("policy: %s%s; scores normalised by the full-cache score of the same samples\n\n",
              policy_kind_name(policy.kind()),
              args.has("--random-params") ? (" with random params, sigma " + args.get("--random-params")).c_str() : "");
  std::printf("%-16s %10s", "task", "full");
  for (const std::string& col : r.columns) std::printf(" %12s", col.c_str());
  std::printf("\n");
  for (const BmojoEvalTask& task : r.tasks) {
    std::printf("%-16s %10.4f", task.name.c_str(), task.full_mean);
    for (const std::optional<double>& ratio : task.ratio) {
      if (ratio) std::printf(" %12.4f", *ratio);
      else std::printf(" %12s", "n/a");
    }
    std::printf("\n");
  }
  std::printf("%-16s %10s", "mean ratio", "1");
  for (double m : r.mean_ratio) std::printf(" %12.4f", m);
  std::printf("\n%-16s %10s", "mean cache/head", "-");
  for (double m : r.mean_cache) std::printf(" %12.1f", m);
  std::printf(
      "\n\nratio = mean score / full-cache mean score (n/a: the full cache scores 0; left out of the mean).\n"
      "lm score = exp(mean log-likelihood of the last %d tokens); passkey = exact match.\n",
      r.context_tokens / 4);
  return 0;
}

int eval_export_command(const std::vector<std::string>& raw) {
  if (raw.empty() || raw[0] == "--help" || raw[0] == "-h") {
    std::fputs(kEvalUsage, raw.empty() ? stderr : stdout);
    return raw.empty() ? 2 : 0;
  }
  const std::string target = raw[0];
  const std::vector<std::string> rest(raw.begin() + 1, raw.end());
  if (target == "memory3") {
    Args args("eval-export memory3", rest,
              {"--policy", "--model", "--babi", "--questions", "--k", "--layers", "--prefix", "--random-params",
               "--seed", "--device"});
    cpu_only(args, "eval-export memory3");
    return eval_memory3(args);
  }
  if (target == "memory3-qa") {
    Args args("eval-export memory3-qa", rest,
              {"--policy", "--model", "--corpus", "--chunks", "--questions", "--k", "--layers", "--seed",
               "--write-chunks", "--random-params", "--device", "--threads"});
    cpu_only(args, "eval-export memory3-qa");
    return eval_memory3_qa(args);
  }
  if (target == "bmojo") {
    Args args("eval-export bmojo", rest,
              {"--policy", "--model", "--window", "--memory", "--interval", "--samples", "--random-params", "--seed",
               "--device"});
    cpu_only(args, "eval-export bmojo");
    return eval_bmojo(args);
  }
  fail("nammkit eval-export", "expected memory3, memory3-qa or bmojo, got '" + target + "'\n" + kEvalUsage);
}

}  // namespace

NAMMKIT_COMMAND("export", "export a memory policy for Memory3 (memory bank) or B'MOJO (policy file)", export_command);
NAMMKIT_COMMAND("eval-export", "evaluate exported policies: Memory3 selectors, B'MOJO eidetic memory",
                eval_export_command);

}  // namespace nammkit::cli
