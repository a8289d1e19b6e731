// The frozen Llama-family decoder: its hyper-parameters and weights.
//
// Covers Llama 1/2/3, TinyLlama, Qwen2 (QKV bias), llama2.c models: RMSNorm, RoPE, SwiGLU MLP,
// grouped-query attention, tied or untied embeddings. A Model is immutable once loaded and is
// shared (const) by every Session that runs it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transformer/tensor.h"
#include "transformer/tokenizer.h"

namespace nammkit {

// How the two halves of each rotated pair are laid out in a head vector.
enum class RopeStyle : uint8_t {
  Interleaved,  // pairs (2i, 2i+1): llama2.c, GGUF "llama" (llama.cpp permutes Q/K at conversion)
  HalfSplit,    // pairs (i, i + d/2): Hugging Face rotate_half, GGUF "qwen2" (NEOX)
};

enum class RopeScaling : uint8_t {
  None,
  Linear,     // position / factor
  NtkStatic,  // base' = base * (alpha*factor - (alpha-1))^(d/(d-2))  (the NAMM reference's Llama-3 setup)
  Llama3,     // Llama-3.1 frequency-dependent scaling (factor, low/high freq factors, original context)
};

struct ModelConfig {
  std::string architecture = "llama";  // "llama" or "qwen2"
  std::string name;                    // human-readable, from metadata or the file name
  int dim = 0;                         // residual width
  int hidden_dim = 0;                  // SwiGLU width
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (GQA groups)
  int head_dim = 0;    // usually dim / n_heads
  int vocab_size = 0;
  int max_seq_len = 0;  // trained context length
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::Interleaved;
  RopeScaling rope_scaling = RopeScaling::None;
  float rope_factor = 1.0f;            // Linear / NtkStatic / Llama3
  float rope_ntk_alpha = 1.0f;         // NtkStatic
  float rope_low_freq_factor = 1.0f;   // Llama3
  float rope_high_freq_factor = 4.0f;  // Llama3
  int rope_original_context = 8192;    // Llama3
  bool qkv_bias = false;
  bool tied_embeddings = false;

  int group_size() const { return n_heads / n_kv_heads; }  // query heads per KV head
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

struct LayerWeights {
  std::vector<float> attn_norm;   // [dim]
  WeightMatrix wq;                // [q_dim][dim]
  WeightMatrix wk;                // [kv_dim][dim]
  WeightMatrix wv;                // [kv_dim][dim]
  WeightMatrix wo;                // [dim][q_dim]
  std::vector<float> bq, bk, bv;  // empty unless qkv_bias
  std::vector<float> ffn_norm;    // [dim]
  WeightMatrix w_gate;            // [hidden][dim]  (w1)
  WeightMatrix w_up;              // [hidden][dim]  (w3)
  WeightMatrix w_down;            // [dim][hidden]  (w2)
};

// The names under which a model file stores the hyper-parameters check_hyper_parameters checks
// (defaults: nammkit's own field names, for models built in code).
struct HyperParameterKeys {
  std::string norm_eps = "config.norm_eps";
  std::string rope_theta = "config.rope_theta";
  std::string rope_factor = "config.rope_factor";
  std::string rope_ntk_alpha = "config.rope_ntk_alpha";
  std::string rope_low_freq_factor = "config.rope_low_freq_factor";
  std::string rope_high_freq_factor = "config.rope_high_freq_factor";
};

// Throws Error("<file>: <key>: ...") for a value that would turn the forward pass into NaN or inf:
// a negative or non-finite RMS-norm epsilon, a RoPE base or scaling factor that is not a positive
// finite number. Loaders call it with their keys; Model::validate with the defaults.
void check_hyper_parameters(const std::string& file, const ModelConfig& c, const HyperParameterKeys& keys = {});

struct Model {
  ModelConfig config;
  WeightMatrix token_embedding;  // [vocab][dim]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [dim]
  WeightMatrix output;            // [vocab][dim]; same bytes as token_embedding when tied
  Tokenizer tokenizer;
  std::string path;    // where it was loaded from
  std::string format;  // "gguf", "safetensors", "llama2c"

  // Keeps the weight bytes alive (memory maps, converted buffers). WeightMatrix points into these.
  std::vector<std::shared_ptr<const void>> storage;

  // Bytes of weights read per decoded token (all matrices + embedding row): the bandwidth bound.
  size_t weight_bytes_per_token() const;
  // Checks every shape against the config; throws Error("<path>: <tensor>: ...") on a mismatch.
  void validate() const;
};

}  // namespace nammkit
