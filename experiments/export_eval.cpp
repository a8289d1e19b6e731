#include "experiments/export_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "namm/memory3_selectors.h"
#include "namm/policy_file.h"
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tasks/shipped_sets.h"
#include "transformer/backend.h"

namespace nammkit {

void randomize_params(PolicyFile& f, double sigma, int64_t seed) {
  if (!(sigma >= 0)) fail("random params", "expected a non-negative sigma");
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  std::normal_distribution<double> nd(0.0, sigma);
  for (int i = 0; i < f.params_size(); ++i) f.set_params(i, static_cast<float>(nd(rng)));
  f.mutable_provenance()->set_note("params replaced by N(0, " + std::to_string(sigma) + "^2), seed " +
                                   std::to_string(seed));
}

QaOutcome score_answer(Session& s, std::span<const int32_t> prompt, std::span<const int32_t> answer) {
  if (prompt.empty() || answer.empty()) fail("score_answer", "empty prompt or answer");
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
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

double attention_output_error(const ModelConfig& c, const float* queries, int n_queries, const float* keys,
                              const float* values, int n, const std::vector<std::vector<int32_t>>& selected) {
  const int d = c.head_dim, group = c.group_size();
  const double scale = 1.0 / std::sqrt(double(d));
  double total = 0;
  int64_t count = 0;
  std::vector<double> logits(n), o_full(d), o_sparse(d);
  for (int t = 0; t < n_queries; ++t)
    for (int h = 0; h < c.n_heads; ++h) {
      const int g = h / group;
      const float* q = queries + size_t(t) * c.q_dim() + h * d;
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int e = 0; e < d; ++e) acc += double(q[e]) * keys[size_t(j) * c.kv_dim() + g * d + e];
        logits[j] = acc * scale;
      }
      auto attend = [&](const std::vector<int32_t>* subset, std::vector<double>& o) {
        std::fill(o.begin(), o.end(), 0.0);
        double mx = -INFINITY, sum = 0;
        const int m = subset ? int(subset->size()) : n;
        auto idx = [&](int i) { return subset ? (*subset)[i] : i; };
        for (int i = 0; i < m; ++i) mx = std::max(mx, logits[idx(i)]);
        for (int i = 0; i < m; ++i) sum += std::exp(logits[idx(i)] - mx);
        for (int i = 0; i < m; ++i) {
          const double p = std::exp(logits[idx(i)] - mx) / sum;
          for (int e = 0; e < d; ++e) o[e] += p * values[size_t(idx(i)) * c.kv_dim() + g * d + e];
        }
      };
      attend(nullptr, o_full);
      attend(&selected[g], o_sparse);
      double num = 0, den = 0;
      for (int e = 0; e < d; ++e)
        num += (o_sparse[e] - o_full[e]) * (o_sparse[e] - o_full[e]), den += o_full[e] * o_full[e];
      if (den == 0) continue;
      total += std::sqrt(num / den);
      ++count;
    }
  return count ? total / count : 0.0;
}

// ---------------------------------------------------------------------------------------------
// Memory3

Memory3EvalResult eval_memory3(const Model& model, const PolicyFile& policy, const Memory3EvalOptions& options) {
  const ModelConfig& c = model.config;
  const NammScoring namm = NammScoring::from(policy);
  const std::string& babi = options.babi_path;
  const int n_questions = options.questions;
  Memory3Options base = options.base;
  base.attention_bf16 = policy.attention_bf16();  // the attention the selector was evolved on
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

  const std::vector<Memory3Selector> selectors = {Memory3Selector::Namm,       Memory3Selector::ExpSum,
                                                  Memory3Selector::SoftmaxSum, Memory3Selector::Random,
                                                  Memory3Selector::First,      Memory3Selector::Last};
  // Sums over the questions; divided by their number at the end.
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
                                      ctx.k_rope[l].data() + size_t(P) * c.kv_dim(),
                                      ctx.v[l].data() + size_t(P) * c.kv_dim(), n, selected);
      }
      a.err += err / idx.layers_size();
      a.answer_kept += answer_pos.empty() ? 0.0 : kept / (idx.layers_size() * c.n_kv_heads);
    }
  }

  const double N = static_cast<double>(items.size());
  Memory3EvalResult r;
  r.n_questions = static_cast<int>(items.size());
  r.mean_chunk_tokens = mean_tokens / N;
  r.no_memory = {"no memory", none.nll / N, none.top1 / N, 0.0};
  r.all_tokens = {"all (k=" + std::to_string(base.max_chunk_tokens) + ")", full.nll / N, full.top1 / N, 1.0};
  const double gap = none.nll - full.nll;
  for (Memory3Selector sel : selectors) {
    const Acc& a = acc[memory3_selector_name(sel)];
    Memory3EvalRow row;
    row.name = memory3_selector_name(sel);
    row.nll = a.nll / N;
    row.top1 = a.top1 / N;
    row.gain = std::abs(gap) > 1e-12 ? (none.nll - a.nll) / gap : NAN;
    row.attention_error = a.err / N;
    row.answer_kept = a.answer_kept / N;
    row.ms_per_chunk = a.ms / N;
    r.selectors.push_back(std::move(row));
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// B'MOJO

namespace {
int bmojo_eval_context(const Model& model) { return model.config.max_seq_len > 0 ? model.config.max_seq_len : 1024; }
}  // namespace

std::vector<Task> bmojo_eval_tasks(const Model& model, const BmojoEvalOptions& options) {
  const BmojoOptions& o = options.base;
  const int samples = options.samples;
  const int ctx = bmojo_eval_context(model);
  TaskContext tc;
  tc.tokenizer = &model.tokenizer;
  // Held-out samples, drawn by the run's seed: never the windows evolution trains on. The shared
  // TinyStories sample holds about 300 held-out tokens, so its windows are at most 256 tokens.
  const int64_t seed = static_cast<int64_t>(o.seed);
  const int stories_ctx = std::min(ctx, 256);
  const nlohmann::json spec = nlohmann::json::array({
      {{"name", "lm"},
       {"label", "lm/tinystories"},
       {"text", "tinystories"},
       {"split", "heldout"},
       {"seed", seed},
       {"samples", samples},
       {"context_tokens", stories_ctx},
       {"score_tokens", stories_ctx / 4}},
      {{"name", "lm"},
       {"label", "lm/books"},
       {"text", "books"},
       {"split", "heldout"},
       {"seed", seed},
       {"samples", samples},
       {"context_tokens", ctx},
       {"score_tokens", ctx / 4}},
      {{"name", "passkey"}, {"split", "heldout"}, {"seed", seed}, {"samples", samples}, {"context_tokens", ctx}},
  });
  return build_task_set(spec, tc, "eval-export bmojo");
}

BmojoEvalResult eval_bmojo(const Model& model, const PolicyFile& policy, const BmojoEvalOptions& options) {
  const BmojoOptions& o = options.base;
  const int ctx = bmojo_eval_context(model);
  const std::vector<Task> tasks = bmojo_eval_tasks(model, options);
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
  add("innovation", BmojoScorer::Innovation, o.memory);
  add("recency", BmojoScorer::Recency, o.memory);
  add("h2o", BmojoScorer::H2o, o.memory);
  add("random", BmojoScorer::Random, o.memory);

  BmojoEvalResult result;
  result.context_tokens = ctx;
  for (const auto& col : cols) result.columns.push_back(col.name);
  std::vector<double> mean_ratio(cols.size(), 0), mean_mem(cols.size(), 0), ratio_tasks(cols.size(), 0);
  for (const Task& task : tasks) {
    std::vector<Outcome> full;
    for (const Sample& s : task.samples) full.push_back({run_sample(*backend, nullptr, s, full_run).score, 0});
    double full_mean = 0;
    for (const auto& f : full) full_mean += f.score / full.size();
    BmojoEvalTask row;
    row.name = task.name;
    row.full_mean = full_mean;
    for (size_t ci = 0; ci < cols.size(); ++ci) {
      std::optional<NammScoring> namm;
      if (cols[ci].options.scorer == BmojoScorer::Namm) namm = NammScoring::from(policy);
      BmojoPolicy p(cols[ci].options, std::move(namm));
      RunOptions run;
      run.session = bmojo_session_options(cols[ci].options);
      if (namm) run.session.attention_bf16 = policy.attention_bf16();  // the attention it was evolved on
      std::vector<Outcome> got;
      for (const Sample& s : task.samples) {
        const RunResult r = run_sample(*backend, &p, s, run);
        got.push_back({r.score, r.cache.mean});
      }
      // No floor: lm scores are exp(mean log-likelihood), so score / full = exp(ll - ll_full) even
      // when both are small; a task the full cache scores 0 on has no ratio.
      const TaskFitness tf = normalise_task(task.name, got, full, 1e-12);
      mean_mem[ci] += tf.mean_cache / tasks.size();
      if (full_mean > 0) {
        mean_ratio[ci] += tf.ratio;
        ratio_tasks[ci] += 1;
        row.ratio.push_back(tf.ratio);
      } else {
        row.ratio.push_back(std::nullopt);
      }
    }
    result.tasks.push_back(std::move(row));
  }
  for (size_t ci = 0; ci < cols.size(); ++ci)
    result.mean_ratio.push_back(ratio_tasks[ci] > 0 ? mean_ratio[ci] / ratio_tasks[ci] : NAN);
  result.mean_cache = mean_mem;
  return result;
}

}  // namespace nammkit
