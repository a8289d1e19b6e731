// nammkit info MODEL: what a checkpoint holds, as the runtime sees it.
#include <cstdio>
#include <map>

#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {

const char* rope_style_name(RopeStyle s) { return s == RopeStyle::Interleaved ? "interleaved" : "half-split"; }
const char* rope_scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::None: return "none";
    case RopeScaling::Linear: return "linear";
    case RopeScaling::NtkStatic: return "ntk-static";
    case RopeScaling::Llama3: return "llama3";
  }
  return "?";
}

int info_command(const std::vector<std::string>& raw) {
  Args args("info", raw, {}, {"--help"});
  if (args.has("--help") || args.positional().size() != 1) {
    std::fputs("usage: nammkit info MODEL\n", args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  const Model model = load_model(args.positional()[0]);
  const ModelConfig& c = model.config;
  std::map<std::string, size_t> bytes_by_type;
  auto count = [&](const WeightMatrix& w) { bytes_by_type[dtype_name(w.dtype)] += w.bytes(); };
  count(model.token_embedding);
  if (!c.tied_embeddings) count(model.output);
  for (const auto& L : model.layers)
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) count(*w);

  std::printf("path            %s\n", model.path.c_str());
  std::printf("format          %s\n", model.format.c_str());
  std::printf("name            %s\n", c.name.c_str());
  std::printf("architecture    %s\n", c.architecture.c_str());
  std::printf("layers          %d\n", c.n_layers);
  std::printf("dim / hidden    %d / %d\n", c.dim, c.hidden_dim);
  std::printf("heads / kv      %d / %d (head_dim %d, group %d)\n", c.n_heads, c.n_kv_heads, c.head_dim, c.group_size());
  std::printf("vocab           %d (%s tokenizer)\n", c.vocab_size,
              model.tokenizer.data().kind == TokenizerKind::SentencePiece ? "sentencepiece" : "byte-level BPE");
  std::printf("context         %d\n", c.max_seq_len);
  std::printf("rope            theta %g, %s, scaling %s (factor %g)\n", c.rope_theta, rope_style_name(c.rope_style),
              rope_scaling_name(c.rope_scaling), c.rope_factor);
  std::printf("norm eps        %g\n", c.norm_eps);
  std::printf("qkv bias        %s\n", c.qkv_bias ? "yes" : "no");
  std::printf("embeddings      %s\n", c.tied_embeddings ? "tied" : "untied");
  for (const auto& [type, bytes] : bytes_by_type)
    std::printf("weights %-7s %.2f MiB\n", type.c_str(), bytes / 1048576.0);
  std::printf("bytes/token     %.2f MiB read per decoded token\n", model.weight_bytes_per_token() / 1048576.0);
  return 0;
}

}  // namespace

NAMMKIT_COMMAND("info", "describe a model checkpoint (nammkit info MODEL)", info_command);

}  // namespace nammkit::cli
