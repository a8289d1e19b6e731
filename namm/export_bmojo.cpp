#include "namm/export_bmojo.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/text.h"
#include "namm/policy_file.h"
#include "namm/selection.h"

namespace nammkit {
namespace {

// The B'MOJO mode's sizes: non-negative integers (a window or budget of over 2^30 tokens is a typo).
int parse_size(const std::string& s, const std::string& where, const std::string& field) {
  return static_cast<int>(parse_int(s, where, field, 0, int64_t(1) << 30));
}

}  // namespace

const char* bmojo_scorer_name(BmojoScorer s) {
  switch (s) {
    case BmojoScorer::Namm: return "namm";
    case BmojoScorer::Recency: return "recency";
    case BmojoScorer::H2o: return "h2o";
    case BmojoScorer::Random: return "random";
    case BmojoScorer::Innovation: return "innovation";
  }
  return "?";
}

void BmojoOptions::validate(const std::string& where) const {
  if (window < 1) fail(where, "window: expected >= 1, got " + std::to_string(window));
  if (memory < 0) fail(where, "memory: expected >= 0, got " + std::to_string(memory));
  if (interval < 1) fail(where, "interval: expected >= 1, got " + std::to_string(interval));
  if (granularity != BMOJO_PER_KV_HEAD && granularity != BMOJO_TOKEN_PER_LAYER) fail(where, "granularity: unknown");
  if (!std::isfinite(threshold)) fail(where, "threshold: not finite");
}

SessionOptions bmojo_session_options(const BmojoOptions& options, SessionOptions base) {
  base.sliding_window = options.window;
  base.update_interval = options.interval;
  return base;
}

BmojoPolicy::BmojoPolicy(BmojoOptions options, std::optional<NammScoring> namm)
    : options_(options), namm_(std::move(namm)) {
  options_.validate("bmojo");
  if (options_.scorer == BmojoScorer::Namm) {
    if (!namm_) fail("bmojo", "scorer namm: no NAMM policy given");
    const int hop = namm_->config.spectrogram.hop;
    if (options_.interval % hop != 0)
      fail("bmojo", "interval: the namm scorer needs a multiple of hop " + std::to_string(hop) + ", got " +
                        std::to_string(options_.interval));
    spectrogram_ = std::make_unique<AttentionSpectrogram>(namm_->config.spectrogram);
  }
}

BmojoPolicy::~BmojoPolicy() = default;

std::string BmojoPolicy::name() const { return std::string("bmojo_") + bmojo_scorer_name(options_.scorer); }

bool BmojoPolicy::needs_attention() const {
  return options_.scorer == BmojoScorer::Namm || options_.scorer == BmojoScorer::H2o;
}

bool BmojoPolicy::needs_surprisal() const { return options_.scorer == BmojoScorer::Innovation; }

void BmojoPolicy::observe_surprisal(int64_t first_position, std::span<const float> surprisal) {
  if (first_position < 0) fail("bmojo", "innovation: negative position " + std::to_string(first_position));
  const size_t end = size_t(first_position) + surprisal.size();
  if (surprisal_.size() < end) surprisal_.resize(end, NAN);
  std::copy(surprisal.begin(), surprisal.end(), surprisal_.begin() + first_position);
}

void BmojoPolicy::begin_sequence(const ModelConfig& config) {
  note_sequence_start();
  state_.assign(config.n_layers, std::vector<HeadState>(config.n_kv_heads));
  surprisal_.clear();
}

// Scores of every cached token of head h; also advances the per-token state with the new queries.
std::vector<float> BmojoPolicy::score_head(const LayerWindow& w, int h, HeadState& st) {
  const HeadWindow& hw = w.heads[h];
  const int n = hw.n_keys;
  std::vector<float> scores(n, 0.0f);
  switch (options_.scorer) {
    case BmojoScorer::Namm: {
      spectrogram_->update(hw.attention, w.n_queries, n, st.spectral);
      const int32_t newest = n ? hw.positions[n - 1] : 0;
      std::vector<int64_t> ages(n);
      for (int j = 0; j < n; ++j) ages[j] = int64_t{newest} - hw.positions[j];
      namm_->score(st.spectral.ema_NxB.data(), ages, scores.data());
      break;
    }
    case BmojoScorer::Recency:
      for (int j = 0; j < n; ++j) scores[j] = static_cast<float>(hw.positions[j]);
      break;
    case BmojoScorer::H2o:
      st.mass.resize(n, 0.0f);  // new tokens start with no mass
      for (int t = 0; t < w.n_queries; ++t)
        for (int j = 0; j < n; ++j) st.mass[j] += hw.attention[size_t(t) * n + j];
      scores = st.mass;
      break;
    case BmojoScorer::Random:
      for (int j = 0; j < n; ++j) {
        const uint64_t r = splitmix64(options_.seed ^ splitmix64((uint64_t(w.layer) << 48) ^ (uint64_t(h) << 40) ^
                                                                 uint64_t(uint32_t(hw.positions[j]))));
        scores[j] = static_cast<float>((r >> 40) * (1.0 / 16777216.0));
      }
      break;
    case BmojoScorer::Innovation:
      for (int j = 0; j < n; ++j) {
        const int32_t p = hw.positions[j];
        // A token the Session never reported (an injected entry, or a runtime without the hook)
        // has no innovation score; guessing one would silently change what is remembered.
        if (p < 0 || size_t(p) >= surprisal_.size() || std::isnan(surprisal_[p]))
          fail("bmojo", "scorer innovation: no surprisal for position " + std::to_string(p) +
                            " (the runtime must report it: CPU Session only)");
        scores[j] = surprisal_[p];
      }
      break;
  }
  return scores;
}

KeepLists BmojoPolicy::update(const LayerWindow& w) {
  if (stats().sequences == 0) note_sequence_start();
  if (static_cast<int>(state_.size()) <= w.layer) state_.resize(w.layer + 1);
  auto& states = state_[w.layer];
  const int H = static_cast<int>(w.heads.size());
  if (static_cast<int>(states.size()) < H) states.resize(H);
  if (needs_attention())
    for (int h = 0; h < H; ++h)
      if (!w.heads[h].attention) fail("bmojo", "layer " + std::to_string(w.layer) + ": no attention in the window");
  if (w.n_queries < 1) return {};
  // The next query is at next_position; the Session turns kept tokens below the cutoff into memory.
  const int64_t next_position = w.tokens_seen();
  const int64_t cutoff = next_position - options_.window;

  std::vector<std::vector<float>> scores(H);
  tbb::parallel_for(0, H, [&](int h) { scores[h] = score_head(w, h, states[h]); });

  // Candidates: rows below the cutoff (positions ascend, so a prefix of the rows).
  std::vector<int> n_cand(H);
  bool any = false;
  for (int h = 0; h < H; ++h) {
    const HeadWindow& hw = w.heads[h];
    n_cand[h] = static_cast<int>(std::lower_bound(hw.positions, hw.positions + hw.n_keys, cutoff) - hw.positions);
    any |= n_cand[h] > 0;
  }
  KeepLists keep(H);
  auto admit = [&](std::span<const float> cand_scores) {
    // Passing candidates, then the top M of those by score (ties: newer first).
    std::vector<int32_t> pass;
    for (int j = 0; j < int(cand_scores.size()); ++j)
      if (cand_scores[j] >= options_.threshold) pass.push_back(j);
    if (int(pass.size()) <= options_.memory) return pass;
    std::vector<float> ps(pass.size());
    for (size_t i = 0; i < pass.size(); ++i) ps[i] = cand_scores[pass[i]];
    std::vector<int32_t> top = top_k_chronological(ps, options_.memory);
    for (int32_t& i : top) i = pass[i];
    return top;
  };
  if (options_.granularity == BMOJO_TOKEN_PER_LAYER) {
    for (int h = 1; h < H; ++h)
      if (w.heads[h].n_keys != w.heads[0].n_keys ||
          !std::equal(w.heads[h].positions, w.heads[h].positions + w.heads[h].n_keys, w.heads[0].positions))
        fail("bmojo", "granularity token_per_layer: KV heads of layer " + std::to_string(w.layer) +
                          " hold different tokens (was the cache managed by another policy?)");
    std::vector<float> mean(n_cand[0], 0.0f);
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < n_cand[0]; ++j) mean[j] += scores[h][j] / float(H);
    const std::vector<int32_t> shared = admit(mean);
    for (int h = 0; h < H; ++h) keep[h] = shared;
  } else {
    for (int h = 0; h < H; ++h) keep[h] = admit(std::span<const float>(scores[h].data(), n_cand[h]));
  }
  if (!any) {  // nothing left the window: keep everything
    KeepLists all;
    note_update(w, all);
    return all;
  }
  for (int h = 0; h < H; ++h) {
    for (int j = n_cand[h]; j < w.heads[h].n_keys; ++j) keep[h].push_back(j);  // the window stays
    HeadState& st = states[h];
    if (options_.scorer == BmojoScorer::Namm)
      st.spectral.gather(keep[h], namm_->config.spectrogram.n_bins(), namm_->config.spectrogram.overlap());
    if (options_.scorer == BmojoScorer::H2o) {
      for (size_t r = 0; r < keep[h].size(); ++r) st.mass[r] = st.mass[keep[h][r]];
      st.mass.resize(keep[h].size());
    }
  }
  note_update(w, keep);
  return keep;
}

PolicyFile make_bmojo_export(const PolicyFile& policy, const BmojoOptions& options, InnovationFeature innovation) {
  validate_policy_file(policy, "policy");
  if (policy.kind() != POLICY_NAMM_BAM && policy.kind() != POLICY_NAMM_MLP)
    fail("bmojo export", std::string("policy kind: expected a NAMM policy, got ") + policy_kind_name(policy.kind()));
  options.validate("bmojo export");
  PolicyFile f = policy;
  f.set_update_interval(options.interval);
  BmojoTarget* t = f.mutable_bmojo();
  t->set_window(options.window);
  t->set_memory_budget(options.memory);
  t->set_update_every(options.interval);
  t->set_granularity(options.granularity);
  t->set_innovation(innovation);
  t->set_replaced_rule("INNOVATION_TOPM");
  t->set_threshold(options.threshold);
  t->set_stream_merge("lse");
  t->set_exclude_fading_overlap(false);
  validate_policy_file(f, "bmojo export");
  return f;
}

BmojoOptions bmojo_options_from(const PolicyFile& file) {
  validate_policy_file(file, "policy");
  if (!file.has_bmojo()) fail("policy", "bmojo: the file has no B'MOJO target block");
  const BmojoTarget& t = file.bmojo();
  BmojoOptions o;
  o.window = t.window();
  o.memory = t.memory_budget();
  o.interval = t.update_every();
  o.granularity = t.granularity();
  o.threshold = t.threshold();
  o.scorer = BmojoScorer::Namm;
  return o;
}

namespace {

BmojoScorer parse_bmojo_scorer(const std::string& name, const std::string& where) {
  for (BmojoScorer s :
       {BmojoScorer::Namm, BmojoScorer::Recency, BmojoScorer::H2o, BmojoScorer::Random, BmojoScorer::Innovation})
    if (name == bmojo_scorer_name(s)) return s;
  fail(where, "scorer: expected namm|recency|h2o|random|innovation, got '" + name + "'");
}

}  // namespace

MemoryMode parse_memory_mode(const std::string& spec, const std::string& where) {
  MemoryMode mode;
  if (spec.empty() || spec == "full") return mode;
  const std::string head = "bmojo:";
  if (spec.rfind(head, 0) != 0) fail(where, "memory: expected full or bmojo:W,M[,...], got '" + spec + "'");
  mode.bmojo = true;
  std::vector<std::string> parts;
  std::stringstream ss(spec.substr(head.size()));
  for (std::string item; std::getline(ss, item, ',');) parts.push_back(item);
  if (parts.size() < 2) fail(where, "memory: bmojo needs W,M (window and eidetic budget), got '" + spec + "'");
  mode.options.window = parse_size(parts[0], where, "memory: window");
  mode.options.memory = parse_size(parts[1], where, "memory: budget");
  for (size_t i = 2; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    if (eq == std::string::npos) fail(where, "memory: expected key=value, got '" + parts[i] + "'");
    const std::string key = parts[i].substr(0, eq), value = parts[i].substr(eq + 1);
    if (key == "interval") mode.options.interval = parse_size(value, where, "memory: interval");
    else if (key == "scorer") mode.options.scorer = parse_bmojo_scorer(value, where + ": memory");
    else if (key == "seed") mode.options.seed = static_cast<uint64_t>(parse_size(value, where, "memory: seed"));
    else if (key == "granularity") {
      if (value == "head") mode.options.granularity = BMOJO_PER_KV_HEAD;
      else if (value == "layer") mode.options.granularity = BMOJO_TOKEN_PER_LAYER;
      else fail(where, "memory: granularity: expected head or layer, got '" + value + "'");
    } else {
      fail(where, "memory: unknown option '" + key + "'");
    }
  }
  mode.options.validate(where + ": memory");
  return mode;
}

MemoryModeRuntime make_memory_mode(const MemoryMode& mode, const PolicyFile* namm_policy, SessionOptions base) {
  MemoryModeRuntime rt;
  rt.session = base;
  if (!mode.bmojo) return rt;
  rt.session = bmojo_session_options(mode.options, base);
  std::optional<NammScoring> namm;
  if (mode.options.scorer == BmojoScorer::Namm) {
    if (!namm_policy) fail("memory", "bmojo scorer namm: needs a NAMM policy file (--policy)");
    rt.session.attention_bf16 = namm_policy->attention_bf16();  // the attention it was evolved on
    namm = NammScoring::from(*namm_policy);
  }
  rt.policy = std::make_unique<BmojoPolicy>(mode.options, std::move(namm));
  return rt;
}

}  // namespace nammkit
