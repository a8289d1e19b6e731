// The backward pass of the token scorers (namm/bam_scorer.h), for policy-gradient training: the
// gradient of a weighted sum of one sequence's scores with respect to the flat parameter vector.
// Features are inputs of the scorer, not parameters: no gradient flows to them.
#pragma once
#include <span>

#include "namm/bam_scorer.h"

namespace nammkit {

// Gradient of sum_i upstream_N[i] * score_i with respect to the scorer's flat parameters (layout in
// bam_scorer.h), for the n tokens of one (layer, KV head): ADDS into grad_params (shape.n_params()
// doubles), so calls for several sequences accumulate. Double precision throughout. If scores_N is
// non-null it also receives the forward scores (the formula of score_tokens, kept in double).
// `params` must hold shape.n_params() values (else Error, as score_tokens); n <= 0 does nothing.
// BAM recomputes the attention in row blocks, as the forward does: scratch memory is O(n * 64), not
// O(n^2).
void scorer_backward(const ScorerShape& shape, std::span<const float> params, const float* features_NxF, int n,
                     const double* upstream_N, double* grad_params, double* scores_N = nullptr);

}  // namespace nammkit
