// Baseline KV-cache policies behind the same MemoryPolicy interface as NAMM (spec §5).
//
// Each holds a Budget: once a head's cache exceeds budget.tokens(seen) at an update, it keeps
// exactly that many tokens (the newest always among them). Policies act only at updates (every
// update_interval tokens), like NAMM, so between updates the cache grows by up to one interval.
//
//  - KeepAllPolicy: full cache (records statistics; otherwise FullCachePolicy).
//  - StreamingLlmPolicy (Xiao et al.): the `sinks` oldest tokens + the most recent ones.
//  - H2oPolicy (Zhang et al.): accumulated attention (summed over all queries so far, gathered with
//    evictions) ranks the "heavy hitters"; the budget is split heavy_ratio heavy / rest recent.
//  - L2NormPolicy (Devoto et al.): the tokens whose keys have the lowest L2 norm, plus the newest.
//  - RandomPolicy: the newest + a uniform random subset, reproducible from (seed, layer, head,
//    position) independently of call order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "namm/policy_stats.h"

namespace nammkit {

struct Budget {
  bool is_fraction = false;  // true: a fraction of the tokens seen so far; false: absolute tokens
  double value = 0;

  static Budget tokens(int n) { return Budget{false, static_cast<double>(n)}; }
  static Budget fraction(double f) { return Budget{true, f}; }
  // "512" -> 512 tokens; "0.25" (has a '.' or is below 1) -> a fraction in (0, 1].
  static Budget parse(const std::string& text, const std::string& where);

  // Tokens per head allowed after `seen` tokens: floor(value * seen) for a fraction; at least 1.
  int tokens_for(int64_t seen) const;
  std::string to_string() const;
  void validate(const std::string& where) const;
};

class KeepAllPolicy final : public RecordingPolicy {
 public:
  std::string name() const override { return "full"; }
  bool needs_keys_values() const override { return false; }
  void begin_sequence(const ModelConfig&) override { note_sequence_start(); }
  KeepLists update(const LayerWindow& window) override;
};

class StreamingLlmPolicy final : public RecordingPolicy {
 public:
  // With a budget smaller than sinks + 1, the sinks shrink so the newest token still fits.
  StreamingLlmPolicy(Budget budget, int sinks = 4);
  std::string name() const override { return "streaming"; }
  bool needs_keys_values() const override { return false; }
  void begin_sequence(const ModelConfig&) override { note_sequence_start(); }
  KeepLists update(const LayerWindow& window) override;

 private:
  Budget budget_;
  int sinks_;
};

class H2oPolicy final : public RecordingPolicy {
 public:
  // heavy = floor(budget * heavy_ratio) heavy hitters, the rest the most recent tokens.
  H2oPolicy(Budget budget, double heavy_ratio = 0.5);
  std::string name() const override { return "h2o"; }
  bool needs_attention() const override { return true; }
  bool needs_keys_values() const override { return false; }
  void begin_sequence(const ModelConfig& config) override;
  KeepLists update(const LayerWindow& window) override;

 private:
  Budget budget_;
  double heavy_ratio_;
  std::vector<std::vector<std::vector<float>>> accumulated_;  // [layer][kv_head][token]
};

class L2NormPolicy final : public RecordingPolicy {
 public:
  explicit L2NormPolicy(Budget budget);
  std::string name() const override { return "l2"; }
  void begin_sequence(const ModelConfig&) override { note_sequence_start(); }
  KeepLists update(const LayerWindow& window) override;

 private:
  Budget budget_;
};

class RandomPolicy final : public RecordingPolicy {
 public:
  RandomPolicy(Budget budget, uint64_t seed);
  std::string name() const override { return "random"; }
  bool needs_keys_values() const override { return false; }
  void begin_sequence(const ModelConfig&) override { note_sequence_start(); }
  KeepLists update(const LayerWindow& window) override;

 private:
  Budget budget_;
  uint64_t seed_;
};

}  // namespace nammkit
