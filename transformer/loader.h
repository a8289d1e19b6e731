// Loading a checkpoint: one entry point, the format detected from the file's bytes.
//
//  - GGUF (magic "GGUF", v2/v3): tensors F32, F16, BF16, Q8_0; architectures llama and qwen2;
//    tokenizer from tokenizer.ggml.* metadata.
//  - Hugging Face: a directory (or its *.safetensors file) with config.json, *.safetensors
//    (single or sharded with model.safetensors.index.json) and tokenizer.json.
//  - llama2.c legacy .bin (7 x int32 header, f32 tensors), tokenizer from tokenizer.bin / tok<N>.bin beside it.
// Every problem is an Error naming the file and the field: truncated file, wrong magic, unsupported
// tensor type, shape mismatch, missing tokenizer.
#pragma once
#include <string>

#include "transformer/model.h"

namespace nammkit {

enum class ModelFormat { Unknown, Gguf, Safetensors, Llama2c };

const char* format_name(ModelFormat f);
// Looks at the bytes (and, for a directory, its files) to decide the format.
ModelFormat detect_format(const std::string& path);

Model load_model(const std::string& path);

}  // namespace nammkit
