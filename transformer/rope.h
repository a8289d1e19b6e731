// Rotary position embeddings: the per-pair inverse frequencies (with the checkpoint's scaling folded
// in) and their application to a row of heads.
#pragma once
#include <cstdint>
#include <vector>

#include "transformer/model.h"

namespace nammkit {

// inv_freq[i] for the head_dim/2 rotated pairs, scaling included:
//  None: theta^(-2i/d); Linear: divided by factor; NtkStatic: theta replaced by
//  theta*(alpha*factor-(alpha-1))^(d/(d-2)); Llama3: Llama-3.1's wavelength-dependent blend.
std::vector<double> rope_inverse_frequencies(const ModelConfig& config);

// Rotates `n_heads` consecutive head vectors of `head_dim` floats in place for absolute `position`.
void apply_rope(float* heads, int n_heads, int head_dim, int64_t position, const std::vector<double>& inv_freq,
                RopeStyle style);

}  // namespace nammkit
