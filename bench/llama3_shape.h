// The synthetic model shape of the GPU benchmarks: Llama-3-8B's (dim 4096, SwiGLU 14336, 32 query heads,
// 8 KV heads, head_dim 128, vocab 128256, RoPE theta 5e5, half-split RoPE) with `layers` of its 32 layers.
#pragma once
#include "transformer/model.h"

namespace nammkit::bench {

inline ModelConfig llama3_8b_shape(int layers) {
  ModelConfig c;
  c.architecture = "llama";
  c.name = "synthetic-llama3-8b-shape";
  c.dim = 4096;
  c.hidden_dim = 14336;
  c.n_layers = layers;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_seq_len = 32768;
  c.norm_eps = 1e-5f;
  c.rope_theta = 500000.0f;
  c.rope_style = RopeStyle::HalfSplit;
  return c;
}

}  // namespace nammkit::bench
