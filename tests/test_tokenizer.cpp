// Tokenizers: stories260K's SentencePiece vocabulary on real text, score- and rank-driven merges,
// byte-level BPE and its hand-written GPT-2 / Llama-3 / Qwen2 pre-splits, fixture expectations.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "gpt2_bytes.h"
#include "transformer/llama2c.h"
#include "transformer/loader.h"
#include "transformer/model.h"
#include "transformer/tokenizer.h"

namespace nammkit {
namespace {

const std::string kShared = NAMMKIT_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/stories260K.bin";
const std::string kFixtures = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures";

#define SKIP_WITHOUT(path) \
  if (!file_exists(path)) GTEST_SKIP() << "shared data missing: " << (path) << " (see ../shared/README.md)"

Tokenizer stories_tokenizer() { return Tokenizer(load_llama2c_tokenizer(kStories, 512)); }

// A slice of a shared text file, cut at a line boundary so the slice is valid UTF-8.
std::string text_excerpt(const std::string& path, size_t offset, size_t length) {
  std::string text = read_file(path);
  offset = std::min(offset, text.size());
  if (offset > 0) offset = text.find('\n', offset) + 1;
  std::string slice = text.substr(offset, length);
  return slice.substr(0, slice.find_last_of('\n') + 1);
}

std::string first_essay() {
  const std::string dir = kShared + "/data/pg_essays";
  for (const char* name : {"addiction.txt", "aord.txt", "apple.txt", "avg.txt"}) {
    if (file_exists(dir + "/" + name)) return dir + "/" + name;
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// stories260K (llama2.c tokenizer, 512 pieces with byte fallback)

TEST(StoriesTokenizer, LoadsWithSentencePieceConventions) {
  SKIP_WITHOUT(kStories);
  const Tokenizer tok = stories_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  const TokenizerData& d = tok.data();
  EXPECT_EQ(d.kind, TokenizerKind::SentencePiece);
  EXPECT_EQ(d.pieces[0], "<unk>");
  EXPECT_EQ(d.pieces[1], "<s>");
  EXPECT_EQ(d.pieces[2], "</s>");
  EXPECT_EQ(d.pieces[3], "<0x00>");
  EXPECT_EQ(d.pieces[258], "<0xFF>");
  EXPECT_EQ(d.pieces[403], "\xE2\x96\x81Once");  // stored as " Once", respelled with "▁"
}

TEST(StoriesTokenizer, OnceUponATime) {
  SKIP_WITHOUT(kStories);
  const Tokenizer tok = stories_tokenizer();
  // The README's greedy continuation starts " Once upon a time" = 403 407 261 378.
  EXPECT_EQ(tok.encode("Once upon a time", true), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));
}

TEST(StoriesTokenizer, DecodesTheReadmeGreedyOutput) {
  SKIP_WITHOUT(kStories);
  const Tokenizer tok = stories_tokenizer();
  const std::vector<int32_t> ids = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421,
                                    395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292};
  EXPECT_EQ(tok.decode(ids), "Once upon a time, there was a little girl named Lily. She loved to play outsid");
  // Streaming: the space SentencePiece put in front of the text goes only after BOS.
  EXPECT_EQ(tok.decode_token(1, 403), "Once");
  EXPECT_EQ(tok.decode_token(403, 407), " upon");
  EXPECT_EQ(tok.decode_token(1, 2), "");  // EOS is control: no text
}

void expect_round_trip(const Tokenizer& tok, const std::string& text, const std::string& what, bool long_text = true) {
  const std::vector<int32_t> ids = tok.encode(text, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], tok.bos_id());
  for (size_t i = 1; i < ids.size(); ++i) {
    ASSERT_GE(ids[i], 3) << what << ": control or <unk> token at " << i;  // byte fallback covers everything
    ASSERT_LT(ids[i], tok.vocab_size());
  }
  const std::string back = tok.decode(ids);
  if (back != text) {
    size_t i = 0;
    while (i < back.size() && i < text.size() && back[i] == text[i]) ++i;
    FAIL() << what << ": round trip differs at byte " << i << ": '" << text.substr(i, 40) << "' vs '"
           << back.substr(i, 40) << "'";
  }
  if (long_text) {  // 512 pieces compress TinyStories ~4x, other English ~1.7x
    EXPECT_LT(ids.size(), text.size() * 4 / 5) << what << ": merges should compress real text";
  }
}

TEST(StoriesTokenizer, RoundTripsTinyStories) {
  const std::string path = kShared + "/data/tinystories/tinystories_sample.txt";
  SKIP_WITHOUT(kStories);
  SKIP_WITHOUT(path);
  expect_round_trip(stories_tokenizer(), text_excerpt(path, 0, 30000), path);
}

TEST(StoriesTokenizer, RoundTripsABookExcerpt) {
  const std::string path = kShared + "/data/books/pg84.txt";  // Frankenstein: curly quotes, dashes
  SKIP_WITHOUT(kStories);
  SKIP_WITHOUT(path);
  expect_round_trip(stories_tokenizer(), text_excerpt(path, 20000, 30000), path);
}

TEST(StoriesTokenizer, RoundTripsAnEssay) {
  SKIP_WITHOUT(kStories);
  const std::string path = first_essay();
  if (path.empty()) GTEST_SKIP() << "shared data missing: " << kShared << "/data/pg_essays";
  expect_round_trip(stories_tokenizer(), read_file(path), path);
}

TEST(StoriesTokenizer, ByteFallbackAndWhitespace) {
  SKIP_WITHOUT(kStories);
  const Tokenizer tok = stories_tokenizer();
  const std::string text = "  Leading spaces, tabs\tand\r\nCRLF; Японский 日本語 — emoji \xF0\x9F\x98\x80 end ";
  expect_round_trip(tok, text, "mixed text", false);
  const std::vector<int32_t> ids = tok.encode("日", false);
  // "▁" then the three UTF-8 bytes of 日 (E6 97 A5) as <0xXX> tokens (id = 3 + byte).
  EXPECT_EQ(ids, (std::vector<int32_t>{410, 3 + 0xE6, 3 + 0x97, 3 + 0xA5}));
  // Malformed UTF-8 still round-trips byte for byte.
  expect_round_trip(tok, std::string("a\xFF\xC3 b\x80z"), "malformed UTF-8", false);
}

TEST(StoriesTokenizer, ControlTokensNeverComeFromText) {
  SKIP_WITHOUT(kStories);
  const Tokenizer tok = stories_tokenizer();
  const std::vector<int32_t> ids = tok.encode("<s> hello </s> <unk> <0x41>", false);
  for (int32_t id : ids) {
    EXPECT_GT(id, 2) << "control token produced from text";
  }
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 3 + 0x41), 0) << "<0x41> spelled out must not become the byte token";
  EXPECT_EQ(tok.decode(ids), "<s> hello </s> <unk> <0x41>");
  EXPECT_EQ(tok.decode({1, 403, 2}), "Once");  // BOS/EOS skipped
}

// ---------------------------------------------------------------------------------------------
// Synthetic SentencePiece vocabularies: the merge order is what the scores / ranks say.

TokenizerData small_sentencepiece(float score_ab, float score_aa) {
  TokenizerData d;
  d.kind = TokenizerKind::SentencePiece;
  d.pieces = {"<unk>",
              "<s>",
              "</s>",
              "\xE2\x96\x81",
              "a",
              "b",
              "ab",
              "aa",
              "\xE2\x96\x81"
              "a"};
  d.scores = {0, 0, 0, -1, -2, -3, score_ab, score_aa, -10};
  d.unk_id = 0;
  d.bos_id = 1;
  d.eos_id = 2;
  d.special_ids = {1, 2};
  d.add_space_prefix = false;
  return d;
}

TEST(SentencePieceMerges, HigherScoreMergesFirst) {
  // "aab": the pairs are (a,a) and (a,b); whichever piece scores higher wins.
  EXPECT_EQ(Tokenizer(small_sentencepiece(-4, -5)).encode("aab", false), (std::vector<int32_t>{4, 6}));  // a ab
  EXPECT_EQ(Tokenizer(small_sentencepiece(-5, -4)).encode("aab", false), (std::vector<int32_t>{7, 5}));  // aa b
}

TEST(SentencePieceMerges, EqualScoresMergeLeftmostFirst) {
  // "aaa" with only "aa": the left pair merges, leaving the last "a".
  EXPECT_EQ(Tokenizer(small_sentencepiece(-4, -4)).encode("aaa", false), (std::vector<int32_t>{7, 4}));
}

TEST(SentencePieceMerges, SpacePrefixAndUnknownWithoutByteFallback) {
  TokenizerData d = small_sentencepiece(-4, -5);
  d.add_space_prefix = true;
  const Tokenizer tok(d);
  EXPECT_EQ(tok.encode("a b", false), (std::vector<int32_t>{8, 3, 5}));  // "▁a" "▁" "b"
  EXPECT_EQ(tok.decode({8, 3, 5}), "a b");
  EXPECT_EQ(tok.encode("c", false), (std::vector<int32_t>{3, 0}));  // no piece, no <0x63>: <unk>
}

TEST(SentencePieceMerges, MergeRanksDriveHuggingFaceStyleTokenizers) {
  // With merges, only listed pairs merge, in rank order (scores are ignored).
  TokenizerData d = small_sentencepiece(0, 0);
  d.scores.clear();
  d.merges = {"a a", "a b"};
  EXPECT_EQ(Tokenizer(d).encode("aab", false), (std::vector<int32_t>{7, 5}));
  d.merges = {"a b", "a a"};
  EXPECT_EQ(Tokenizer(d).encode("aab", false), (std::vector<int32_t>{4, 6}));
  d.merges = {"a b"};  // "▁a" exists as a piece but no merge makes it
  d.add_space_prefix = true;
  EXPECT_EQ(Tokenizer(d).encode("a", false), (std::vector<int32_t>{3, 4}));
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE

using Chunks = std::vector<std::string_view>;

TEST(PreSplit, Gpt2) {
  EXPECT_EQ(byte_level_pre_split("Hello world's 123  foo!!\n\nbar", "gpt2"),
            (Chunks{"Hello", " world", "'s", " 123", " ", " foo", "!!", "\n", "\n", "bar"}));
  EXPECT_EQ(byte_level_pre_split("HELLO'S x  ", "gpt2"), (Chunks{"HELLO", "'", "S", " x", "  "}));
  EXPECT_EQ(byte_level_pre_split("we'll've 'd", "gpt2"), (Chunks{"we", "'ll", "'ve", " '", "d"}));
}

TEST(PreSplit, Llama3) {
  EXPECT_EQ(byte_level_pre_split("Hello world's 12345  foo!!\n\nbar", "llama3"),
            (Chunks{"Hello", " world", "'s", " ", "123", "45", " ", " foo", "!!\n\n", "bar"}));
  EXPECT_EQ(byte_level_pre_split("HELLO'S", "llama3"), (Chunks{"HELLO", "'S"}));  // (?i:...)
  EXPECT_EQ(byte_level_pre_split("\t\tx (y)", "llama3"), (Chunks{"\t", "\tx", " (", "y", ")"}));
  EXPECT_EQ(byte_level_pre_split("a  \n  b", "llama3"), (Chunks{"a", "  \n", " ", " b"}));
  EXPECT_EQ(byte_level_pre_split("x\n", "llama3"), (Chunks{"x", "\n"}));
}

TEST(PreSplit, UnicodeClasses) {
  // Letters and digits of other scripts: \p{L} and \p{N}, not just ASCII.
  EXPECT_EQ(byte_level_pre_split("naïve café 東京 ١٢٣٤", "llama3"),
            (Chunks{"naïve", " café", " 東京", " ", "١٢٣", "٤"}));
  EXPECT_EQ(byte_level_pre_split("Ωμέγα²", "gpt2"), (Chunks{"Ωμέγα", "²"}));        // ² is No, a number
  EXPECT_EQ(byte_level_pre_split("a\u3000b", "llama3"), (Chunks{"a", "\u3000b"}));  // ideographic space
}

TEST(PreSplit, Qwen2SplitsSingleDigits) {
  EXPECT_EQ(byte_level_pre_split("x2024!", "qwen2"), (Chunks{"x", "2", "0", "2", "4", "!"}));
  EXPECT_THROW(byte_level_pre_split("x", "bert"), Error);
}

using testing::gpt2_char;

TokenizerData small_byte_level(const std::string& pre) {
  TokenizerData d;
  d.kind = TokenizerKind::ByteLevelBPE;
  d.pre_tokenizer = pre;
  for (int b = 0; b < 256; ++b) d.pieces.push_back(gpt2_char(b));
  const std::string G = gpt2_char(' ');  // "Ġ"
  d.merges = {G + " t", "h e", G + "t he", "t h", "i s"};
  for (const std::string& m : d.merges) d.pieces.push_back(m.substr(0, m.find(' ')) + m.substr(m.find(' ') + 1));
  d.pieces.push_back("<|endoftext|>");
  d.special_ids = {static_cast<int32_t>(d.pieces.size()) - 1};
  d.bos_id = d.eos_id = d.special_ids[0];
  return d;
}

TEST(ByteLevelBpe, MergesByRankWithinChunks) {
  const Tokenizer tok(small_byte_level("gpt2"));
  EXPECT_EQ(gpt2_char(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(gpt2_char('\n'), "\xC4\x8A");  // Ċ
  // " the": Ġ t -> Ġt, h e -> he, Ġt he -> Ġthe (ids 256, 257, 258).
  EXPECT_EQ(tok.encode(" the", false), (std::vector<int32_t>{258}));
  // "the": "t h" (rank 3) loses to "h e" (rank 1): t + he, and "the" is no piece.
  EXPECT_EQ(tok.encode("the", false), (std::vector<int32_t>{'t', 257}));
  // "this": "t h" (rank 3) before "i s" (rank 4): th + is. " is": Ġ + is.
  EXPECT_EQ(tok.encode("this is", false), (std::vector<int32_t>{259, 260, ' ', 260}));
  // Merges never cross chunk boundaries: "5" and "the" are separate chunks, so no "Ġt"-style joins
  // and "t" "he" stay as in "the".
  EXPECT_EQ(tok.encode("5the", false), (std::vector<int32_t>{'5', 't', 257}));
}

TEST(ByteLevelBpe, RoundTripsAnyBytesAndSkipsSpecials) {
  const Tokenizer tok(small_byte_level("llama3"));
  const std::string text = "The theme: 12345 naïve\r\n\t東京 \xF0\x9F\x98\x80 <|endoftext|> \xFF\xFE end";
  const std::vector<int32_t> ids = tok.encode(text, true);
  EXPECT_EQ(ids[0], tok.bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos_id()), 1) << "special token produced from text";
  EXPECT_EQ(tok.decode(ids), text);
}

// ---------------------------------------------------------------------------------------------
// Fixture expectations written by tools/reference (independent Python ports), when present.

std::vector<std::pair<std::string, std::vector<int32_t>>> read_cases(const std::string& path) {
  std::vector<std::pair<std::string, std::vector<int32_t>>> cases;
  for (const auto& c : nlohmann::json::parse(read_file(path))) {
    cases.emplace_back(c.at("text").get<std::string>(), c.at("ids").get<std::vector<int32_t>>());
  }
  return cases;
}

TEST(TokenizerFixtures, StoriesMatchesTheLlama2cEncodePort) {
  const std::string path = kFixtures + "/sp_tokenizer_cases.json";
  if (!file_exists(path)) GTEST_SKIP() << "fixture missing: " << path << " (tools/reference/make_fixtures.py)";
  SKIP_WITHOUT(kStories);
  const Tokenizer tok = stories_tokenizer();
  const auto cases = read_cases(path);
  ASSERT_FALSE(cases.empty());
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tok.encode(text, false), ids) << "'" << text << "'";
    EXPECT_EQ(tok.decode(ids), text);
  }
}

// Every tiny fixture model carries the same byte-level BPE (Llama-3 pre-split); each loader must
// rebuild it from its own format (tokenizer.json or GGUF metadata) and reproduce the ids.
TEST(TokenizerFixtures, ByteLevelCasesForEveryTinyModel) {
  const std::string path = kFixtures + "/tokenizer_cases.json";
  if (!file_exists(path)) GTEST_SKIP() << "fixture missing: " << path << " (tools/reference/make_fixtures.py)";
  const auto cases = read_cases(path);
  ASSERT_FALSE(cases.empty());
  int models = 0;
  for (const char* name : {"tiny_llama_hf", "tiny_qwen2_hf", "tiny_llama_f32.gguf", "tiny_qwen2_f16.gguf"}) {
    const std::string model_path = kFixtures + "/" + name;
    if (!file_exists(model_path)) continue;
    ++models;
    const Model m = load_model(model_path);
    EXPECT_EQ(m.tokenizer.data().kind, TokenizerKind::ByteLevelBPE) << name;
    EXPECT_EQ(m.tokenizer.data().pre_tokenizer, "llama3") << name;
    EXPECT_EQ(m.tokenizer.bos_id(), 510) << name;
    EXPECT_EQ(m.tokenizer.eos_id(), 511) << name;
    for (const auto& [text, ids] : cases) {
      EXPECT_EQ(m.tokenizer.encode(text, false), ids) << name << ": '" << text << "'";
      EXPECT_EQ(m.tokenizer.decode(ids), text) << name;
    }
    std::vector<int32_t> with_bos = m.tokenizer.encode("Hi", true);
    EXPECT_EQ(with_bos.front(), 510) << name;
  }
  if (models == 0) GTEST_SKIP() << "no tiny fixture models in " << kFixtures;
}

}  // namespace
}  // namespace nammkit
