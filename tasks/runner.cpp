#include "tasks/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "tasks/lm_task.h"
#include "tasks/truncation.h"

namespace nammkit {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The tokens a session may hold: RunOptions::max_context when set, else the model's context.
int session_context(const RunOptions& options, const Model& model) {
  return options.max_context > 0 ? options.max_context : model.config.max_seq_len;
}

// A LogLikelihood sample's tokens within `max_context` (0: all of them): the first tokens go, BOS
// (when the window starts with it) and the score_tokens at the end stay. A whole_window sample (a
// prompt and its answer) is never cut: it must fit `limit`, the session's context.
std::vector<int32_t> window_within(const Sample& sample, int max_context, int limit, const Tokenizer& tokenizer,
                                   bool* cut) {
  const std::vector<int32_t>& all = sample.tokens;
  if (sample.whole_window && all.size() > static_cast<size_t>(limit))
    fail(sample.id, "max_context: the prompt and its answer take " + std::to_string(all.size()) +
                        " tokens, more than the " + std::to_string(limit) +
                        " the session holds (session.max_context, else the model's context); shorten "
                        "context_tokens");
  *cut = max_context > 0 && all.size() > static_cast<size_t>(max_context);
  if (!*cut) return all;
  if (sample.score_tokens >= max_context)
    fail(sample.id, "score_tokens: " + std::to_string(sample.score_tokens) + " do not fit session.max_context " +
                        std::to_string(max_context));
  const bool bos = tokenizer.adds_bos() && !all.empty() && all.front() == tokenizer.bos_id();
  std::vector<int32_t> window;
  if (bos) window.push_back(all.front());
  window.insert(window.end(), all.end() - (max_context - static_cast<int>(window.size())), all.end());
  return window;
}

}  // namespace

CacheStats cache_stats(const InferenceSession& session) {
  const ModelConfig& c = session.config();
  CacheStats s;
  size_t total = 0, heads = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    size_t sum = 0;
    int mx = 0;
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const int len = session.head_len(l, h);
      sum += static_cast<size_t>(len);
      mx = std::max(mx, len);
    }
    s.mean_per_layer.push_back(c.n_kv_heads ? static_cast<double>(sum) / c.n_kv_heads : 0.0);
    s.max_per_layer.push_back(mx);
    s.max = std::max(s.max, mx);
    total += sum;
    heads += static_cast<size_t>(c.n_kv_heads);
  }
  s.mean = heads ? static_cast<double>(total) / static_cast<double>(heads) : 0.0;
  return s;
}

std::string first_line(const std::string& text) {
  const size_t start = text.find_first_not_of('\n');
  if (start == std::string::npos) return "";
  const size_t end = text.find('\n', start);
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

RunResult run_sample(const Backend& backend, MemoryPolicy* policy, const Sample& sample, const RunOptions& options) {
  const Model& model = backend.model();
  const std::unique_ptr<InferenceSession> session = backend.new_session(policy, options.session);
  RunResult r;
  const auto t0 = std::chrono::steady_clock::now();

  if (sample.kind == SampleKind::LogLikelihood) {
    // An explicit max_context cuts the window at its start (BOS kept), so the scored tail stays.
    const std::vector<int32_t> tokens =
        window_within(sample, options.max_context, session_context(options, model), model.tokenizer, &r.truncated);
    r.log_likelihood = mean_log_likelihood(*session, tokens, sample.score_tokens);
    r.score = std::exp(sample.sequence_probability ? r.log_likelihood * sample.score_tokens : r.log_likelihood);
    r.prompt_tokens = static_cast<int>(tokens.size());
    r.prefill_seconds = seconds_since(t0);
    r.tokens_per_second = r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0;
    r.cache = cache_stats(*session);
    return r;
  }

  const int context = session_context(options, model);
  const int budget = context - sample.max_new_tokens;
  if (budget < 2)
    fail(sample.id, "max_new_tokens: " + std::to_string(sample.max_new_tokens) + " leaves no room for a prompt in a " +
                        std::to_string(context) + "-token context");
  const Tokenizer& tok = model.tokenizer;
  const std::vector<int32_t> prompt = encode_truncated(tok, sample.prompt, static_cast<size_t>(budget), &r.truncated);
  r.prompt_tokens = static_cast<int>(prompt.size());

  session->reset();
  GenerateOptions gen;
  gen.max_new_tokens = sample.max_new_tokens;
  gen.eos_id = tok.eos_id();
  int32_t previous = tok.bos_id();
  // A newline can hide inside a multi-character piece, so look at the decoded token.
  auto stop_at_newline = [&](int32_t next) {
    if (!sample.stop_at_newline) return false;
    const bool newline = tok.decode_token(previous, next).find('\n') != std::string::npos;
    previous = next;
    return newline;
  };
  const Generation g = generate_greedy(*session, prompt, gen, stop_at_newline);
  r.prefill_seconds = seconds_since(t0) - g.decode_seconds;  // tokenising and the prompt
  r.decode_seconds = g.decode_seconds;
  r.generated_tokens = static_cast<int>(g.tokens.size());
  const double total = r.prefill_seconds + r.decode_seconds;
  r.tokens_per_second = total > 0 ? (r.prompt_tokens + r.generated_tokens) / total : 0;
  r.output = tok.decode(g.tokens);
  if (sample.first_line_only) r.output = first_line(r.output);
  r.score = score_prediction(sample.metric, r.output, sample.answers, sample.all_classes);
  r.cache = cache_stats(*session);
  return r;
}

}  // namespace nammkit
