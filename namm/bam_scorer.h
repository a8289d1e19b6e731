// The token scorers of NAMM (spec §2.4 and §3.1).
//
// BAM (the paper's scorer, 4,172 parameters for 25 features and hidden 32): one single-head
// self-attention layer over the N cached tokens of one (layer, KV head), in chronological order,
// with the *backward* mask (token i attends to j >= i), a gated residual y = x (1 + m) + r and a
// linear read-out:
//   qkv = x W_qkv + b_qkv;  att = softmax_j>=i(q_i.k_j / sqrt(H));  o = (att v) W_o + b_o
//   r, m = o[:F], o[F:];    y = x (1 + m) + r;                      score = y.w + b
//
// MLP (the reference's cfgs/policy/deep_scoring/mlp.yaml with hidden_depth 1 and the BAM runs'
// scoring_mlp_bias: true): a single linear read-out on the features, score = x.w + b (F + 1 = 26
// parameters). That config also EMA-reduces scores across updates (scoring_reduction_mode: ema);
// the code of that reduction (base_deep_components.py) is not in the stored reference snapshot, so
// it is not implemented: scores are recomputed from the features at every update, as for BAM.
//
// Parameters are one flat float vector, weight matrices input-major: W[i][o] = p[offset + i*out + o]:
//   BAM: W_qkv [F][3H] | b_qkv [3H] | W_o [H][2F] | b_o [2F] | w [F] | b   (q, k, v = columns
//        0..H-1, H..2H-1, 2H..3H-1; r = columns 0..F-1 of o, m = F..2F-1)
//   MLP: w [F] | b
// The same parameters serve every layer and head. All-zero parameters score every token 0.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nammkit {

enum class ScorerKind : uint8_t { Bam, Mlp };

struct ScorerShape {
  ScorerKind kind = ScorerKind::Bam;
  int n_features = 25;  // F: recency dims + spectrogram bins
  int hidden = 32;      // H: BAM attention width (unused by MLP)

  int n_params() const;  // BAM: F*3H + 3H + H*2F + 2F + F + 1 (4,172); MLP: F + 1 (26)
  void validate(const std::string& where) const;
};

const char* scorer_kind_name(ScorerKind kind);  // "bam", "mlp"

// Scores the n tokens of one sequence: features_NxF row-major, scores_N out. `params` must hold
// shape.n_params() values. Allocates scratch proportional to n (the attention is done in row
// blocks, so memory stays O(n * block) rather than O(n^2)).
void score_tokens(const ScorerShape& shape, std::span<const float> params, const float* features_NxF, int n,
                  float* scores_N);

// Scores one feature matrix for many parameter vectors (a CMA-ES population) without recomputing
// the features: scores_PxN[p] receives the scores under params[p]. Members run in parallel (TBB).
void score_population(const ScorerShape& shape, std::span<const std::span<const float>> params,
                      const float* features_NxF, int n, std::vector<std::vector<float>>& scores_PxN);

}  // namespace nammkit
