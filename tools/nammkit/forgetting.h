// What a memory policy forgets, recorded: for one run of a sample, which absolute token positions every
// (layer, KV head) keeps at each policy update, and which token sits at each position.
//
// Nothing in the runtime changes for this. The run goes through run_sample (tasks/runner.h) as in
// `nammkit eval`, with two pass-through wrappers around what it is handed:
//  - the policy (a MemoryPolicy that forwards every call to the real one and notes, from the window's
//    absolute positions and the keep lists returned, the positions each head keeps);
//  - the backend (its sessions forward every call and note the tokens fed, prompt and generated alike,
//    at their absolute positions, and the cache size per head after each feed).
// So the trace is exactly what the session did; tests check that the final cache sizes agree with it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "namm/policy_file.h"
#include "tasks/runner.h"
#include "tasks/sample.h"
#include "tools/nammkit/token_kind.h"
#include "transformer/backend.h"

namespace nammkit::cli {

// One policy update of one layer.
struct LayerUpdate {
  int step = 0;             // the update round within the run: 0, 1, ... (all layers of a round share it)
  int64_t tokens_seen = 0;  // absolute tokens processed when the update ran
  int layer = 0;
  std::vector<int32_t> before;             // per KV head: cached tokens handed to the policy
  std::vector<std::vector<int32_t>> kept;  // per KV head: the absolute positions kept, ascending
};

// One sample run under one policy.
struct SampleTrace {
  std::string task;
  std::string sample_id;
  double score = 0;  // the task's metric (tasks/runner.h RunResult::score)
  int n_layers = 0;
  int n_kv_heads = 0;
  std::vector<int32_t> tokens;       // the token id at each absolute position: prompt, then generated
  std::vector<std::string> texts;    // each token's decoded text (token_kind.h)
  std::vector<TokenKind> kinds;      // each token's kind
  std::vector<LayerUpdate> updates;  // in call order: round by round, layer by layer
  std::vector<int32_t> final_cache;  // [layer * n_kv_heads + head]: tokens the session held at the end

  // Tokens seen at the last update: positions below it were judged by the policy at least once; the
  // ones after it were still waiting for the next update when the run ended. 0 when no update ran.
  int64_t judged() const;
  // The absolute positions (layer, head) held at the end: the last update's kept list, then every
  // position fed after it.
  std::vector<int32_t> final_positions(int layer, int head) const;
  // [layer * n_kv_heads + head][position]: tokens_seen of the update that evicted the position from
  // that head, or -1 when the head still held it at the end. Eviction is final, so there is one each.
  std::vector<std::vector<int64_t>> evicted_at() const;
};

// Runs `sample` under a fresh policy made from `policy` (its update interval replaces
// options.session.update_interval, as in `nammkit eval`) and records the trace.
SampleTrace trace_sample(const Backend& backend, const PolicyFile& policy, const Sample& sample,
                         const RunOptions& options);

// [start, end) runs of ascending positions: {0,1,2,5,6} -> {{0,3},{5,7}}. The compact form of a kept list.
std::vector<std::pair<int32_t, int32_t>> position_runs(const std::vector<int32_t>& positions);

}  // namespace nammkit::cli
