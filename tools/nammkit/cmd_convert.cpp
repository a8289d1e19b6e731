// nammkit convert: write any loadable checkpoint as GGUF (F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1 or Q4_0
// matrices; llama.cpp's reference rounding, transformer/quant.h).
#include <cstdio>

#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "transformer/gguf_writer.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {

DType parse_type(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  if (s == "q8_0") return DType::Q8_0;
  if (s == "q5_1") return DType::Q5_1;
  if (s == "q5_0") return DType::Q5_0;
  if (s == "q4_1") return DType::Q4_1;
  if (s == "q4_0") return DType::Q4_0;
  fail("nammkit convert", "--type: expected f32, f16, bf16, q8_0, q5_1, q5_0, q4_1 or q4_0, got '" + s + "'");
}

int convert_command(const std::vector<std::string>& raw) {
  Args args("convert", raw, {"--model", "--out", "--type"}, {"--help"});
  if (args.has("--help")) {
    std::puts(
        "usage: nammkit convert --model PATH --out FILE.gguf [--type f32|f16|bf16|q8_0|q5_1|q5_0|q4_1|q4_0]  (default "
        "f16)\n"
        "  Matrices whose rows do not split into blocks of 32 are written F16. Quantising an already quantised\n"
        "  model re-rounds its dequantised weights (lossy twice).");
    return 0;
  }
  const Model model = load_model(args.require("--model"));
  const DType type = parse_type(args.get("--type", "f16"));
  const std::string out = args.require("--out");
  save_gguf(model, out, type);
  std::fprintf(stderr, "wrote %s (%s, %s matrices)\n", out.c_str(), model.config.architecture.c_str(),
               dtype_name(type));
  return 0;
}

}  // namespace

NAMMKIT_COMMAND("convert", "write a checkpoint as GGUF (--model M --out F.gguf --type q8_0)", convert_command);

}  // namespace nammkit::cli
