// `nammkit export`: turn a memory policy into a Memory3 explicit-memory bank or a B'MOJO policy file
// (namm/export_memory3.h, namm/export_bmojo.h); `nammkit eval-export`: evaluate exported policies
// against the targets' own rules and baselines.
//
//   nammkit export --policy P --target memory3 --model M --chunks CHUNKS.jsonl --out BANK
//                  [--k 8] [--layers first-half|all|middle-half|A-B|a,b] [--prefix "Reference:"]
//                  [--selector namm|exp-sum|softmax-sum|random|first|last] [--seed S]
//   nammkit export --policy P --target bmojo --out FILE [--window W] [--memory M] [--interval N]
//                  [--innovation none|surprisal] [--granularity head|layer]
//   nammkit eval-export memory3 --policy P --model M [--babi FILE] [--questions N] [--k 8] [--layers ...]
//   nammkit eval-export bmojo --policy P --model M [--window W] [--memory M] [--interval N] [--samples N]
//   eval-export also takes --random-params SIGMA [--seed S]: replace the policy's parameters by
//   seeded N(0, SIGMA²) draws (a control: an untrained NAMM with non-trivial scores).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>

#include "namm/export_bmojo.h"
#include "namm/export_memory3.h"
#include "namm/policy_file.h"
#include "tasks/data_paths.h"
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tasks/shipped_sets.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/thread_limit.h"
#include "core/error.h"
#include "core/file_io.h"
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
    "       nammkit eval-export bmojo --policy P --model M [--window 128] [--memory 32] [--interval 32]\n"
    "                      [--samples 4] [--random-params SIGMA] [--seed S]\n"
    "--device cpu|auto: these run on the CPU backend (cuda is refused: no KV injection or sliding window).\n";

PolicyFile load_policy_for_eval(const Args& args) {
  PolicyFile f = load_policy(args.require("--policy"));
  if (args.has("--random-params")) {
    const double sigma = args.get_double("--random-params", 0.5);
    if (!(sigma >= 0)) fail("--random-params", "expected a non-negative sigma");
    std::mt19937_64 rng(static_cast<uint64_t>(args.get_int("--seed", 0)));
    std::normal_distribution<double> nd(0.0, sigma);
    for (int i = 0; i < f.params_size(); ++i) f.set_params(i, static_cast<float>(nd(rng)));
    f.mutable_provenance()->set_note("params replaced by N(0, " + std::to_string(sigma) + "^2), seed " +
                                     std::to_string(args.get_int("--seed", 0)));
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


struct QaOutcome {
  double nll = 0;   // mean NLL of the answer tokens
  bool top1 = false;  // argmax of the first answer token is right
};

// Feeds prompt + answer (teacher forcing) into a session already holding its memories.
QaOutcome score_answer(Session& s, const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) {
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), answer.begin(), answer.end() - 1);
  std::vector<float> logits;
  s.feed(seq, &logits);
  const int vocab = s.model().config.vocab_size;
  QaOutcome o;
  for (size_t i = 0; i < answer.size(); ++i) {
    const float* row = logits.data() + (prompt.size() - 1 + i) * vocab;
    o.nll -= log_prob(std::span<const float>(row, size_t(vocab)), answer[i]);
    if (i == 0) o.top1 = argmax(std::span<const float>(row, vocab)) == answer[0];
  }
  o.nll /= answer.size();
  return o;
}

int eval_memory3(const Args& args) {
  Model model = load_model(args.require("--model"));
  const ModelConfig& c = model.config;
  const PolicyFile policy = load_policy_for_eval(args);
  const NammScoring namm = NammScoring::from(policy);
  const std::string babi = args.get("--babi", default_shared_dir() + "/data/babi/qa1_single-supporting-fact_test.txt");
  const int n_questions = args.get_int("--questions", 40);
  Memory3Options base;
  base.k = args.get_int("--k", 8);
  base.layers = parse_memory_layers(args.get("--layers", "first-half"), c.n_layers, "--layers");
  base.prefix = args.get("--prefix", base.prefix);
  base.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  const Tokenizer& tok = model.tokenizer;

  // Questions whose story (the reference chunk) fits: the newest story lines up to the limit.
  std::vector<BabiQuestion> all = parse_babi(read_file(babi), babi);
  struct Item {
    ReferenceChunk chunk;
    std::vector<int32_t> prompt, answer;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < all.size() && static_cast<int>(items.size()) < n_questions; ++i) {
    std::vector<std::string> lines;
    std::istringstream ss(all[i].story);
    for (std::string l; std::getline(ss, l);) lines.push_back(l);
    std::string text;
    for (int j = static_cast<int>(lines.size()) - 1; j >= 0; --j) {
      const std::string cand = lines[j] + (text.empty() ? "" : " " + text);
      if (static_cast<int>(tok.encode(cand, false).size()) > base.max_chunk_tokens) break;
      text = cand;
    }
    if (text.empty()) continue;
    Item it;
    it.chunk = {"babi-" + std::to_string(i), text};
    it.prompt = tok.encode("Question: " + all[i].question + " Answer:", true);
    it.answer = tok.encode(all[i].answer, false);
    items.push_back(std::move(it));
  }
  if (items.empty()) fail(babi, "no question with a story that fits a reference chunk");

  const std::vector<Memory3Selector> selectors = {Memory3Selector::Namm,   Memory3Selector::ExpSum,
                                                  Memory3Selector::SoftmaxSum, Memory3Selector::Random,
                                                  Memory3Selector::First,  Memory3Selector::Last};
  struct Acc {
    double nll = 0, top1 = 0, err = 0, answer_kept = 0, ms = 0;
  };
  std::map<std::string, Acc> acc;
  Acc none, full;
  double mean_tokens = 0;
  for (const Item& it : items) {
    Memory3Options enc = base;
    enc.selector = Memory3Selector::Namm;  // encode with attention (every selector can use it)
    const EncodedReference ref = encode_chunk(model, it.chunk, enc, babi);
    mean_tokens += ref.n_chunk();
    // Context queries: the prompt run after the reference in context (the unsparsified chunk).
    std::vector<int32_t> seq = ref.tokens;
    seq.insert(seq.end(), it.prompt.begin(), it.prompt.end());
    const ReferenceForward ctx = encode_reference(model, seq, false);
    const int P = ref.prefix_len, n = ref.n_chunk(), T = ref.forward.n_tokens, Q = static_cast<int>(it.prompt.size());
    // Answer-word positions in the chunk (every occurrence of the answer's tokens).
    std::vector<int> answer_pos;
    for (int j = 0; j + int(it.answer.size()) <= n; ++j)
      if (std::equal(it.answer.begin(), it.answer.end(), ref.tokens.begin() + P + j))
        for (size_t a = 0; a < it.answer.size(); ++a) answer_pos.push_back(j + int(a));

    {  // no memory: the prompt alone
      Session s(model);
      const QaOutcome o = score_answer(s, it.prompt, it.answer);
      none.nll += o.nll, none.top1 += o.top1;
    }
    auto run_bank = [&](const Memory3Options& opt, Acc& a) {
      MemoryBankWriter w(model, opt, "");
      const auto t0 = std::chrono::steady_clock::now();
      w.add(ref, &namm);
      a.ms += 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const MemoryBank bank = MemoryBank::from_bytes(w.serialize(), "eval bank");
      Session s(model);
      const int idx = 0;
      inject_memories(s, bank, std::span<const int>(&idx, 1));
      const QaOutcome o = score_answer(s, it.prompt, it.answer);
      a.nll += o.nll, a.top1 += o.top1;
      return bank.index();
    };
    Memory3Options full_opt = base;
    full_opt.k = base.max_chunk_tokens;
    full_opt.selector = Memory3Selector::First;
    run_bank(full_opt, full);
    for (Memory3Selector sel : selectors) {
      Memory3Options opt = base;
      opt.selector = sel;
      Acc& a = acc[memory3_selector_name(sel)];
      const bank::BankIndex idx = run_bank(opt, a);
      double err = 0, kept = 0;
      for (int m = 0; m < idx.layers_size(); ++m) {
        const int l = idx.layers(m);
        std::vector<std::vector<int32_t>> selected(c.n_kv_heads);
        for (int g = 0; g < c.n_kv_heads; ++g) {
          const int base_slot = (m * c.n_kv_heads + g) * idx.k();
          for (int s = 0; s < idx.chunks(0).valid_count(m * c.n_kv_heads + g); ++s)
            selected[g].push_back(idx.chunks(0).selected(base_slot + s));
          bool hit = false;
          for (int p : answer_pos) hit |= std::binary_search(selected[g].begin(), selected[g].end(), p);
          kept += hit;
        }
        err += attention_output_error(c, ctx.q_rope[l].data() + size_t(T) * c.q_dim(), Q,
                                      ctx.k_rope[l].data() + size_t(P) * c.kv_dim(), ctx.v[l].data() + size_t(P) * c.kv_dim(),
                                      n, selected);
      }
      a.err += err / idx.layers_size();
      a.answer_kept += answer_pos.empty() ? 0.0 : kept / (idx.layers_size() * c.n_kv_heads);
    }
  }
  const double N = static_cast<double>(items.size());
  std::printf("Memory3 export on %s: %zu bAbI questions (%s), chunk = story (mean %.1f tokens), k = %d, memory layers %s\n",
              c.name.c_str(), items.size(), babi.c_str(), mean_tokens / N, base.k,
              args.get("--layers", "first-half").c_str());
  std::printf("policy: %s%s\n", policy_kind_name(policy.kind()),
              args.has("--random-params") ? (" with random params, sigma " + args.get("--random-params")).c_str() : "");
  std::printf("\n%-12s %9s %7s %9s %12s %12s %9s\n", "selector", "ans NLL", "top1", "gain G", "attn-out err",
              "answer kept", "ms/chunk");
  std::printf("%-12s %9.4f %7.3f %9s %12s %12s %9s\n", "no memory", none.nll / N, none.top1 / N, "0", "-", "-", "-");
  std::printf("%-12s %9.4f %7.3f %9s %12s %12s %9s\n", "all (k=128)", full.nll / N, full.top1 / N, "1", "0", "-", "-");
  const double gap = none.nll - full.nll;
  for (Memory3Selector sel : selectors) {
    const Acc& a = acc[memory3_selector_name(sel)];
    std::printf("%-12s %9.4f %7.3f %9.3f %12.4f %12.3f %9.2f\n", memory3_selector_name(sel), a.nll / N, a.top1 / N,
                std::abs(gap) > 1e-12 ? (none.nll - a.nll) / gap : NAN, a.err / N, a.answer_kept / N, a.ms / N);
  }
  std::printf("\ngain G = (NLL_nomem - NLL_sel) / (NLL_nomem - NLL_all); attn-out err = mean over memory layers, query\n"
              "heads and prompt queries of |o_k - o_all| / |o_all| (model-free); answer kept = share of (memory layer,\n"
              "KV head) whose k tokens include a token of the answer word.\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// eval-export bmojo

int eval_bmojo(const Args& args) {
  Model model = load_model(args.require("--model"));
  const PolicyFile policy = load_policy_for_eval(args);
  BmojoOptions o;
  o.window = args.get_int("--window", 128);
  o.memory = args.get_int("--memory", 32);
  o.interval = args.get_int("--interval", 32);
  const int samples = args.get_int("--samples", 4);
  const int ctx = model.config.max_seq_len > 0 ? model.config.max_seq_len : 1024;
  TaskContext tc;
  tc.tokenizer = &model.tokenizer;
  const nlohmann::json spec = nlohmann::json::array({
      {{"name", "lm"}, {"label", "lm/tinystories"}, {"text", "tinystories"}, {"samples", samples},
       {"context_tokens", ctx}, {"score_tokens", ctx / 4}},
      {{"name", "lm"}, {"label", "lm/books"}, {"text", "books"}, {"samples", samples}, {"context_tokens", ctx},
       {"score_tokens", ctx / 4}},
      {{"name", "passkey"}, {"samples", samples}, {"context_tokens", ctx}},
  });
  const std::vector<Task> tasks = build_task_set(spec, tc, "eval-export bmojo");
  // B'MOJO's sliding window exists on the CPU backend only.
  const std::unique_ptr<Backend> backend = make_cpu_backend(model);
  RunOptions full_run;
  full_run.session.update_interval = o.interval;  // same prefill chunking as the B'MOJO runs

  struct Column {
    std::string name;
    BmojoOptions options;
  };
  std::vector<Column> cols;
  auto add = [&](const std::string& name, BmojoScorer sc, int memory) {
    BmojoOptions x = o;
    x.scorer = sc;
    x.memory = memory;
    cols.push_back({name, x});
  };
  add("swa (M=0)", BmojoScorer::Recency, 0);
  add("namm", BmojoScorer::Namm, o.memory);
  add("recency", BmojoScorer::Recency, o.memory);
  add("h2o", BmojoScorer::H2o, o.memory);
  add("random", BmojoScorer::Random, o.memory);

  std::printf("B'MOJO mode on %s: window W = %d, eidetic budget M = %d per (layer, KV head), n_up = %d, %d-token samples\n",
              model.config.name.c_str(), o.window, o.memory, o.interval, ctx);
  std::printf("policy: %s%s; scores normalised by the full-cache score of the same samples\n\n",
              policy_kind_name(policy.kind()),
              args.has("--random-params") ? (" with random params, sigma " + args.get("--random-params")).c_str() : "");
  std::printf("%-16s %10s", "task", "full");
  for (const auto& col : cols) std::printf(" %12s", col.name.c_str());
  std::printf("\n");
  std::vector<double> mean_ratio(cols.size(), 0), mean_mem(cols.size(), 0), ratio_tasks(cols.size(), 0);
  for (const Task& task : tasks) {
    std::vector<Outcome> full;
    for (const Sample& s : task.samples) full.push_back({run_sample(*backend, nullptr, s, full_run).score, 0});
    double full_mean = 0;
    for (const auto& f : full) full_mean += f.score / full.size();
    std::printf("%-16s %10.4f", task.name.c_str(), full_mean);
    for (size_t ci = 0; ci < cols.size(); ++ci) {
      std::optional<NammScoring> namm;
      if (cols[ci].options.scorer == BmojoScorer::Namm) namm = NammScoring::from(policy);
      BmojoPolicy p(cols[ci].options, std::move(namm));
      RunOptions run;
      run.session = bmojo_session_options(cols[ci].options);
      std::vector<Outcome> got;
      for (const Sample& s : task.samples) {
        const RunResult r = run_sample(*backend, &p, s, run);
        got.push_back({r.score, r.cache.mean});
      }
      // No floor: lm scores are exp(mean log-likelihood), so score / full = exp(ll - ll_full) even
      // when both are small; a task the full cache scores 0 on has no ratio.
      const TaskFitness tf = normalise_task(task.name, got, full, 1e-12);
      if (full_mean > 0) mean_ratio[ci] += tf.ratio;
      mean_mem[ci] += tf.mean_cache / tasks.size();
      if (full_mean > 0) std::printf(" %12.4f", tf.ratio);
      else std::printf(" %12s", "n/a");
      if (full_mean > 0) ratio_tasks[ci] += 1;
    }
    std::printf("\n");
  }
  std::printf("%-16s %10s", "mean ratio", "1");
  for (size_t ci = 0; ci < cols.size(); ++ci)
    std::printf(" %12.4f", ratio_tasks[ci] > 0 ? mean_ratio[ci] / ratio_tasks[ci] : NAN);
  std::printf("\n%-16s %10s", "mean cache/head", "-");
  for (double m : mean_mem) std::printf(" %12.1f", m);
  std::printf("\n\nratio = mean score / full-cache mean score (n/a: the full cache scores 0; left out of the mean).\n"
              "lm score = exp(mean log-likelihood of the last %d tokens); passkey = exact match.\n", ctx / 4);
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
              {"--policy", "--model", "--babi", "--questions", "--k", "--layers", "--prefix", "--random-params", "--seed",
               "--device"});
    cpu_only(args, "eval-export memory3");
    return eval_memory3(args);
  }
  if (target == "bmojo") {
    Args args("eval-export bmojo", rest,
              {"--policy", "--model", "--window", "--memory", "--interval", "--samples", "--random-params", "--seed",
               "--device"});
    cpu_only(args, "eval-export bmojo");
    return eval_bmojo(args);
  }
  fail("nammkit eval-export", "expected memory3 or bmojo, got '" + target + "'\n" + kEvalUsage);
}

}  // namespace

NAMMKIT_COMMAND("export", "export a memory policy for Memory3 (memory bank) or B'MOJO (policy file)", export_command);
NAMMKIT_COMMAND("eval-export", "evaluate exported policies: Memory3 selectors, B'MOJO eidetic memory", eval_export_command);

}  // namespace nammkit::cli
