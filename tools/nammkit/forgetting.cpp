#include "tools/nammkit/forgetting.h"

#include <algorithm>

#include "core/error.h"

namespace nammkit::cli {
namespace {

// The policy seen by the session: forwards every call to the real policy, and notes what each head
// kept in absolute positions. The real policy stays a RecordingPolicy with its own statistics.
class KeepRecorder final : public MemoryPolicy {
 public:
  KeepRecorder(MemoryPolicy& inner, std::vector<LayerUpdate>& out) : inner_(inner), out_(out) {}
  std::string name() const override { return inner_.name(); }
  bool needs_attention() const override { return inner_.needs_attention(); }
  bool needs_keys_values() const override { return inner_.needs_keys_values(); }
  void begin_sequence(const ModelConfig& config) override {
    out_.clear();  // a reset starts the sequence over: only the last one is the run
    inner_.begin_sequence(config);
  }
  KeepLists update(const LayerWindow& window) override {
    KeepLists keep = inner_.update(window);
    record(window, keep);
    return keep;
  }

 private:
  void record(const LayerWindow& window, const KeepLists& keep) {
    LayerUpdate u;
    u.layer = window.layer;
    u.tokens_seen = window.tokens_seen();
    const bool new_round = out_.empty() || out_.back().tokens_seen != u.tokens_seen;
    u.step = out_.empty() ? 0 : out_.back().step + (new_round ? 1 : 0);
    for (size_t h = 0; h < window.heads.size(); ++h) {
      const HeadWindow& head = window.heads[h];
      u.before.push_back(head.n_keys);
      std::vector<int32_t> positions;
      if (keep.empty()) {
        positions.assign(head.positions, head.positions + head.n_keys);
      } else {
        for (int32_t i : keep[h]) positions.push_back(head.positions[i]);
      }
      u.kept.push_back(std::move(positions));
    }
    out_.push_back(std::move(u));
  }

  MemoryPolicy& inner_;
  std::vector<LayerUpdate>& out_;
};

// A session that forwards every call and notes the tokens fed at their absolute positions, and the
// cache size of every head after each feed (so the last one is the cache at the end of the run).
class TokenTapSession final : public InferenceSession {
 public:
  TokenTapSession(std::unique_ptr<InferenceSession> inner, SampleTrace& trace)
      : inner_(std::move(inner)), trace_(trace) {}
  void reset() override {
    trace_.tokens.clear();
    inner_->reset();
  }
  const std::vector<float>& feed(std::span<const int32_t> tokens, std::vector<float>* all_logits) override {
    const size_t start = static_cast<size_t>(inner_->position());
    if (trace_.tokens.size() < start + tokens.size()) trace_.tokens.resize(start + tokens.size(), -1);
    std::copy(tokens.begin(), tokens.end(), trace_.tokens.begin() + static_cast<std::ptrdiff_t>(start));
    const std::vector<float>& logits = inner_->feed(tokens, all_logits);
    note_cache();
    return logits;
  }
  void set_position(int64_t position) override { inner_->set_position(position); }
  int64_t position() const override { return inner_->position(); }
  const SessionStats& stats() const override { return inner_->stats(); }
  const ModelConfig& config() const override { return inner_->config(); }
  int head_len(int layer, int kv_head) const override { return inner_->head_len(layer, kv_head); }
  size_t total_tokens() const override { return inner_->total_tokens(); }

 private:
  void note_cache() {
    const ModelConfig& c = inner_->config();
    trace_.final_cache.resize(static_cast<size_t>(c.n_layers) * c.n_kv_heads);
    for (int l = 0; l < c.n_layers; ++l)
      for (int h = 0; h < c.n_kv_heads; ++h) trace_.final_cache[size_t(l) * c.n_kv_heads + h] = inner_->head_len(l, h);
  }

  std::unique_ptr<InferenceSession> inner_;
  SampleTrace& trace_;
};

// The backend run_sample is handed: the real one, with every session it makes wrapped in a tap.
class TokenTapBackend final : public Backend {
 public:
  TokenTapBackend(const Backend& inner, SampleTrace& trace) : inner_(inner), trace_(trace) {}
  Device device() const override { return inner_.device(); }
  std::string name() const override { return inner_.name(); }
  const Model& model() const override { return inner_.model(); }
  std::unique_ptr<InferenceSession> new_session(MemoryPolicy* policy, const SessionOptions& options) const override {
    return std::make_unique<TokenTapSession>(inner_.new_session(policy, options), trace_);
  }

 private:
  const Backend& inner_;
  SampleTrace& trace_;
};

}  // namespace

int64_t SampleTrace::judged() const { return updates.empty() ? 0 : updates.back().tokens_seen; }

std::vector<int32_t> SampleTrace::final_positions(int layer, int head) const {
  std::vector<int32_t> positions;
  int64_t from = 0;
  for (auto it = updates.rbegin(); it != updates.rend(); ++it)
    if (it->layer == layer) {
      positions = it->kept.at(size_t(head));
      from = it->tokens_seen;
      break;
    }
  for (int64_t p = from; p < static_cast<int64_t>(tokens.size()); ++p) positions.push_back(static_cast<int32_t>(p));
  return positions;
}

std::vector<std::vector<int64_t>> SampleTrace::evicted_at() const {
  std::vector<std::vector<int64_t>> evicted(size_t(n_layers) * n_kv_heads, std::vector<int64_t>(tokens.size(), -1));
  for (const LayerUpdate& u : updates)
    for (int h = 0; h < n_kv_heads; ++h) {
      std::vector<int64_t>& head = evicted[size_t(u.layer) * n_kv_heads + h];
      // Every position seen so far that this update did not keep, and that no earlier one evicted.
      std::vector<bool> kept(size_t(u.tokens_seen), false);
      for (int32_t p : u.kept[size_t(h)]) kept[size_t(p)] = true;
      for (int64_t p = 0; p < u.tokens_seen && p < int64_t(head.size()); ++p)
        if (!kept[size_t(p)] && head[size_t(p)] < 0) head[size_t(p)] = u.tokens_seen;
    }
  return evicted;
}

SampleTrace trace_sample(const Backend& backend, const PolicyFile& policy, const Sample& sample,
                         const RunOptions& options) {
  SampleTrace trace;
  trace.sample_id = sample.id;
  const ModelConfig& config = backend.model().config;
  trace.n_layers = config.n_layers;
  trace.n_kv_heads = config.n_kv_heads;
  RunOptions run = options;
  apply_policy_session(policy, run.session);
  const std::unique_ptr<MemoryPolicy> inner = make_policy(policy);
  KeepRecorder recorder(*inner, trace.updates);
  const TokenTapBackend tap(backend, trace);
  trace.score = run_sample(tap, &recorder, sample, run).score;
  if (std::find(trace.tokens.begin(), trace.tokens.end(), -1) != trace.tokens.end())
    fail(sample.id, "tokens: the run skipped positions (memory injection?); the analysis needs every position fed");
  classify_tokens(backend.model().tokenizer, trace.tokens, trace.texts, trace.kinds);
  return trace;
}

std::vector<std::pair<int32_t, int32_t>> position_runs(const std::vector<int32_t>& positions) {
  std::vector<std::pair<int32_t, int32_t>> runs;
  for (int32_t p : positions) {
    if (!runs.empty() && runs.back().second == p) ++runs.back().second;
    else runs.emplace_back(p, p + 1);
  }
  return runs;
}

}  // namespace nammkit::cli
