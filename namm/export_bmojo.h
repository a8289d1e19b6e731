// B'MOJO export target (spec memory3_bmojo.md §3, §5.3): a bounded eidetic memory of past tokens
// beside a sliding attention window, managed by an exported NAMM (or a baseline rule).
//
// Runtime: BmojoPolicy with SessionOptions{.sliding_window = W, .update_interval = n_up}
// (bmojo_session_options()). At every update, per layer and KV head:
//   candidates C = cached tokens with position < next_position − W: the current eidetic memory
//                  plus the tokens that left the window since the previous update (the Session
//                  hides those from attention until the policy decides, and after the update
//                  marks every kept token outside the window as a memory entry);
//   everything still inside the window is kept untouched;
//   C is scored, the candidates with score ≥ threshold (0) pass, and if more than M pass the M
//   highest scores stay (ties to the newer token); the other candidates are evicted.
// So after every update each head holds at most M memory entries (PER_KV_HEAD), or each layer holds
// one shared set of at most M (TOKEN_PER_LAYER: scores averaged over the KV heads).
//
// Scorers:
//   namm     NAMM features over the whole cache of the head (spectrogram EMA carried across
//            updates, gathered on eviction, exactly as NammPolicy), BAM/linear scores over all
//            cached tokens in order (NAMM's view of the cache); only the candidates' scores are used.
//            Needs update_interval % hop (16) == 0.
//   recency  score = position: keeps the newest M (FIFO memory).
//   h2o      accumulated attention received since the token entered the cache (H2O's heavy hitters).
//   random   a seeded uniform score per (layer, head, position): reproducible.
//   innovation  B'MOJO's innovation test with the LM as the predictor (spec §5.3 baseline "innovation
//            top-M", LM surprisal for the proxy without an SSM): score = −log p(x_j | x_<j) in nats,
//            which the Session reports (MemoryPolicy::needs_surprisal), so the memory holds the M
//            hardest-to-predict tokens that left the window. The first token of a sequence has no
//            prediction and scores +inf: it is always remembered (one slot of M, a sink in effect).
//            The score is per token, so every KV head of a layer keeps the same set. CPU only.
//
// With M = 0 this is plain sliding-window attention; with W ≥ the sequence length nothing ever
// becomes a candidate and it is the full cache.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "namm/namm_scoring.h"
#include "namm/policy.pb.h"
#include "namm/policy_stats.h"
#include "namm/spectrogram.h"
#include "transformer/backend.h"
#include "transformer/session.h"

namespace nammkit {

enum class BmojoScorer : uint8_t { Namm, Recency, H2o, Random, Innovation };
const char* bmojo_scorer_name(BmojoScorer s);  // "namm", "recency", "h2o", "random", "innovation"

struct BmojoOptions {
  int window = 512;                       // W
  int memory = 64;                        // M
  int interval = kDefaultUpdateInterval;  // n_up, the policy's update interval
  BmojoScorer scorer = BmojoScorer::Namm;
  BmojoGranularity granularity = BMOJO_PER_KV_HEAD;
  float threshold = 0.0f;
  uint64_t seed = 0;  // random scorer
  void validate(const std::string& where) const;
};

SessionOptions bmojo_session_options(const BmojoOptions& options, SessionOptions base = {});

class BmojoPolicy final : public RecordingPolicy {
 public:
  // `namm` is required for BmojoScorer::Namm and ignored otherwise.
  BmojoPolicy(BmojoOptions options, std::optional<NammScoring> namm);
  ~BmojoPolicy() override;

  std::string name() const override;  // "bmojo_<scorer>"
  bool needs_attention() const override;
  bool needs_surprisal() const override;
  void observe_surprisal(int64_t first_position, std::span<const float> surprisal) override;
  void begin_sequence(const ModelConfig& config) override;
  KeepLists update(const LayerWindow& window) override;

 private:
  struct HeadState {
    SpectralState spectral;   // namm
    std::vector<float> mass;  // h2o: accumulated attention per cached token
  };
  std::vector<float> score_head(const LayerWindow& window, int h, HeadState& state);

  BmojoOptions options_;
  std::optional<NammScoring> namm_;
  std::unique_ptr<AttentionSpectrogram> spectrogram_;
  std::vector<std::vector<HeadState>> state_;  // [layer][kv_head]
  std::vector<float> surprisal_;               // innovation: by absolute position; NaN = not reported
};

// The export: a copy of `policy` (a NAMM policy) with update_interval = n_up and the BmojoTarget
// block (window, budget, n_up, granularity, innovation feature, replaced rule "INNOVATION_TOPM",
// threshold, LSE merge). Validated.
PolicyFile make_bmojo_export(const PolicyFile& policy, const BmojoOptions& options, InnovationFeature innovation);
// The runtime options a policy file with a BmojoTarget block describes (scorer namm); with
// NammScoring::from(file) they make the BmojoPolicy the file describes.
BmojoOptions bmojo_options_from(const PolicyFile& file);

// A memory mode for `nammkit run`/`eval --memory SPEC`:
//   "full"                     no policy, no window (the default)
//   "bmojo:W,M[,interval=N][,scorer=namm|recency|h2o|random|innovation][,seed=S][,granularity=head|layer]"
//                              B'MOJO mode: window W, eidetic budget M; interval defaults to 512;
//                              scorer defaults to namm (which then needs a NAMM policy file)
// Errors name `where` and the offending part.
struct MemoryMode {
  bool bmojo = false;
  BmojoOptions options;
};
MemoryMode parse_memory_mode(const std::string& spec, const std::string& where);
// The Session options and policy for a mode: full → (base, nullptr); bmojo → (window and interval
// set, a BmojoPolicy). `namm_policy` supplies the NAMM parameters for scorer namm (Error if null).
struct MemoryModeRuntime {
  SessionOptions session;
  std::unique_ptr<MemoryPolicy> policy;
};
MemoryModeRuntime make_memory_mode(const MemoryMode& mode, const PolicyFile* namm_policy, SessionOptions base = {});

}  // namespace nammkit
