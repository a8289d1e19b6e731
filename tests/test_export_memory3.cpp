// Memory3 export: selectors (namm/memory3_selectors.h), the bank file (namm/memory_bank.h: round
// trip, corruption), and the read path against putting the reference in context.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/sha256.h"
#include "namm/export_memory3.h"
#include "namm/memory3_selectors.h"
#include "namm/memory_bank.h"
#include "namm/policy_file.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"
#include "transformer/session.h"

namespace nammkit {
namespace {

using testing::kStories;
using testing::stories;

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("nammkit_test_export_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

const std::vector<ReferenceChunk> kChunks = {
    {"lily", "Lily went to the park with her dog. The dog found a red ball under a big tree and they played all day."},
    {"tom", "Tom had a little boat. He put it in the water and it sailed away."},
    {"short", "Mia smiled."},
};

std::string build_bank(const Memory3Options& opt, const NammScoring* namm) {
  MemoryBankWriter w(stories(), opt, "");
  for (const auto& c : kChunks) w.add(encode_chunk(stories(), c, opt, "test"), namm);
  return w.serialize();
}

TEST(ExportMemory3, TopKTiesGoToTheLowerIndex) {
  const std::vector<float> s = {1, 3, 3, 0, 3, NAN};
  EXPECT_EQ(top_k_lower_index(s, 2), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(top_k_lower_index(s, 4), (std::vector<int32_t>{0, 1, 2, 4}));
  EXPECT_EQ(top_k_lower_index(s, 10).size(), 6u);
}

TEST(ExportMemory3, LayerSpecs) {
  EXPECT_EQ(parse_memory_layers("first-half", 5, "t"), (std::vector<int>{0, 1}));
  EXPECT_EQ(parse_memory_layers("0-1", 5, "t"), (std::vector<int>{0, 1}));
  EXPECT_EQ(parse_memory_layers("4,2", 5, "t"), (std::vector<int>{2, 4}));
  EXPECT_EQ(parse_memory_layers("all", 3, "t"), (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(parse_memory_layers("7", 5, "t"), Error);
  EXPECT_THROW(parse_memory_layers("x", 5, "t"), Error);
}

// Spec §5.2 worked vector: with identical queries, w_j = Σ_i exp(q·k_j/√d) ∝ exp(q·k_j/√d), so the
// exp-sum rule keeps exactly the top-k of q·k_j.
TEST(ExportMemory3, ExpSumWithIdenticalQueriesIsTopKOfQK) {
  ModelConfig c;
  c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.head_dim = 4;
  const int n = 12, P = 1, T = P + n;
  EncodedReference r;
  r.id = "synthetic";
  r.prefix_len = P;
  r.tokens.assign(T, 0);
  r.forward.n_tokens = T;
  r.forward.q_pre.assign(1, std::vector<float>(size_t(T) * c.q_dim()));
  r.forward.k_pre.assign(1, std::vector<float>(size_t(T) * c.kv_dim()));
  const float q[4] = {0.5f, -1.0f, 2.0f, 0.25f};
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < 2; ++h)
      for (int e = 0; e < 4; ++e) r.forward.q_pre[0][size_t(t) * 8 + h * 4 + e] = q[e];
  std::vector<float> qk(n);
  for (int j = 0; j < T; ++j)
    for (int e = 0; e < 4; ++e) {
      const float v = std::sin(1.7f * j + 0.9f * e) * 3.0f;
      r.forward.k_pre[0][size_t(j) * 4 + e] = v;
      if (j >= P) qk[j - P] += q[e] * v;
    }
  Memory3Options opt;
  opt.selector = Memory3Selector::ExpSum;
  for (int k : {1, 3, 8}) {
    opt.k = k;
    EXPECT_EQ(select_reference_tokens(r, 0, 0, c, opt, nullptr), top_k_lower_index(qk, k)) << "k " << k;
  }
  // The stated rule (softmax per query) agrees here too: every row has the same softmax.
  opt.selector = Memory3Selector::SoftmaxSum;
  opt.k = 5;
  EXPECT_EQ(select_reference_tokens(r, 0, 0, c, opt, nullptr), top_k_lower_index(qk, 5));
}

TEST(ExportMemory3, EncoderMatchesTheSessionCache) {
  REQUIRE_STORIES();
  Memory3Options opt;
  const EncodedReference r = encode_chunk(stories(), kChunks[0], opt, "test");
  Session s(stories());
  s.feed(r.tokens);
  const ModelConfig& c = stories().config;
  double err = 0;
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const HeadCache& hc = s.cache().head(l, g);
      ASSERT_EQ(hc.len, r.forward.n_tokens);
      for (int t = 0; t < hc.len; ++t)
        for (int e = 0; e < c.head_dim; ++e) {
          err = std::max<double>(
              err, std::abs(hc.keys[t * c.head_dim + e] - r.forward.k_rope[l][t * c.kv_dim() + g * c.head_dim + e]));
          err = std::max<double>(
              err, std::abs(hc.values[t * c.head_dim + e] - r.forward.v[l][t * c.kv_dim() + g * c.head_dim + e]));
        }
    }
  EXPECT_LT(err, 1e-4);
}

TEST(ExportMemory3, EveryHeadKeepsExactlyK) {
  REQUIRE_STORIES();
  const NammScoring namm = NammScoring::from(make_namm_policy_file());
  for (Memory3Selector sel : {Memory3Selector::Namm, Memory3Selector::ExpSum, Memory3Selector::SoftmaxSum,
                              Memory3Selector::Random, Memory3Selector::First, Memory3Selector::Last}) {
    Memory3Options opt;
    opt.selector = sel;
    opt.k = 8;
    const MemoryBank b = MemoryBank::from_bytes(build_bank(opt, &namm), "mem");
    for (const auto& ch : b.index().chunks()) {
      const int expect = std::min(8, ch.n_tokens());
      for (int v : ch.valid_count()) EXPECT_EQ(v, expect) << memory3_selector_name(sel) << " " << ch.id();
    }
    EXPECT_EQ(b.index().layers_size(), 2);  // first half of 5 layers
  }
}

TEST(ExportMemory3, BankRoundTripThroughAMemoryMap) {
  REQUIRE_STORIES();
  Memory3Options opt;
  opt.selector = Memory3Selector::ExpSum;
  opt.k = 8;
  const std::string path = temp_path("roundtrip.bank");
  MemoryBankWriter w(stories(), opt, sha256_hex("policy bytes"));
  std::vector<EncodedReference> refs;
  for (const auto& c : kChunks) {
    refs.push_back(encode_chunk(stories(), c, opt, "test"));
    w.add(refs.back(), nullptr);
  }
  w.save(path);
  const MemoryBank b = MemoryBank::open(path);
  const ModelConfig& c = stories().config;
  EXPECT_EQ(b.index().selector(), "exp-sum");
  EXPECT_EQ(b.index().gqa_aggregation(), "mean");
  EXPECT_EQ(b.index().policy_sha256(), sha256_hex("policy bytes"));
  EXPECT_EQ(b.n_chunks(), 3);
  for (int ci = 0; ci < 3; ++ci) {
    const auto& ch = b.index().chunks(ci);
    EXPECT_EQ(ch.offset() % kBankAlignment, 0u);
    for (int m = 0; m < b.index().layers_size(); ++m)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        const auto sel = select_reference_tokens(refs[ci], b.index().layers(m), g, c, opt, nullptr);
        for (int s = 0; s < int(sel.size()); ++s) {
          EXPECT_EQ(ch.selected((m * c.n_kv_heads + g) * opt.k + s), sel[s]);
          const size_t src = size_t(refs[ci].prefix_len + sel[s]) * c.kv_dim() + g * c.head_dim;
          for (int e = 0; e < c.head_dim; ++e) {
            EXPECT_EQ(b.chunk_vector(ci, m, 0, g, s)[e], refs[ci].forward.k_rope[b.index().layers(m)][src + e]);
            EXPECT_EQ(b.chunk_vector(ci, m, 1, g, s)[e], refs[ci].forward.v[b.index().layers(m)][src + e]);
          }
        }
      }
  }
  std::filesystem::remove(path);
}

void expect_error_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no Error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ExportMemory3, CorruptedOrTruncatedBankIsAnError) {
  REQUIRE_STORIES();
  Memory3Options opt;
  opt.selector = Memory3Selector::First;
  const std::string bytes = build_bank(opt, nullptr);
  const std::string path = temp_path("bad.bank");
  auto open_bytes = [&](const std::string& b) {
    write_file_atomic(path, b);
    return MemoryBank::open(path);
  };
  expect_error_containing([&] { open_bytes(bytes.substr(0, 10)); }, path + ": header");
  expect_error_containing([&] { open_bytes("NOTABANK" + bytes.substr(8)); }, "magic");
  std::string v = bytes;
  v[8] = 7;
  expect_error_containing([&] { open_bytes(v); }, "format_version");
  expect_error_containing([&] { open_bytes(bytes.substr(0, 60)); }, "index");
  std::string flipped = bytes;
  flipped[40] ^= 0x10;
  expect_error_containing([&] { open_bytes(flipped); }, "CRC");
  expect_error_containing([&] { open_bytes(bytes.substr(0, bytes.size() - 100)); }, "offset");
  // A damaged tensor block is found when the chunk is used.
  std::string payload = bytes;
  payload[payload.size() - 5] ^= 0x01;
  const MemoryBank damaged = open_bytes(payload);
  Session s(stories());
  const int last = damaged.n_chunks() - 1;
  expect_error_containing([&] { inject_memories(s, damaged, std::span<const int>(&last, 1)); }, "tensor block CRC");
  // Every truncation point is an Error, never a crash.
  for (size_t cut = 0; cut < bytes.size(); cut += 97)
    EXPECT_THROW(open_bytes(bytes.substr(0, cut)), Error) << "cut at " << cut;
  std::filesystem::remove(path);
}

// The bank bytes with its index edited by `edit` (same data blocks, the index re-framed and re-CRC'd).
std::string with_index(const std::string& bytes, const std::function<void(bank::BankIndex&)>& edit) {
  bank::BankIndex x;
  const uint64_t len = get_le<uint64_t>(reinterpret_cast<const uint8_t*>(bytes.data()) + 16);
  EXPECT_TRUE(x.ParseFromArray(bytes.data() + kBankHeaderBytes, static_cast<int>(len)));
  const uint64_t data_start = x.prefix_offset();
  edit(x);
  std::string index;
  x.SerializeToString(&index);
  std::string out = bytes.substr(0, 12);
  put_le<uint32_t>(out, crc32(index));
  put_le<uint64_t>(out, index.size());
  out += index;
  EXPECT_LE(out.size(), data_start) << "the edited index no longer fits before the data";
  out.resize(data_start, '\0');
  return out + bytes.substr(data_start);
}

TEST(ExportMemory3, BankValidationGaps) {
  REQUIRE_STORIES();
  Memory3Options opt;
  opt.selector = Memory3Selector::First;
  const std::string bytes = build_bank(opt, nullptr);
  auto error_of = [](const std::string& b) {
    try {
      MemoryBank::from_bytes(b, "x.bank");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(opened)");
  };
  // Shapes whose block sizes wrap 64 bits to 0 (with chunk_bytes 0 they used to pass every check).
  const std::string huge = with_index(bytes, [](bank::BankIndex& x) {
    x.mutable_model()->set_n_heads(1 << 30), x.mutable_model()->set_n_kv_heads(1 << 30);
    x.mutable_model()->set_head_dim(1 << 30), x.set_n_kv_heads(1 << 30), x.set_head_dim(1 << 30);
    x.set_chunk_bytes(0);
  });
  EXPECT_EQ(error_of(huge), "x.bank: chunk_bytes: the block size overflows 64 bits (implausible shape)");
  const std::string token = with_index(bytes, [](bank::BankIndex& x) { x.set_prefix_tokens(0, 512 + 5); });
  EXPECT_EQ(error_of(token), "x.bank: prefix_tokens[0]: id 517 outside the vocabulary of 512");
  const std::string no_gqa = with_index(bytes, [](bank::BankIndex& x) { x.clear_gqa_aggregation(); });
  EXPECT_EQ(error_of(no_gqa), "x.bank: gqa_aggregation: expected \"mean\", got ''");
  const std::string same =
      with_index(bytes, [](bank::BankIndex& x) { x.mutable_chunks(1)->set_offset(x.chunks(0).offset()); });
  EXPECT_NE(error_of(same).find("overlaps chunks["), std::string::npos) << error_of(same);
  EXPECT_EQ(error_of(with_index(bytes, [](bank::BankIndex&) {})), "(opened)");
}

TEST(ExportMemory3, KBeyondAChunkIsRefusedBeforeWriting) {
  REQUIRE_STORIES();
  Memory3Options opt;
  opt.k = 200;
  expect_error_containing([&] { MemoryBankWriter w(stories(), opt, ""); }, "k: expected 1 .. max_chunk_tokens (128)");
}

TEST(ExportMemory3, ChunkTooLongNamesTheLine) {
  REQUIRE_STORIES();
  const std::string path = temp_path("chunks.jsonl");
  std::string longtext;
  for (int i = 0; i < 100; ++i) longtext += "the dog ran and ";
  write_file_atomic(path, "{\"id\": \"a\", \"text\": \"Hi.\"}\n{\"id\": 2, \"text\": \"" + longtext + "\"}\n");
  const auto chunks = read_reference_chunks(path);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[1].id, "2");
  expect_error_containing([&] { encode_chunk(stories(), chunks[1], {}, path + ": line 2"); }, "line 2: chunk '2'");
  write_file_atomic(path, "{\"id\": \"a\"}\n");
  expect_error_containing([&] { read_reference_chunks(path); }, "line 1: text");
  std::filesystem::remove(path);
}

// With k = 128 (nothing dropped) at every layer, injected memories are the reference in context.
TEST(ExportMemory3, ReadPathWithAllTokensEqualsInContext) {
  REQUIRE_STORIES();
  Memory3Options opt;
  opt.k = 128;
  opt.selector = Memory3Selector::Namm;
  opt.layers = parse_memory_layers("all", stories().config.n_layers, "t");
  const NammScoring namm = NammScoring::from(make_namm_policy_file());
  const MemoryBank b = MemoryBank::from_bytes(build_bank(opt, &namm), "mem");
  const Tokenizer& tok = stories().tokenizer;
  const std::vector<int32_t> prompt = tok.encode("Where did the dog find the ball?", true);
  for (int ci = 0; ci < b.n_chunks(); ++ci) {
    Session mem(stories());
    const int64_t pos = inject_memories(mem, b, std::span<const int>(&ci, 1));
    std::vector<float> mem_logits;
    mem.feed(prompt, &mem_logits);

    Session ctx(stories());
    const EncodedReference r = encode_chunk(stories(), kChunks[ci], opt, "t");
    ctx.feed(r.tokens);
    ASSERT_EQ(ctx.position(), pos);
    std::vector<float> ctx_logits;
    ctx.feed(prompt, &ctx_logits);
    ASSERT_EQ(mem_logits.size(), ctx_logits.size());
    double err = 0;
    for (size_t i = 0; i < ctx_logits.size(); ++i) err = std::max<double>(err, std::abs(mem_logits[i] - ctx_logits[i]));
    EXPECT_LT(err, 1e-4) << "chunk " << kChunks[ci].id;
  }
}

}  // namespace
}  // namespace nammkit
