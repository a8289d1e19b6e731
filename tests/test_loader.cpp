// Checkpoint loaders: stories260K (llama2.c), GGUF read/write round trips in every weight type,
// format conversion (save_gguf) incl. the RoPE row permutation, Hugging Face directories, and the
// error messages for broken inputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "transformer/gguf.h"
#include "transformer/gguf_writer.h"
#include "transformer/llama2c.h"
#include "transformer/loader.h"
#include "transformer/safetensors.h"

namespace nammkit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kShared = NAMMKIT_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/stories260K.bin";
const std::string kFixtures = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures";

#define SKIP_WITHOUT(path) \
  if (!file_exists(path)) GTEST_SKIP() << "shared data missing: " << (path) << " (see ../shared/README.md)"

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = (fs::temp_directory_path() /
             ("nammkit_test_loader_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                .string();
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `f`, expects an nammkit::Error, and checks that its message contains every piece.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& pieces) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : pieces) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no nammkit::Error thrown";
}

std::vector<float> to_f32(const WeightMatrix& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  dequantize(w.dtype, w.data, out.data(), w.rows * w.cols);
  return out;
}

float round_to(DType t, float x) {
  switch (t) {
    case DType::F16: return f16_to_f32(f32_to_f16(x));
    case DType::BF16: return bf16_to_f32(f32_to_bf16(x));
    default: return x;
  }
}

// ---------------------------------------------------------------------------------------------
// Synthetic models (random weights, a small SentencePiece vocabulary with byte fallback)

TokenizerData synthetic_tokenizer(int vocab) {
  TokenizerData d;
  d.kind = TokenizerKind::SentencePiece;
  d.pieces = {"<unk>", "<s>", "</s>"};
  char hex[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    d.pieces.push_back(hex);
  }
  const std::string sp = "\xE2\x96\x81";
  for (const std::string& p : {sp, sp + "t", std::string("he"), sp + "the", sp + "a", std::string("an"), sp + "an"}) {
    d.pieces.push_back(p);
  }
  for (char c = 'a'; c <= 'z' && static_cast<int>(d.pieces.size()) < vocab; ++c) d.pieces.push_back(std::string(1, c));
  for (int i = 0; static_cast<int>(d.pieces.size()) < vocab; ++i) {
    std::string filler = "x";
    filler += std::to_string(i);
    d.pieces.push_back(filler);
  }
  for (size_t i = 0; i < d.pieces.size(); ++i) d.scores.push_back(-static_cast<float>(i));
  d.unk_id = 0;
  d.bos_id = 1;
  d.eos_id = 2;
  d.special_ids = {1, 2};
  return d;
}

ModelConfig small_config(const std::string& arch = "llama") {
  ModelConfig c;
  c.architecture = arch;
  c.name = "synthetic-" + arch;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 300;
  c.max_seq_len = 256;
  c.norm_eps = 1e-6f;
  c.rope_theta = 500000.0f;
  c.rope_style = arch == "llama" ? RopeStyle::Interleaved : RopeStyle::HalfSplit;
  c.qkv_bias = arch == "qwen2";
  c.tied_embeddings = arch == "qwen2";
  return c;
}

Model synthetic_model(const ModelConfig& c, uint32_t seed) {
  Model m;
  m.config = c;
  m.path = "synthetic";
  m.format = "synthetic";
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.01f, 2.0f);
  auto matrix = [&](int64_t rows, int64_t cols) {
    auto buf = std::make_shared<std::vector<float>>(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      const float s = r == 1 ? 0.0f : scale(rng);  // an all-zero row exercises Q8_0's d = 0
      for (int64_t k = 0; k < cols; ++k) (*buf)[r * cols + k] = s * normal(rng);
    }
    m.storage.push_back(buf);
    return WeightMatrix{DType::F32, rows, cols, buf->data()};
  };
  auto vec = [&](int64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = 1.0f + 0.1f * normal(rng);
    return v;
  };
  m.token_embedding = matrix(c.vocab_size, c.dim);
  m.output = c.tied_embeddings ? m.token_embedding : matrix(c.vocab_size, c.dim);
  m.final_norm = vec(c.dim);
  m.layers.resize(c.n_layers);
  for (LayerWeights& l : m.layers) {
    l.attn_norm = vec(c.dim);
    l.wq = matrix(c.q_dim(), c.dim);
    l.wk = matrix(c.kv_dim(), c.dim);
    l.wv = matrix(c.kv_dim(), c.dim);
    l.wo = matrix(c.dim, c.q_dim());
    if (c.qkv_bias) {
      l.bq = vec(c.q_dim());
      l.bk = vec(c.kv_dim());
      l.bv = vec(c.kv_dim());
    }
    l.ffn_norm = vec(c.dim);
    l.w_gate = matrix(c.hidden_dim, c.dim);
    l.w_up = matrix(c.hidden_dim, c.dim);
    l.w_down = matrix(c.dim, c.hidden_dim);
  }
  m.tokenizer = Tokenizer(synthetic_tokenizer(c.vocab_size));
  m.validate();
  return m;
}

// Calls f(name, a, b) for every matrix pair of two models with the same config.
void for_each_matrix(const Model& a, const Model& b,
                     const std::function<void(const std::string&, const WeightMatrix&, const WeightMatrix&)>& f) {
  f("token_embedding", a.token_embedding, b.token_embedding);
  f("output", a.output, b.output);
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerWeights &x = a.layers[i], &y = b.layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    f(p + "wq", x.wq, y.wq);
    f(p + "wk", x.wk, y.wk);
    f(p + "wv", x.wv, y.wv);
    f(p + "wo", x.wo, y.wo);
    f(p + "w_gate", x.w_gate, y.w_gate);
    f(p + "w_up", x.w_up, y.w_up);
    f(p + "w_down", x.w_down, y.w_down);
  }
}

void expect_same_vectors(const Model& a, const Model& b) {
  EXPECT_EQ(a.final_norm, b.final_norm);
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_EQ(a.layers[i].attn_norm, b.layers[i].attn_norm) << i;
    EXPECT_EQ(a.layers[i].ffn_norm, b.layers[i].ffn_norm) << i;
    EXPECT_EQ(a.layers[i].bq, b.layers[i].bq) << i;
    EXPECT_EQ(a.layers[i].bk, b.layers[i].bk) << i;
    EXPECT_EQ(a.layers[i].bv, b.layers[i].bv) << i;
  }
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.hidden_dim, b.hidden_dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_seq_len, b.max_seq_len);
  EXPECT_FLOAT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_FLOAT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling, b.rope_scaling);
  EXPECT_FLOAT_EQ(a.rope_factor, b.rope_factor);
  EXPECT_FLOAT_EQ(a.rope_ntk_alpha, b.rope_ntk_alpha);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
}

// ---------------------------------------------------------------------------------------------
// dtype conversions

TEST(DType, F16RoundTripsEveryHalfAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  // Ties go to the even neighbour: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);               // rounds past the largest half: infinity
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // exactly half the smallest subnormal: even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
  // Against the compiler's own conversion on random values of every magnitude.
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t expected;
    std::memcpy(&expected, &h, 2);
    ASSERT_EQ(f32_to_f16(f), expected) << f;
  }
}

TEST(DType, Bf16AndQ8_0) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie -> even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(bf16_to_f32(0xC040), -3.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  EXPECT_EQ(dtype_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(dtype_bytes(DType::BF16, 3), 6u);
  EXPECT_THROW(dtype_bytes(DType::Q8_0, 33), Error);
  // One block: d = 0.5 (f16 0x3800), q = -16..15 -> values -8 .. 7.5.
  uint8_t block[kQ8BlockBytes] = {0x00, 0x38};
  for (int i = 0; i < 32; ++i) block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  float out[32];
  dequantize(DType::Q8_0, block, out, 32);
  EXPECT_EQ(out[0], -8.0f);
  EXPECT_EQ(out[31], 7.5f);
  // encode_f32 quantises as llama.cpp: d = max|x| / 127, q = round(x / d).
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = (i - 10) * 0.1f;
  const std::string q = encode_f32(x.data(), 32, DType::Q8_0);
  uint16_t d;
  std::memcpy(&d, q.data(), 2);
  EXPECT_EQ(d, f32_to_f16(2.1f / 127.0f));
  EXPECT_EQ(static_cast<int8_t>(q[2 + 31]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 0]), -60);  // -1.0 / (2.1 / 127) = -60.48
}

// ---------------------------------------------------------------------------------------------
// stories260K

TEST(Llama2c, Stories260KLoadsWithTheReadmeConfig) {
  SKIP_WITHOUT(kStories);
  EXPECT_EQ(detect_format(kStories), ModelFormat::Llama2c);
  const Model m = load_model(kStories);
  const ModelConfig& c = m.config;
  EXPECT_EQ(m.format, "llama2c");
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::Interleaved);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(m.output.data, m.token_embedding.data);
  EXPECT_EQ(m.tokenizer.vocab_size(), 512);

  // Weights point into the file: compare with floats read at their documented offsets.
  const std::string bytes = read_file(kStories);
  auto file_float = [&](size_t index) {
    float f;
    std::memcpy(&f, bytes.data() + 28 + 4 * index, 4);
    return f;
  };
  EXPECT_EQ(to_f32(m.token_embedding)[0], file_float(0));
  const size_t emb = 512 * 64, rms = 5 * 64;
  EXPECT_EQ(m.layers[0].attn_norm[0], file_float(emb));
  EXPECT_EQ(m.layers[4].attn_norm[63], file_float(emb + rms - 1));
  EXPECT_EQ(to_f32(m.layers[0].wq)[0], file_float(emb + rms));
  const size_t per_layer_attn = 64 * 64 + 2 * 64 * 32 + 64 * 64, per_layer_ffn = 3 * 64 * 172;
  const size_t final_norm = emb + rms + 5 * per_layer_attn + rms + 5 * per_layer_ffn;
  EXPECT_EQ(m.final_norm[0], file_float(final_norm));
  EXPECT_EQ(bytes.size(), 28 + 4 * (final_norm + 64 + 512 * 8));  // + freq_cis, nothing after: shared classifier

  // Bandwidth: all matrices + the output + one embedding row + norms, f32.
  const size_t expected = 4 * (64 + 512 * 64 + 64 + 5 * (per_layer_attn + per_layer_ffn + 2 * 64));
  EXPECT_EQ(m.weight_bytes_per_token(), expected);
}

TEST(Llama2c, MissingTokenizerNamesTheModel) {
  SKIP_WITHOUT(kStories);
  TempDir dir;
  const std::string copy = dir.file("model.bin");
  write_file_atomic(copy, read_file(kStories));
  expect_error([&] { load_model(copy); }, {copy, "tokenizer: missing", "tok512.bin", "tokenizer.bin"});
  // With tokenizer.bin beside it, it loads.
  write_file_atomic(dir.file("tokenizer.bin"), read_file(kShared + "/models/stories260K/tok512.bin"));
  EXPECT_EQ(load_model(copy).tokenizer.vocab_size(), 512);
}

TEST(Llama2c, TruncatedFile) {
  SKIP_WITHOUT(kStories);
  TempDir dir;
  const std::string cut = dir.file("stories_cut.bin");
  write_file_atomic(cut, read_file(kStories).substr(0, 500000));
  expect_error([&] { load_model(cut); }, {cut, "truncated", "llama2.c"});
  expect_error([&] { load_llama2c(cut); }, {cut, "truncated", "dim 64"});
}

TEST(Llama2c, UnsharedClassifierReadsTrailingWcls) {
  SKIP_WITHOUT(kStories);
  // Rewrite stories260K with a negative vocab size and a distinct trailing classifier.
  TempDir dir;
  std::string bytes = read_file(kStories);
  int32_t vocab = -512;
  std::memcpy(bytes.data() + 20, &vocab, 4);
  std::vector<float> wcls(512 * 64);
  for (size_t i = 0; i < wcls.size(); ++i) wcls[i] = static_cast<float>(i) * 0.001f;
  bytes.append(reinterpret_cast<const char*>(wcls.data()), wcls.size() * 4);
  const std::string path = dir.file("unshared.bin");
  write_file_atomic(path, bytes);
  write_file_atomic(dir.file("tok512.bin"), read_file(kShared + "/models/stories260K/tok512.bin"));
  EXPECT_EQ(detect_format(path), ModelFormat::Llama2c);
  const Model m = load_model(path);
  EXPECT_FALSE(m.config.tied_embeddings);
  EXPECT_EQ(to_f32(m.output), wcls);
  EXPECT_NE(to_f32(m.token_embedding), wcls);
}

// ---------------------------------------------------------------------------------------------
// GGUF

TEST(GgufWriter, MetadataOfEveryTypeAndAlignmentRoundTrip) {
  TempDir dir;
  GgufWriter w(64);
  GgufValue u8;
  u8.type = GgufType::Uint8;
  u8.integer = 250;
  GgufValue i16;
  i16.type = GgufType::Int16;
  i16.integer = -1234;
  GgufValue f64;
  f64.type = GgufType::Float64;
  f64.number = 3.141592653589793;
  GgufValue i64;
  i64.type = GgufType::Int64;
  i64.integer = -(int64_t{1} << 40);
  GgufValue nested;
  nested.type = GgufType::Array;
  nested.element_type = GgufType::Array;
  nested.items = {GgufValue::i32s({1, 2}), GgufValue::i32s({3})};
  w.set("t.u8", u8);
  w.set("t.i16", i16);
  w.set("t.u32", GgufValue::u32(4000000000u));
  w.set("t.i32", GgufValue::i32(-7));
  w.set("t.u64", GgufValue::u64(~uint64_t{0}));
  w.set("t.i64", i64);
  w.set("t.f32", GgufValue::f32(0.25f));
  w.set("t.f64", f64);
  w.set("t.bool", GgufValue::boolean(true));
  w.set("t.str", GgufValue::string("héllo"));
  w.set("t.strs", GgufValue::strings({"a", "", "ccc"}));
  w.set("t.f32s", GgufValue::f32s({1.5f, -2.0f}));
  w.set("t.nested", nested);
  const float v[3] = {1, 2, 3};
  w.add_tensor("a", {3}, DType::F32, v);
  w.add_tensor("b", {3}, DType::F16, v);
  const std::string path = dir.file("meta.gguf");
  w.write(path);

  const GgufFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.get_int("general.alignment"), 64);
  EXPECT_EQ(f.get_int("t.u8"), 250);
  EXPECT_EQ(f.get_int("t.i16"), -1234);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("t.i32"), -7);
  EXPECT_EQ(static_cast<uint64_t>(f.get_int("t.u64")), ~uint64_t{0});
  EXPECT_EQ(f.get_int("t.i64"), -(int64_t{1} << 40));
  EXPECT_EQ(f.get_float("t.f32"), 0.25);
  EXPECT_EQ(f.get_float("t.f64"), 3.141592653589793);
  EXPECT_TRUE(f.get_bool("t.bool", false));
  EXPECT_EQ(f.get_string("t.str"), "héllo");
  ASSERT_EQ(f.find("t.strs")->items.size(), 3u);
  EXPECT_EQ(f.find("t.strs")->items[2].text, "ccc");
  EXPECT_EQ(f.find("t.f32s")->items[1].number, -2.0);
  ASSERT_EQ(f.find("t.nested")->items.size(), 2u);
  EXPECT_EQ(f.find("t.nested")->items[0].items[1].integer, 2);
  EXPECT_EQ(f.find("t.nested")->items[1].element_type, GgufType::Int32);
  EXPECT_EQ(f.get_int("t.missing", 42), 42);
  expect_error([&] { f.get_int("t.missing"); }, {path, "t.missing: missing"});
  expect_error([&] { f.get_string("t.u8"); }, {path, "t.u8: expected a string, found UINT8"});
  ASSERT_EQ(f.tensors().size(), 2u);
  for (const GgufTensorInfo& t : f.tensors()) {
    EXPECT_EQ((t.data - f.mapping()->data()) % 64, 0) << t.name << " not aligned";
  }
  float back[3];
  dequantize(DType::F16, f.find_tensor("b")->data, back, 3);
  EXPECT_EQ(back[2], 3.0f);
}

class GgufRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(GgufRoundTrip, WeightsConfigAndTokenizerSurvive) {
  const DType type = GetParam();
  ModelConfig c = small_config("llama");
  c.rope_scaling = RopeScaling::NtkStatic;
  c.rope_factor = 4.0f;
  c.rope_ntk_alpha = 2.0f;
  const Model src = synthetic_model(c, 7);
  TempDir dir;
  const std::string path = dir.file(std::string("model_") + dtype_name(type) + ".gguf");
  save_gguf(src, path, type);
  EXPECT_EQ(detect_format(path), ModelFormat::Gguf);
  const Model back = load_model(path);
  EXPECT_EQ(back.format, "gguf");
  EXPECT_EQ(back.path, path);
  expect_same_config(src.config, back.config);
  EXPECT_EQ(back.config.rope_style, RopeStyle::Interleaved);
  expect_same_vectors(src, back);

  for_each_matrix(src, back, [&](const std::string& name, const WeightMatrix& a, const WeightMatrix& b) {
    ASSERT_EQ(b.dtype, type) << name;
    ASSERT_EQ(a.rows, b.rows) << name;
    ASSERT_EQ(a.cols, b.cols) << name;
    const std::vector<float> x = to_f32(a), y = to_f32(b);
    if (type != DType::Q8_0) {
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(round_to(type, x[i]), y[i]) << name << "[" << i << "]";
      return;
    }
    // Q8_0: within half a quantisation step of each 32-block (plus the f16 rounding of d).
    for (size_t blk = 0; blk < x.size() / kQ8BlockSize; ++blk) {
      float amax = 0;
      for (int i = 0; i < kQ8BlockSize; ++i) amax = std::max(amax, std::fabs(x[blk * kQ8BlockSize + i]));
      const float tol = 0.57f * amax / 127.0f;
      for (int i = 0; i < kQ8BlockSize; ++i) {
        const size_t k = blk * kQ8BlockSize + i;
        ASSERT_LE(std::fabs(x[k] - y[k]), tol) << name << "[" << k << "]";
      }
    }
  });

  const TokenizerData &ts = src.tokenizer.data(), &tb = back.tokenizer.data();
  EXPECT_EQ(tb.kind, TokenizerKind::SentencePiece);
  EXPECT_EQ(tb.pieces, ts.pieces);
  EXPECT_EQ(tb.scores, ts.scores);
  EXPECT_EQ(tb.special_ids, ts.special_ids);
  EXPECT_EQ(tb.bos_id, ts.bos_id);
  EXPECT_EQ(tb.eos_id, ts.eos_id);
  EXPECT_EQ(tb.unk_id, ts.unk_id);
  EXPECT_EQ(back.tokenizer.encode("the ant ran", true), src.tokenizer.encode("the ant ran", true));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, GgufRoundTrip, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(GgufConvert, Stories260KToGgufKeepsWeightsAndTokenizer) {
  SKIP_WITHOUT(kStories);
  const Model src = load_model(kStories);
  TempDir dir;
  const std::string path = dir.file("stories260K.gguf");
  save_gguf(src, path, DType::F32);
  const Model back = load_model(path);
  expect_same_config(src.config, back.config);
  EXPECT_EQ(back.config.rope_style, RopeStyle::Interleaved);  // already interleaved: no permutation
  EXPECT_EQ(GgufFile(path).find_tensor("output.weight"), nullptr) << "tied models have no output tensor";
  expect_same_vectors(src, back);
  for_each_matrix(src, back, [](const std::string& name, const WeightMatrix& a, const WeightMatrix& b) {
    ASSERT_EQ(a.bytes(), b.bytes()) << name;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.bytes()), 0) << name;
  });
  const std::string text = file_exists(kShared + "/data/tinystories/tinystories_sample.txt")
                               ? read_file(kShared + "/data/tinystories/tinystories_sample.txt").substr(0, 4000)
                               : std::string("Once upon a time, there was a little girl named Lily.");
  EXPECT_EQ(back.tokenizer.encode(text, true), src.tokenizer.encode(text, true));
  EXPECT_EQ(back.tokenizer.decode(back.tokenizer.encode(text, true)),
            src.tokenizer.decode(src.tokenizer.encode(text, true)));
}

TEST(GgufConvert, Stories260KToQ8_0FallsBackToF16ForOddWidths) {
  SKIP_WITHOUT(kStories);
  const Model src = load_model(kStories);
  TempDir dir;
  const std::string path = dir.file("stories260K-q8_0.gguf");
  save_gguf(src, path, DType::Q8_0);
  const Model back = load_model(path);
  EXPECT_EQ(back.layers[0].wq.dtype, DType::Q8_0);
  EXPECT_EQ(back.layers[0].w_down.dtype, DType::F16);  // 172 columns: not a multiple of 32
  const std::vector<float> a = to_f32(src.layers[0].wq), b = to_f32(back.layers[0].wq);
  float amax = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    amax = std::max(amax, std::fabs(a[i]));
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  }
  EXPECT_LE(worst, 0.57f * amax / 127.0f);
  EXPECT_LT(fs::file_size(path), fs::file_size(kStories) / 2);
}

// Applies RoPE at `pos` to every head of v, rotating the pairs of `style`.
void rope(std::vector<float>& v, int head_dim, int pos, RopeStyle style, float theta) {
  const int half = head_dim / 2;
  for (size_t h = 0; h < v.size() / head_dim; ++h) {
    float* x = v.data() + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      const int a = style == RopeStyle::Interleaved ? 2 * i : i;
      const int b = style == RopeStyle::Interleaved ? 2 * i + 1 : i + half;
      const float xa = x[a], xb = x[b];
      x[a] = static_cast<float>(xa * std::cos(angle) - xb * std::sin(angle));
      x[b] = static_cast<float>(xa * std::sin(angle) + xb * std::cos(angle));
    }
  }
}

std::vector<float> project(const WeightMatrix& w, const std::vector<float>& bias, const std::vector<float>& x) {
  const std::vector<float> m = to_f32(w);
  std::vector<float> out(w.rows);
  for (int64_t r = 0; r < w.rows; ++r) {
    double s = bias.empty() ? 0.0 : bias[r];
    for (int64_t k = 0; k < w.cols; ++k) s += static_cast<double>(m[r * w.cols + k]) * x[k];
    out[r] = static_cast<float>(s);
  }
  return out;
}

// Rotated q.k scores of every (query head, position pair): what attention sees.
std::vector<float> attention_scores(const Model& m, const std::vector<float>& x) {
  const ModelConfig& c = m.config;
  std::vector<float> scores;
  for (const LayerWeights& l : m.layers) {
    for (int pq : {0, 5, 37}) {
      for (int pk : {0, 3, 37}) {
        std::vector<float> q = project(l.wq, l.bq, x), k = project(l.wk, l.bk, x);
        rope(q, c.head_dim, pq, c.rope_style, c.rope_theta);
        rope(k, c.head_dim, pk, c.rope_style, c.rope_theta);
        for (int h = 0; h < c.n_heads; ++h) {
          const int kv = h / c.group_size();
          double s = 0;
          for (int d = 0; d < c.head_dim; ++d) s += q[h * c.head_dim + d] * k[kv * c.head_dim + d];
          scores.push_back(static_cast<float>(s));
        }
      }
    }
  }
  return scores;
}

void expect_same_attention(const Model& a, const Model& b) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> x(a.config.dim);
  for (float& v : x) v = normal(rng);
  const std::vector<float> sa = attention_scores(a, x), sb = attention_scores(b, x);
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_NEAR(sa[i], sb[i], 1e-3f * (1.0f + std::fabs(sa[i]))) << i;
}

TEST(GgufConvert, HalfSplitSourcePermutedForLlamaArchitecture) {
  ModelConfig c = small_config("llama");
  c.rope_style = RopeStyle::HalfSplit;  // as a Hugging Face Llama stores Q/K
  c.qkv_bias = true;                    // biases must move with their rows
  const Model src = synthetic_model(c, 11);
  TempDir dir;
  const std::string path = dir.file("hf_llama.gguf");
  save_gguf(src, path, DType::F32);
  const Model back = load_model(path);
  EXPECT_EQ(back.config.rope_style, RopeStyle::Interleaved);
  // llama.cpp's permutation: within a head, new row 2i+s = old row s*d/2 + i.
  const std::vector<float> q0 = to_f32(src.layers[0].wq), q1 = to_f32(back.layers[0].wq);
  const int d = c.head_dim, cols = c.dim;
  for (int h = 0; h < c.n_heads; ++h) {
    for (int i = 0; i < d / 2; ++i) {
      for (int s = 0; s < 2; ++s) {
        EXPECT_EQ(q1[(h * d + 2 * i + s) * cols + 3], q0[(h * d + s * d / 2 + i) * cols + 3]);
      }
    }
  }
  EXPECT_NE(q0, q1);
  EXPECT_EQ(to_f32(back.layers[0].wv), to_f32(src.layers[0].wv));  // V is not rotated: unchanged
  expect_same_attention(src, back);
}

TEST(GgufConvert, Qwen2KeepsHalfSplitBiasesAndTiedEmbeddings) {
  const Model src = synthetic_model(small_config("qwen2"), 5);
  TempDir dir;
  const std::string path = dir.file("qwen2.gguf");
  save_gguf(src, path, DType::F32);
  const Model back = load_model(path);
  expect_same_config(src.config, back.config);
  EXPECT_EQ(back.config.rope_style, RopeStyle::HalfSplit);
  EXPECT_EQ(back.output.data, back.token_embedding.data);
  expect_same_vectors(src, back);
  expect_same_attention(src, back);
  // An interleaved source written as qwen2 gets the inverse permutation and still attends alike.
  ModelConfig c = small_config("qwen2");
  c.rope_style = RopeStyle::Interleaved;
  const Model interleaved = synthetic_model(c, 6);
  save_gguf(interleaved, path, DType::F32);
  const Model back2 = load_model(path);
  EXPECT_EQ(back2.config.rope_style, RopeStyle::HalfSplit);
  expect_same_attention(interleaved, back2);
}

// Copies a GGUF file, letting `replace` add its own version of some tensors (returns true when it did).
void rewrite_gguf(const std::string& src, const std::string& dst,
                  const std::function<bool(GgufWriter&, const GgufTensorInfo&)>& replace,
                  const std::vector<std::string>& drop_keys = {}) {
  const GgufFile f(src);
  GgufWriter w(f.alignment());
  for (const auto& [key, value] : f.metadata()) {
    if (std::find(drop_keys.begin(), drop_keys.end(), key) == drop_keys.end()) w.set(key, value);
  }
  for (const GgufTensorInfo& t : f.tensors()) {
    if (!replace(w, t)) w.add_tensor(t.name, t.ne, t.type, std::string(reinterpret_cast<const char*>(t.data), t.bytes));
  }
  w.write(dst);
}

class GgufErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = dir_.file("good.gguf");
    save_gguf(synthetic_model(small_config("llama"), 1), good_, DType::F32);
  }
  TempDir dir_;
  std::string good_;
};

TEST_F(GgufErrors, TruncatedData) {
  const std::string bytes = read_file(good_);
  const std::string path = dir_.file("cut.gguf");
  write_file_atomic(path, bytes.substr(0, bytes.size() / 2));
  expect_error([&] { load_model(path); }, {path + ": truncated", "tensor "});
}

TEST_F(GgufErrors, TruncatedHeader) {
  const std::string path = dir_.file("cut_header.gguf");
  write_file_atomic(path, read_file(good_).substr(0, 60));
  expect_error([&] { load_model(path); }, {path + ": truncated"});
  write_file_atomic(path, "GGUF");
  expect_error([&] { load_model(path); }, {path + ": truncated", "version"});
}

TEST_F(GgufErrors, WrongMagicAndVersion) {
  std::string bytes = read_file(good_);
  bytes[3] = 'X';
  const std::string path = dir_.file("magic.gguf");
  write_file_atomic(path, bytes);
  expect_error([&] { load_gguf(path); }, {path, "wrong magic"});
  EXPECT_EQ(detect_format(path), ModelFormat::Unknown);
  expect_error([&] { load_model(path); }, {path, "unknown model format"});
  bytes[3] = 'F';
  bytes[4] = 1;  // version 1 used 32-bit counts: refused
  write_file_atomic(path, bytes);
  expect_error([&] { load_model(path); }, {path, "version: 1 is not supported"});
}

TEST_F(GgufErrors, UnsupportedTensorType) {
  const std::string path = dir_.file("q2k.gguf");
  rewrite_gguf(good_, path, [](GgufWriter& w, const GgufTensorInfo& t) {
    if (t.name != "blk.0.attn_q.weight") return false;
    constexpr uint32_t kQ2_K = 10;  // 2-bit K-quant: not loaded (84 bytes per 256 weights)
    w.add_tensor(t.name, t.ne, kQ2_K, std::string(t.ne[0] * t.ne[1] * 84 / 256, '\0'));
    return true;
  });
  expect_error([&] { load_model(path); }, {path + ": tensor blk.0.attn_q.weight: unsupported type Q2_K"});
}

TEST_F(GgufErrors, ShapeMismatch) {
  const std::string path = dir_.file("shape.gguf");
  rewrite_gguf(good_, path, [](GgufWriter& w, const GgufTensorInfo& t) {
    if (t.name != "blk.0.attn_q.weight") return false;
    std::vector<float> v(64 * 32, 0.5f);  // 32 rows where the config needs 64
    w.add_tensor(t.name, {64, 32}, DType::F32, v.data());
    return true;
  });
  expect_error([&] { load_model(path); }, {path + ": tensor blk.0.attn_q.weight: shape [64, 32], expected [64, 64]"});
}

TEST_F(GgufErrors, MissingTensorAndTokenizer) {
  const std::string no_norm = dir_.file("no_norm.gguf");
  rewrite_gguf(good_, no_norm, [](GgufWriter&, const GgufTensorInfo& t) { return t.name == "blk.1.ffn_norm.weight"; });
  expect_error([&] { load_model(no_norm); }, {no_norm + ": tensor blk.1.ffn_norm.weight: missing"});
  const std::string no_tok = dir_.file("no_tokenizer.gguf");
  rewrite_gguf(good_, no_tok, [](GgufWriter&, const GgufTensorInfo&) { return false; }, {"tokenizer.ggml.model"});
  expect_error([&] { load_model(no_tok); }, {no_tok + ": tokenizer.ggml.model: missing"});
  const std::string no_dim = dir_.file("no_dim.gguf");
  rewrite_gguf(good_, no_dim, [](GgufWriter&, const GgufTensorInfo&) { return false; }, {"llama.embedding_length"});
  expect_error([&] { load_model(no_dim); }, {no_dim + ": llama.embedding_length: missing"});
}

TEST_F(GgufErrors, EveryTruncationIsAnErrorNotACrash) {
  const std::string bytes = read_file(good_);
  const std::string path = dir_.file("sweep.gguf");
  const GgufFile f(good_);
  const size_t data_start = static_cast<size_t>(f.tensors().front().data - f.mapping()->data());
  // Every length through the header and metadata, then a stride through the tensor data.
  std::vector<size_t> lengths;
  for (size_t n = 0; n < data_start + 64; n += 3) lengths.push_back(n);
  for (size_t n = data_start + 64; n < bytes.size(); n += bytes.size() / 50) lengths.push_back(n);
  for (size_t n : lengths) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, n);  // no fsync: hundreds of files
    try {
      load_gguf(path);
      ADD_FAILURE() << "length " << n << " loaded";
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
    }
  }
}

// Overwrites the data offset in the tensor-info entry of `name` (name, n_dims, shape, type, offset).
void patch_tensor_offset(std::string& bytes, const std::string& name, uint64_t offset) {
  std::string key(8, '\0');
  const uint64_t len = name.size();
  std::memcpy(key.data(), &len, 8);
  key += name;
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  uint32_t n_dims;
  std::memcpy(&n_dims, bytes.data() + at + key.size(), 4);
  std::memcpy(bytes.data() + at + key.size() + 4 + 8 * n_dims + 4, &offset, 8);
}

TEST_F(GgufErrors, TensorOffsetNearTwoTo64DoesNotWrap) {
  // Offsets that wrapped `data_start + offset + bytes` back into the file (a crash in dequantize,
  // or a tensor silently read from the header).
  for (const uint64_t offset : {~uint64_t{0} - 65535, ~uint64_t{0} - 31}) {
    std::string bytes = read_file(good_);
    patch_tensor_offset(bytes, "output_norm.weight", offset);
    const std::string path = dir_.file("offset.gguf");
    write_file_atomic(path, bytes);
    expect_error([&] { GgufFile f(path); },
                 {path + ": truncated: tensor output_norm.weight offset " + std::to_string(offset)});
    expect_error([&] { load_model(path); }, {path + ": truncated: tensor output_norm.weight"});
  }
}

TEST_F(GgufErrors, ImpossibleHyperParametersNameTheKey) {
  auto with = [&](const std::string& key, GgufValue value, const std::string& type = "") {
    const std::string path = dir_.file("hyper.gguf");
    rewrite_gguf(good_, path, [](GgufWriter&, const GgufTensorInfo&) { return false; }, {key});
    GgufFile f(path);
    GgufWriter w(f.alignment());
    for (const auto& [k, v] : f.metadata()) w.set(k, v);
    w.set(key, std::move(value));
    if (!type.empty()) w.set("llama.rope.scaling.type", GgufValue::string(type));
    for (const GgufTensorInfo& t : f.tensors())
      w.add_tensor(t.name, t.ne, t.type, std::string(reinterpret_cast<const char*>(t.data), t.bytes));
    w.write(path);
    return path;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const float eps : {nan, -1e-5f}) {
    const std::string path = with("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(eps));
    expect_error([&] { load_model(path); }, {path + ": llama.attention.layer_norm_rms_epsilon: ", "finite"});
  }
  for (const float base : {0.0f, inf, nan}) {
    const std::string path = with("llama.rope.freq_base", GgufValue::f32(base));
    expect_error([&] { load_model(path); }, {path + ": llama.rope.freq_base: "});
  }
  std::string path = with("llama.rope.scaling.factor", GgufValue::f32(0.0f), "linear");
  expect_error([&] { load_model(path); }, {path + ": llama.rope.scaling.factor: 0 is not a positive"});
  path = with("tokenizer.ggml.bos_token_id", GgufValue::i32(-5));
  expect_error([&] { load_model(path); }, {path + ": tokenizer.ggml.bos_token_id: negative id -5"});
}

TEST(ModelValidate, RejectsNonFiniteHyperParameters) {
  Model m = synthetic_model(small_config("llama"), 2);
  m.path = "built.gguf";
  m.config.norm_eps = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { m.validate(); }, {"built.gguf: config.norm_eps: nan"});
  m.config.norm_eps = 1e-5f;
  m.config.rope_scaling = RopeScaling::Linear;
  m.config.rope_factor = 0;
  expect_error([&] { m.validate(); }, {"built.gguf: config.rope_factor"});
}

TEST(ModelValidate, NamesTheTensorAndShape) {
  Model m = synthetic_model(small_config("llama"), 2);
  m.path = "somewhere.gguf";
  m.layers[1].wk.rows = 16;
  expect_error([&] { m.validate(); }, {"somewhere.gguf: layers.1.wk: shape [16 x 64], expected [32 x 64]"});
  m.layers[1].wk.rows = 32;
  m.final_norm.pop_back();
  expect_error([&] { m.validate(); }, {"somewhere.gguf: final_norm: length 63, expected 64"});
}

// ---------------------------------------------------------------------------------------------
// Hugging Face directories

struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes a safetensors file; `pad` extra header spaces make the data start at an odd offset.
void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors, size_t pad) {
  json header = json::object();
  size_t offset = 0;
  std::string data;
  for (const StTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
    data += t.bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.append(pad, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  write_file_atomic(path, out + text + data);
}

std::string encoded(const WeightMatrix& w, DType t) { return encode_f32(to_f32(w).data(), w.rows * w.cols, t); }
std::string encoded(const std::vector<float>& v, DType t) {
  return encode_f32(v.data(), static_cast<int64_t>(v.size()), t);
}

// The model's tensors under Hugging Face names; matrices in `type`, norms and biases F32.
std::vector<StTensor> hf_tensors(const Model& m, DType type) {
  const std::string st = type == DType::F32 ? "F32" : type == DType::F16 ? "F16" : "BF16";
  std::vector<StTensor> out;
  auto mat = [&](const std::string& name, const WeightMatrix& w) {
    out.push_back({name, st, {w.rows, w.cols}, encoded(w, type)});
  };
  auto vec = [&](const std::string& name, const std::vector<float>& v) {
    out.push_back({name, "F32", {static_cast<int64_t>(v.size())}, encoded(v, DType::F32)});
  };
  mat("model.embed_tokens.weight", m.token_embedding);
  if (!m.config.tied_embeddings) mat("lm_head.weight", m.output);
  vec("model.norm.weight", m.final_norm);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerWeights& l = m.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    vec(p + "input_layernorm.weight", l.attn_norm);
    vec(p + "post_attention_layernorm.weight", l.ffn_norm);
    mat(p + "self_attn.q_proj.weight", l.wq);
    mat(p + "self_attn.k_proj.weight", l.wk);
    mat(p + "self_attn.v_proj.weight", l.wv);
    mat(p + "self_attn.o_proj.weight", l.wo);
    if (!l.bq.empty()) {
      vec(p + "self_attn.q_proj.bias", l.bq);
      vec(p + "self_attn.k_proj.bias", l.bk);
      vec(p + "self_attn.v_proj.bias", l.bv);
    }
    mat(p + "mlp.gate_proj.weight", l.w_gate);
    mat(p + "mlp.up_proj.weight", l.w_up);
    mat(p + "mlp.down_proj.weight", l.w_down);
  }
  return out;
}

json hf_config(const ModelConfig& c) {
  return {{"model_type", c.architecture},
          {"hidden_size", c.dim},
          {"intermediate_size", c.hidden_dim},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"vocab_size", c.vocab_size},
          {"max_position_embeddings", c.max_seq_len},
          {"rms_norm_eps", c.norm_eps},
          {"rope_theta", c.rope_theta},
          {"tie_word_embeddings", c.tied_embeddings},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"rope_scaling", nullptr}};
}

// A byte-level BPE tokenizer.json (GPT-2 style) over the 256 byte characters plus a few merges.
json byte_level_tokenizer_json() {
  json vocab = json::object();
  int id = 0;
  auto byte_char = [](int b) {
    const auto printable = [](int x) {
      return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
    };
    int cp = b;
    if (!printable(b)) {
      cp = 256;
      for (int x = 0; x < b; ++x) cp += printable(x) ? 0 : 1;
    }
    std::string s;
    if (cp < 0x80) return std::string(1, static_cast<char>(cp));
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
    return s;
  };
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = id++;
  const std::string G = byte_char(' ');
  vocab[G + "t"] = id++;
  vocab["he"] = id++;
  vocab[G + "the"] = id++;
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", id}, {"content", "<|endoftext|>"}, {"special", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {G + " t", json::array({"h", "e"}), G + "t he"}}}}};
}

void write_hf_dir(const std::string& dir, const Model& m, DType type, size_t pad) {
  write_file_atomic(dir + "/config.json", hf_config(m.config).dump(2));
  write_safetensors(dir + "/model.safetensors", hf_tensors(m, type), pad);
  write_file_atomic(dir + "/tokenizer.json", byte_level_tokenizer_json().dump());
  write_file_atomic(dir + "/tokenizer_config.json",
                    json{{"bos_token", "<|endoftext|>"}, {"eos_token", {{"content", "<|endoftext|>"}}}}.dump());
}

Model hf_source(const std::string& arch, uint32_t seed) {
  ModelConfig c = small_config(arch);
  c.rope_style = RopeStyle::HalfSplit;
  return synthetic_model(c, seed);
}

TEST(Safetensors, LlamaDirectoryLoads) {
  const Model src = hf_source("llama", 21);
  TempDir dir;
  write_hf_dir(dir.path(), src, DType::BF16, 3);  // odd header: data not 2-aligned, copied on load
  EXPECT_EQ(detect_format(dir.path()), ModelFormat::Safetensors);
  EXPECT_EQ(detect_format(dir.file("model.safetensors")), ModelFormat::Safetensors);
  for (const std::string& path : {dir.path(), dir.file("model.safetensors")}) {
    const Model m = load_model(path);
    EXPECT_EQ(m.format, "safetensors");
    EXPECT_EQ(m.config.rope_style, RopeStyle::HalfSplit);
    EXPECT_FALSE(m.config.tied_embeddings);
    EXPECT_EQ(m.config.dim, 64);
    EXPECT_EQ(m.config.head_dim, 16);
    expect_same_vectors(src, m);
    for_each_matrix(src, m, [](const std::string& name, const WeightMatrix& a, const WeightMatrix& b) {
      ASSERT_EQ(b.dtype, DType::BF16) << name;
      ASSERT_EQ(reinterpret_cast<uintptr_t>(b.data) % 2, 0u) << name;
      const std::vector<float> x = to_f32(a), y = to_f32(b);
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(round_to(DType::BF16, x[i]), y[i]) << name;
    });
    const TokenizerData& t = m.tokenizer.data();
    EXPECT_EQ(t.kind, TokenizerKind::ByteLevelBPE);
    EXPECT_EQ(t.pre_tokenizer, "gpt2");
    EXPECT_EQ(t.bos_id, 259);
    EXPECT_EQ(t.eos_id, 259);
    EXPECT_EQ(t.special_ids, std::vector<int32_t>{259});
    EXPECT_EQ(m.tokenizer.encode(" the", false), std::vector<int32_t>{258});
    EXPECT_EQ(m.tokenizer.decode(m.tokenizer.encode("tothe the", true)), "tothe the");
  }
}

TEST(Safetensors, ShardedQwen2WithBiasAndTiedEmbeddings) {
  const Model src = hf_source("qwen2", 22);
  TempDir dir;
  write_hf_dir(dir.path(), src, DType::F16, 0);
  // Split the tensors over two shards listed in the index.
  std::vector<StTensor> all = hf_tensors(src, DType::F16);
  const std::vector<StTensor> first(all.begin(), all.begin() + all.size() / 2),
      second(all.begin() + all.size() / 2, all.end());
  fs::remove(dir.file("model.safetensors"));
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), first, 5);
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), second, 0);
  json map = json::object();
  for (const StTensor& t : first) map[t.name] = "model-00001-of-00002.safetensors";
  for (const StTensor& t : second) map[t.name] = "model-00002-of-00002.safetensors";
  write_file_atomic(dir.file("model.safetensors.index.json"), json{{"weight_map", map}}.dump());

  const Model m = load_model(dir.path());
  EXPECT_EQ(m.config.architecture, "qwen2");
  EXPECT_TRUE(m.config.qkv_bias);
  EXPECT_TRUE(m.config.tied_embeddings);
  EXPECT_EQ(m.output.data, m.token_embedding.data);
  expect_same_vectors(src, m);
  EXPECT_EQ(m.layers[1].w_down.dtype, DType::F16);
}

TEST(Safetensors, RopeScalingVariants) {
  TempDir dir;
  ModelConfig c = small_config("llama");
  json config = hf_config(c);
  config["rope_scaling"] = {{"type", "dynamic"}, {"override", "ntk"}, {"factor", 4.0}, {"alpha", 2.0}};
  write_file_atomic(dir.file("config.json"), config.dump());
  ModelConfig r = read_hf_config(dir.path());
  EXPECT_EQ(r.rope_scaling, RopeScaling::NtkStatic);
  EXPECT_FLOAT_EQ(r.rope_factor, 4.0f);
  EXPECT_FLOAT_EQ(r.rope_ntk_alpha, 2.0f);
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 8192}};
  write_file_atomic(dir.file("config.json"), config.dump());
  r = read_hf_config(dir.path());
  EXPECT_EQ(r.rope_scaling, RopeScaling::Llama3);
  EXPECT_FLOAT_EQ(r.rope_factor, 8.0f);
  EXPECT_EQ(r.rope_original_context, 8192);
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  write_file_atomic(dir.file("config.json"), config.dump());
  EXPECT_EQ(read_hf_config(dir.path()).rope_scaling, RopeScaling::Linear);
  config["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  write_file_atomic(dir.file("config.json"), config.dump());
  expect_error([&] { read_hf_config(dir.path()); }, {dir.file("config.json"), "rope_scaling", "dynamic"});
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  write_file_atomic(dir.file("config.json"), config.dump());
  expect_error([&] { read_hf_config(dir.path()); }, {"rope_scaling: unsupported type 'yarn'"});
}

TEST(Safetensors, SentencePieceStyleTokenizerJson) {
  TempDir dir;
  const std::string sp = "\xE2\x96\x81";
  json vocab = {{"<unk>", 0}, {"<s>", 1},    {"</s>", 2}, {sp, 3},       {"a", 4},
                {"b", 5},     {sp + "a", 6}, {"ab", 7},   {sp + "ab", 8}};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    vocab[hex] = 9 + b;
  }
  const json tok = {
      {"added_tokens",
       {{{"id", 1}, {"content", "<s>"}, {"special", true}}, {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer",
       {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", sp}}, {{"type", "Replace"}}}}}},
      {"pre_tokenizer", nullptr},
      {"model",
       {{"type", "BPE"},
        {"byte_fallback", true},
        {"unk_token", "<unk>"},
        {"vocab", vocab},
        {"merges", {"a b", sp + " a", sp + " ab"}}}}};
  write_file_atomic(dir.file("tokenizer.json"), tok.dump());
  write_file_atomic(dir.file("config.json"), hf_config(small_config("llama")).dump());
  const Tokenizer t(load_hf_tokenizer(dir.path()));
  EXPECT_EQ(t.data().kind, TokenizerKind::SentencePiece);
  EXPECT_TRUE(t.data().add_space_prefix);
  EXPECT_EQ(t.bos_id(), 1);  // from config.json (no tokenizer_config.json)
  EXPECT_EQ(t.eos_id(), 2);
  // "▁ab": a b (rank 0) first, then ▁ ab (rank 2) -> "▁ab"; "é" falls back to bytes C3 A9.
  EXPECT_EQ(t.encode("ab é", false), (std::vector<int32_t>{8, 3, 9 + 0xC3, 9 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("ab é", true)), "ab é");
}

// Found by fuzz_tokenizer_json (542,000 executions, 2026-12-01): an added token whose id is a string
// escaped as nlohmann's type_error instead of a nammkit::Error naming the file and the field.
TEST(Safetensors, MalformedAddedTokensNameTheField) {
  TempDir dir;
  const std::string path = dir.file("tokenizer.json");
  auto expect_refused = [&](const json& added, const std::string& piece) {
    const json tok = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", json::array()}}},
                      {"added_tokens", added}};
    write_file_atomic(path, tok.dump());
    expect_error([&] { load_hf_tokenizer(dir.path()); }, {path + ": " + piece});
  };
  expect_refused({{{"id", "<s>"}, {"special", true}}}, "added_tokens[0].id: expected an integer, found \"<s>\"");
  expect_refused({{{"content", "<s>"}}}, "added_tokens[0].id: expected an integer, found none");
  expect_refused({{{"id", 1}, {"content", 5}}}, "added_tokens[0].content: expected a string");
  expect_refused({{{"id", 1}, {"content", "<s>"}, {"special", "yes"}}},
                 "added_tokens[0].special: expected true or false");
  expect_refused({7}, "added_tokens[0]: expected an object");
}

// Also found by fuzz_tokenizer_json (332,666 executions): a non-string "type" threw nlohmann's type_error.
TEST(Safetensors, NonStringTypesInTokenizerJsonAreErrors) {
  TempDir dir;
  write_file_atomic(dir.file("tokenizer.json"), R"({"model": {"type": {"ao": 0}, "merypes": "ByteeL@lev"}})");
  expect_error([&] { load_hf_tokenizer(dir.path()); }, {"tokenizer.json: type: expected a string, found {\"ao\":0}"});
  write_file_atomic(dir.file("tokenizer.json"),
                    R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": "yes"}})");
  expect_error([&] { load_hf_tokenizer(dir.path()); }, {"tokenizer.json: byte_fallback: expected true or false"});
}

TEST(Safetensors, HfLlamaConvertsToGgufWithPermutedQK) {
  const Model src = hf_source("llama", 23);
  TempDir dir;
  write_hf_dir(dir.path(), src, DType::F32, 0);
  const Model hf = load_model(dir.path());
  const std::string path = dir.file("converted.gguf");
  save_gguf(hf, path, DType::F32);
  const Model back = load_model(path);
  EXPECT_EQ(back.config.rope_style, RopeStyle::Interleaved);
  EXPECT_EQ(back.tokenizer.data().pre_tokenizer, "gpt2");
  EXPECT_EQ(back.tokenizer.encode(" the the", true), hf.tokenizer.encode(" the the", true));
  expect_same_attention(hf, back);
}

TEST(Safetensors, Errors) {
  const Model src = hf_source("llama", 24);
  TempDir dir;
  write_hf_dir(dir.path(), src, DType::F32, 0);
  fs::remove(dir.file("tokenizer.json"));
  expect_error([&] { load_model(dir.path()); }, {dir.path() + ": tokenizer.json: missing"});

  write_file_atomic(dir.file("tokenizer.json"), byte_level_tokenizer_json().dump());
  std::vector<StTensor> tensors = hf_tensors(src, DType::F32);
  for (StTensor& t : tensors) {
    if (t.name == "model.layers.0.self_attn.q_proj.weight") t.dtype = "I32";  // same byte size as F32
  }
  write_safetensors(dir.file("model.safetensors"), tensors, 0);
  expect_error(
      [&] { load_model(dir.path()); },
      {dir.file("model.safetensors") + ": tensor model.layers.0.self_attn.q_proj.weight: unsupported dtype I32"});

  tensors = hf_tensors(src, DType::F32);
  for (StTensor& t : tensors) {
    if (t.name == "model.layers.1.mlp.down_proj.weight") t.shape = {96, 64};  // transposed
  }
  write_safetensors(dir.file("model.safetensors"), tensors, 0);
  expect_error([&] { load_model(dir.path()); },
               {dir.file("model.safetensors") +
                ": tensor model.layers.1.mlp.down_proj.weight: shape [96, 64], expected [64, 96]"});

  const std::string whole = read_file(dir.file("model.safetensors"));
  write_file_atomic(dir.file("model.safetensors"), whole.substr(0, whole.size() - 100));
  expect_error([&] { load_model(dir.path()); }, {dir.file("model.safetensors") + ": truncated"});
}

TEST(Safetensors, HugeDataOffsetIsReportedUnwrapped) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const uint64_t end = ~uint64_t{0} - 7;
  json header = {{"w", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {end - 8, end}}}}};
  const std::string text = header.dump();
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  write_file_atomic(path, out + text + std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(path); },
               {path + ": truncated: tensor w data_offsets end " + std::to_string(end) + " lies beyond the 8 bytes"});
  header = {{"w", {{"dtype", "F32"}, {"shape", {1 << 30, 1 << 30, 1 << 30}}, {"data_offsets", {0, 8}}}}};
  const std::string text2 = header.dump();
  const uint64_t n2 = text2.size();
  std::memcpy(out.data(), &n2, 8);
  write_file_atomic(path, out + text2 + std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(path); }, {path + ": tensor w: too many elements"});
}

// Found by fuzz_safetensors (1.2 M executions, 2026-12-01): a shape entry beyond 2^64 parses as a JSON
// float, and converting it to an integer was undefined behaviour (UBSan); negative offsets wrapped.
TEST(Safetensors, NonIntegerShapesAndNegativeOffsetsAreRefused) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  auto write_header = [&](const std::string& text) {
    std::string out(8, '\0');
    const uint64_t n = text.size();
    std::memcpy(out.data(), &n, 8);
    write_file_atomic(path, out + text + std::string(8, '\0'));
  };
  write_header(R"({"a": {"dtype": "F32", "shape": [1099511627776, 109951162099511627776], "data_offsets": [0, 8]}})");
  expect_error([&] { SafetensorsFile f(path); },
               {path + ": tensor a: shape: expected integers, found 1.099511620995116"});
  write_header(R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})");
  expect_error([&] { SafetensorsFile f(path); }, {path + ": tensor a: shape: expected integers, found 2.5"});
  write_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})");
  expect_error([&] { SafetensorsFile f(path); },
               {path + ": tensor a: data_offsets: expected non-negative integers, found -8"});
  write_header(R"({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})");
  expect_error([&] { SafetensorsFile f(path); }, {path + ": tensor a: shape: expected an array of integers, found 2"});
}

TEST(Safetensors, ImpossibleHyperParametersNameTheKey) {
  const Model src = hf_source("llama", 25);
  TempDir dir;
  write_hf_dir(dir.path(), src, DType::F32, 0);
  const std::string config_path = dir.file("config.json");
  const json good = hf_config(src.config);
  auto expect_refused = [&](json config, const std::string& piece) {
    write_file_atomic(config_path, config.dump());
    expect_error([&] { load_model(dir.path()); }, {config_path + ": " + piece});
  };
  json c = good;
  c["rms_norm_eps"] = -1e-6;
  expect_refused(c, "rms_norm_eps: -1e-06 is not a non-negative finite number");
  c = good;
  c["rope_theta"] = 0;
  expect_refused(c, "rope_theta: 0 is not a positive finite number");
  c = good;
  c["rope_scaling"] = {{"type", "linear"}, {"factor", 0.0}};
  expect_refused(c, "rope_scaling.factor: 0");
  c = good;
  c["bos_token_id"] = -5;
  write_file_atomic(dir.file("tokenizer_config.json"), json{{"eos_token", "<|endoftext|>"}}.dump());
  expect_refused(c, "bos_token_id: id -5 outside the vocabulary");
}

TEST(Safetensors, TokenizerIdBeyondTheVocabularyIsRefusedBeforeAllocating) {
  const Model src = hf_source("llama", 26);
  TempDir dir;
  write_hf_dir(dir.path(), src, DType::F32, 0);
  json tok = byte_level_tokenizer_json();
  tok["added_tokens"][0]["id"] = 1 << 24;
  write_file_atomic(dir.file("tokenizer.json"), tok.dump());
  expect_error([&] { load_model(dir.path()); },
               {dir.file("tokenizer.json") + ": token '<|endoftext|>': id 16777216 out of range"});
}

TEST(Llama2c, ZeroOrNegativeDimensionNamesTheField) {
  TempDir dir;
  const std::string path = dir.file("broken.bin");
  for (const int32_t dim : {0, -64}) {
    const int32_t header[7] = {dim, 172, 5, 8, 4, 512, 512};
    write_file_atomic(path,
                      std::string(reinterpret_cast<const char*>(header), sizeof(header)) + std::string(4096, '\0'));
    expect_error([&] { load_model(path); }, {path + ": llama2.c header: dim " + std::to_string(dim) + " out of range"});
  }
}

// ---------------------------------------------------------------------------------------------
// Detection and dispatch

TEST(Loader, DetectsAndRejects) {
  TempDir dir;
  EXPECT_STREQ(format_name(ModelFormat::Gguf), "gguf");
  EXPECT_STREQ(format_name(ModelFormat::Llama2c), "llama2c");
  const std::string junk = dir.file("junk.bin");
  write_file_atomic(junk, std::string(1000, '\x07'));
  EXPECT_EQ(detect_format(junk), ModelFormat::Unknown);
  expect_error([&] { load_model(junk); }, {junk, "unknown model format"});
  EXPECT_EQ(detect_format(dir.path()), ModelFormat::Unknown);
  expect_error([&] { load_model(dir.path()); }, {dir.path(), "config.json: missing"});
  expect_error([&] { load_model(dir.file("nope.gguf")); }, {dir.file("nope.gguf"), "no such file"});
}

// ---------------------------------------------------------------------------------------------
// Fixtures written by tools/reference (PyTorch), when present.

#define SKIP_WITHOUT_FIXTURE(path) \
  if (!file_exists(path)) GTEST_SKIP() << "fixture missing: " << (path) << " (tools/reference/make_fixtures.py)"

void expect_tiny_config(const ModelConfig& c) {
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.hidden_dim, 160);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 256);
}

TEST(LoaderFixtures, HuggingFaceDirectories) {
  const std::string llama = kFixtures + "/tiny_llama_hf";
  SKIP_WITHOUT_FIXTURE(llama);
  const Model m = load_model(llama);
  expect_tiny_config(m.config);
  EXPECT_EQ(m.config.architecture, "llama");
  EXPECT_EQ(m.config.rope_style, RopeStyle::HalfSplit);
  EXPECT_FLOAT_EQ(m.config.rope_theta, 1e4f);
  EXPECT_FLOAT_EQ(m.config.norm_eps, 1e-5f);
  EXPECT_FALSE(m.config.tied_embeddings);
  EXPECT_FALSE(m.config.qkv_bias);
  EXPECT_EQ(m.layers[0].wq.dtype, DType::F32);

  const std::string qwen = kFixtures + "/tiny_qwen2_hf";
  SKIP_WITHOUT_FIXTURE(qwen);
  const Model q = load_model(qwen);
  expect_tiny_config(q.config);
  EXPECT_EQ(q.config.architecture, "qwen2");
  EXPECT_TRUE(q.config.qkv_bias);
  EXPECT_TRUE(q.config.tied_embeddings);
  EXPECT_EQ(q.output.data, q.token_embedding.data);
  EXPECT_FLOAT_EQ(q.config.rope_theta, 1e6f);
  EXPECT_FLOAT_EQ(q.config.norm_eps, 1e-6f);

  const std::string bf16 = kFixtures + "/tiny_llama_bf16_hf";
  SKIP_WITHOUT_FIXTURE(bf16);
  const Model b = load_model(bf16);
  EXPECT_EQ(b.layers[1].w_down.dtype, DType::BF16);
  EXPECT_NEAR(b.final_norm[5], m.final_norm[5], 1e-2f * std::fabs(m.final_norm[5]));  // BF16 norms widened

  const std::string lin = kFixtures + "/tiny_llama_linrope_hf";
  SKIP_WITHOUT_FIXTURE(lin);
  const Model l = load_model(lin);
  EXPECT_EQ(l.config.rope_scaling, RopeScaling::Linear);
  EXPECT_FLOAT_EQ(l.config.rope_factor, 2.0f);
  EXPECT_EQ(l.layers[0].wk.dtype, DType::F16);
}

// The reference (Python) GGUF files and our save_gguf of the reference HF checkpoint must agree
// byte for byte: same Q/K permutation, same F16/BF16 rounding, same Q8_0 quantisation.
void expect_same_gguf_tensors(const std::string& reference, const std::string& ours) {
  const GgufFile ref(reference), mine(ours);
  EXPECT_EQ(ref.tensors().size(), mine.tensors().size());
  for (const GgufTensorInfo& t : ref.tensors()) {
    const GgufTensorInfo* u = mine.find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->ne, t.ne) << t.name;
    ASSERT_EQ(u->type, t.type) << t.name << ": " << ggml_type_name(u->type) << " vs " << ggml_type_name(t.type);
    ASSERT_EQ(u->bytes, t.bytes) << t.name;
    EXPECT_EQ(std::memcmp(u->data, t.data, t.bytes), 0) << t.name << " differs";
  }
}

TEST(LoaderFixtures, SaveGgufMatchesTheReferenceConversion) {
  const std::string hf = kFixtures + "/tiny_llama_hf";
  SKIP_WITHOUT_FIXTURE(hf);
  const Model src = load_model(hf);
  TempDir dir;
  const std::pair<const char*, DType> files[] = {{"tiny_llama_f32.gguf", DType::F32},
                                                 {"tiny_llama_f16.gguf", DType::F16},
                                                 {"tiny_llama_bf16.gguf", DType::BF16},
                                                 {"tiny_llama_q8_0.gguf", DType::Q8_0}};
  int checked = 0;
  for (const auto& [name, type] : files) {
    const std::string reference = kFixtures + "/" + name;
    if (!file_exists(reference)) continue;
    SCOPED_TRACE(reference);
    const Model ref = load_model(reference);
    expect_tiny_config(ref.config);
    EXPECT_EQ(ref.config.rope_style, RopeStyle::Interleaved);
    EXPECT_EQ(ref.layers[0].wq.dtype, type);
    const std::string ours = dir.file(name);
    save_gguf(src, ours, type);
    expect_same_gguf_tensors(reference, ours);
    if (type == DType::F32) expect_same_attention(src, ref);  // permuted + interleaved == HF half-split
    ++checked;
  }
  const std::string qwen_hf = kFixtures + "/tiny_qwen2_hf", qwen_gguf = kFixtures + "/tiny_qwen2_f16.gguf";
  if (file_exists(qwen_hf) && file_exists(qwen_gguf)) {
    const Model ref = load_model(qwen_gguf);
    EXPECT_EQ(ref.config.rope_style, RopeStyle::HalfSplit);
    EXPECT_TRUE(ref.config.tied_embeddings);
    EXPECT_TRUE(ref.config.qkv_bias);
    const std::string ours = dir.file("qwen2.gguf");
    save_gguf(load_model(qwen_hf), ours, DType::F16);
    expect_same_gguf_tensors(qwen_gguf, ours);
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no reference GGUF fixtures in " << kFixtures;
}

}  // namespace
}  // namespace nammkit
