// Evaluations of the export targets (spec memory3_bmojo.md §5.4): how well an exported NAMM serves
// Memory3 (which k tokens of a reference chunk to keep) and B'MOJO (which tokens leaving the window
// to remember), against each target's own rules and simple baselines. Each experiment returns its
// table as a struct; `nammkit eval-export` prints them.
//
//   eval_memory3  bAbI questions whose story, up to 128 tokens, is the reference chunk. Per question:
//                 the answer's NLL (teacher forcing) with no memory, with the whole chunk injected,
//                 and with each selector's k tokens; plus the model-free attention-output error of
//                 the prompt's queries and whether the kept tokens include the answer word.
//   eval_bmojo    the LM (tinystories, at most 256 tokens; books) and passkey tasks at the model's context, on
//                 held-out samples drawn by the seed, run by the
//                 CPU backend with the full cache and in B'MOJO mode with each scorer at window W and
//                 budget M (and M = 0, plain sliding-window attention), normalised by the full cache.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "namm/export_bmojo.h"
#include "namm/export_memory3.h"
#include "namm/policy.pb.h"
#include "tasks/sample.h"
#include "transformer/model.h"
#include "transformer/session.h"

namespace nammkit {

// A control: replaces every parameter of `file` by a seeded N(0, sigma²) draw (an untrained NAMM
// that still gives non-trivial scores) and says so in the provenance note. sigma must be >= 0.
void randomize_params(PolicyFile& file, double sigma, int64_t seed);

// Teacher-forced answer scoring.
struct QaOutcome {
  double nll = 0;     // mean NLL of the answer tokens
  bool top1 = false;  // argmax of the first answer token is right
};
// Feeds prompt + answer (all but the last answer token) into `session`, which may already hold
// memories, and scores the answer tokens. `prompt` and `answer` must not be empty.
QaOutcome score_answer(Session& session, std::span<const int32_t> prompt, std::span<const int32_t> answer);

// Attention-output fidelity (model-free, spec §5.4 metric 1): the queries `queries_TxQ` (post-RoPE,
// [T][q_dim]) of one layer attend, per query head, over (a) the chunk's n keys/values of its KV head
// and (b) only the `selected` ones; returns mean over query heads and queries of
// ‖o_sparse − o_full‖ / ‖o_full‖. keys/values are [n][kv_dim] (post-RoPE), selected[g] per KV head.
double attention_output_error(const ModelConfig& config, const float* queries_TxQ, int n_queries,
                              const float* keys_NxKV, const float* values_NxKV, int n,
                              const std::vector<std::vector<int32_t>>& selected);

struct Memory3EvalOptions {
  std::string babi_path;  // a bAbI task file (tasks/shipped_sets.h)
  int questions = 40;     // the first this many questions whose story fits a chunk
  Memory3Options base;    // k, layers, prefix, seed; every selector is run, base.selector is ignored
};

// One row of the table; every value is a mean over the questions.
struct Memory3EvalRow {
  std::string name;            // "no memory", "all (k=128)" or the selector's name
  double nll = 0;              // answer NLL
  double top1 = 0;             // share of first answer tokens predicted
  double gain = 0;             // (NLL_nomem - NLL) / (NLL_nomem - NLL_all); NaN when those two tie
  double attention_error = 0;  // selectors: attention_output_error, mean over memory layers
  double answer_kept = 0;      // selectors: share of (memory layer, KV head) keeping an answer token
  double ms_per_chunk = 0;     // selectors: selection and bank building time
};

struct Memory3EvalResult {
  int n_questions = 0;
  double mean_chunk_tokens = 0;
  Memory3EvalRow no_memory;               // the prompt alone (gain 0)
  Memory3EvalRow all_tokens;              // every chunk token kept (k = max_chunk_tokens; gain 1)
  std::vector<Memory3EvalRow> selectors;  // namm, exp-sum, softmax-sum, random, first, last
};

// `policy` must be a NAMM policy (it drives the namm selector). Errors name the bAbI file when no
// question has a story that fits.
Memory3EvalResult eval_memory3(const Model& model, const PolicyFile& policy, const Memory3EvalOptions& options);

struct BmojoEvalOptions {
  // Window, budget and interval of the B'MOJO columns (scorer and, for "swa", memory are set per
  // column). The defaults suit small models' 512-token contexts.
  BmojoOptions base = [] {
    BmojoOptions o;
    o.window = 128, o.memory = 32, o.interval = 32;
    return o;
  }();
  int samples = 4;  // per task
};

struct BmojoEvalTask {
  std::string name;                          // "lm/tinystories", "lm/books", "passkey"
  double full_mean = 0;                      // full-cache mean score
  std::vector<std::optional<double>> ratio;  // per column: mean score / full_mean; none when full_mean is 0
};

struct BmojoEvalResult {
  int context_tokens = 0;            // sample length (the model's context, or 1024)
  std::vector<std::string> columns;  // "swa (M=0)", "namm", "innovation", "recency", "h2o", "random"
  std::vector<BmojoEvalTask> tasks;
  std::vector<double> mean_ratio;  // per column, over the tasks that have a ratio (NaN if none)
  std::vector<double> mean_cache;  // per column: mean cache entries per (layer, KV head)
};

// `policy` must be a NAMM policy (the namm column). Runs on the CPU backend: the sliding window
// exists there only.
BmojoEvalResult eval_bmojo(const Model& model, const PolicyFile& policy, const BmojoEvalOptions& options);
// Its tasks: held-out samples (split "heldout", drawn by options.base.seed) at the model's context.
std::vector<Task> bmojo_eval_tasks(const Model& model, const BmojoEvalOptions& options);

}  // namespace nammkit
