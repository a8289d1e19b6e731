// The three views of what a policy forgets (the NAMM paper's analysis), summarised over the traces of
// one or more samples (tools/nammkit/forgetting.h):
//  - the cache size per layer along the sequence: at each update, the tokens per KV head before and
//    after it (a saw-tooth: the cache grows by an interval, then the policy evicts);
//  - the kept fraction by relative token position;
//  - the kept fraction by token kind (tools/nammkit/token_kind.h).
//
// "Kept" is the state at the end of the run, over the tokens the policy judged: positions below the
// last update's tokens_seen (SampleTrace::judged). The few tokens fed after the last update sit in every
// cache only because no update came after them; counting them would show a "kept" tail that says
// nothing about the policy. A token's kept fraction is the share of (layer, KV head) pairs still holding it.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "tools/nammkit/forgetting.h"
#include "tools/nammkit/token_kind.h"

namespace nammkit::cli {

// The cache at one update round, averaged over the KV heads of each layer and over the samples that
// had an update at this many tokens.
struct CacheAtUpdate {
  int64_t tokens_seen = 0;
  std::vector<double> before;  // [layer] tokens per KV head handed to the policy
  std::vector<double> after;   // [layer] tokens per KV head it kept
  int samples = 0;
};

struct KeptFraction {
  double kept = 0;     // mean kept fraction over the tokens counted (0 when none)
  int64_t tokens = 0;  // tokens counted
};

struct ForgettingSummary {
  int n_layers = 0;
  int n_kv_heads = 0;
  int64_t judged_tokens = 0;                                 // summed over the samples
  std::vector<CacheAtUpdate> cache;                          // by tokens_seen, ascending
  std::vector<double> final_cache;                           // [layer] tokens per KV head at the end, mean over samples
  std::vector<KeptFraction> by_position;                     // [bin] of position / judged, bin i = [i/B, (i+1)/B)
  std::vector<std::vector<KeptFraction>> by_position_layer;  // [layer][bin]: the share of the layer's heads
  std::array<KeptFraction, kTokenKindCount> by_kind;         // indexed by TokenKind
  // [kind]: what by_kind would be if a token were kept for its position alone: the mean of by_position
  // over the bins of the kind's tokens. by_kind above it means the policy prefers the kind beyond recency.
  std::array<double, kTokenKindCount> by_kind_from_position{};
  std::vector<KeptFraction> by_layer;  // [layer]: over all judged tokens
};

// `bins` >= 1 relative-position bins. The traces must come from one model (same layers and heads).
ForgettingSummary summarise_forgetting(const std::vector<SampleTrace>& traces, int bins);

// [layer][position], over the judged positions of one trace: the share of the layer's KV heads that
// still hold the position at the end. Heads are as many in every layer, so the mean over layers is the
// share of all (layer, KV head) pairs.
std::vector<std::vector<double>> kept_share_by_layer(const SampleTrace& trace);

}  // namespace nammkit::cli
