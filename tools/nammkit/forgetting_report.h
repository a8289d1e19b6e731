// The files `nammkit analyze` writes from the traces (forgetting.h) and their summary
// (forgetting_summary.h): forgetting.jsonl, three SVG plots and a text table.
//
// forgetting.jsonl: one JSON object per line, told apart by "record" (positions are absolute token
// positions in the sequence the model saw, BOS at 0; a "runs" list is [start, end) pairs of positions):
//   {"record":"run", "schema":"nammkit.forgetting/1", "model", "policy", "tasks", "update_interval",
//    "n_layers", "n_kv_heads", "samples"}                                    first line, once
//   {"record":"sample", "sample", "task", "id", "tokens", "judged", "score"}   per sample
//     tokens: positions fed; judged: tokens seen at the last update (positions below it were judged)
//   {"record":"update", "sample", "step", "tokens_seen", "layer", "head", "before", "kept", "kept_runs"}
//     per (update step, layer, KV head): the cache handed to the policy (before), what it kept
//   {"record":"final", "sample", "layer", "head", "cached", "kept_runs"}
//     per (layer, KV head): the cache at the end of the run, the unjudged tail included
//   {"record":"token", "sample", "position", "id", "text", "kind", "judged", "kept", "evicted_at"}
//     per position: kept = share of (layer, KV head) pairs holding it at the end; evicted_at =
//     [layer][head] tokens_seen of the update that evicted it from that head, null when held at the end
//   {"record":"summary", "judged_tokens", "kept_by_kind", "kept_by_position", "kept_by_layer",
//    "final_cache_per_layer"}
//     last line: the numbers the plots show. kept_by_kind: {kind: {kept, from_position, tokens}}, where
//     from_position is the kept fraction the kind would have if tokens were kept for their position alone
//     (forgetting_summary.h); kept_by_position and kept_by_layer: [{kept, tokens}]
#pragma once
#include <string>
#include <vector>

#include "tools/nammkit/forgetting.h"
#include "tools/nammkit/forgetting_summary.h"

namespace nammkit::cli {

struct ForgettingRunInfo {
  std::string model;   // the model's name
  std::string policy;  // "namm(policy.nammp)", "h2o:0.25", ...
  std::string tasks;   // the task-set file
  int update_interval = 0;
};

std::string forgetting_jsonl(const ForgettingRunInfo& info, const std::vector<SampleTrace>& traces,
                             const ForgettingSummary& summary);

// cache_per_layer.svg: tokens per KV head (mean over heads and samples) against tokens seen, one
// saw-tooth per layer (before and after each update) and the full cache as a dashed diagonal.
std::string cache_per_layer_svg(const ForgettingSummary& summary, const std::string& title);
// kept_by_position.svg: the kept fraction per relative-position bin, all layers (thick) and per layer.
std::string kept_by_position_svg(const ForgettingSummary& summary, const std::string& title);
// kept_by_kind.svg: one bar per token kind that occurs, labelled with the fraction and the token count,
// with a black tick at the fraction its positions alone would give (by_kind_from_position).
std::string kept_by_kind_svg(const ForgettingSummary& summary, const std::string& title);

// The short table printed on stdout: kept fraction by kind, by layer and by position decile.
std::string forgetting_table(const ForgettingSummary& summary);

}  // namespace nammkit::cli
