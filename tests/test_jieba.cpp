// jieba segmentation (tasks/jieba.h) token for token against Python jieba 0.42.1 on Chinese LongBench
// text (tests/fixtures/jieba_reference.json, from tools/reference/jieba_fixture.py), plus the load
// errors. The fixture comparison needs models/jieba/ (bash scripts/fetch_models.sh; CI fetches it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "tasks/jieba.h"

namespace nammkit {
namespace {

#define REQUIRE_JIEBA_DATA()                   \
  if (!file_exists(jieba_dir() + "/dict.txt")) \
  GTEST_SKIP() << "jieba data missing: " << jieba_dir() << "/dict.txt (bash scripts/fetch_models.sh)"

std::string join(const std::vector<std::string>& tokens) {
  std::string out;
  for (const auto& t : tokens) out += (out.empty() ? "" : " | ") + t;
  return out;
}

// A folder with the given dict.txt and hmm.json, removed at the end of the test.
struct TempData {
  std::filesystem::path dir;
  TempData(const std::string& dict, const std::string& hmm) {
    dir = std::filesystem::temp_directory_path() / ("nammkit_jieba_" + std::to_string(::getpid()) + "_" +
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir);
    write_file_atomic((dir / "dict.txt").string(), dict);
    write_file_atomic((dir / "hmm.json").string(), hmm);
  }
  ~TempData() { std::filesystem::remove_all(dir); }
};

// An HMM that knows no character: every emission is MIN_FLOAT.
const char* const kFlatHmm =
    R"({"start":{"B":-1,"E":-3.14e100,"M":-3.14e100,"S":-0.5},)"
    R"("trans":{"B":{"E":-0.5,"M":-1},"E":{"B":-1,"S":-0.5},"M":{"E":-0.5,"M":-1},"S":{"B":-1,"S":-0.5}},)"
    R"("emit":{"B":{},"E":{},"M":{},"S":{}}})";

TEST(Jieba, MatchesPythonJiebaOnChineseLongBench) {
  REQUIRE_JIEBA_DATA();
  const nlohmann::json fixture =
      nlohmann::json::parse(read_file(std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/jieba_reference.json"));
  const Jieba& jieba = Jieba::shared();
  size_t texts = 0, tokens = 0, mismatches = 0;
  for (const auto& c : fixture.at("cases")) {
    const auto expected = c.at("tokens").get<std::vector<std::string>>();
    const auto got = jieba.cut(c.at("text").get<std::string>());
    ++texts;
    tokens += expected.size();
    if (got == expected) continue;
    ++mismatches;
    ADD_FAILURE() << c.at("source").get<std::string>() << "\n  python: " << join(expected)
                  << "\n  nammkit: " << join(got);
  }
  std::printf("jieba: %zu texts, %zu reference tokens, %zu mismatching texts\n", texts, tokens, mismatches);
  EXPECT_GE(texts, 800u);
  EXPECT_EQ(mismatches, 0u);
}

TEST(Jieba, CutsKnownSentences) {
  REQUIRE_JIEBA_DATA();
  const Jieba& jieba = Jieba::shared();
  // jieba's README example: 杭研 is no dictionary word, the HMM joins it.
  EXPECT_EQ(jieba.cut("他来到了网易杭研大厦"), (std::vector<std::string>{"他", "来到", "了", "网易", "杭研", "大厦"}));
  EXPECT_EQ(jieba.cut("a\r\nb  c"), (std::vector<std::string>{"a", "\r\n", "b", " ", " ", "c"}));
  EXPECT_TRUE(jieba.cut("").empty());
}

TEST(Jieba, MissingDataNamesTheFileAndTheFetchScript) {
  try {
    Jieba jieba("/no/such/jieba");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "/no/such/jieba/dict.txt: missing: jieba's data are fetched by bash scripts/fetch_models.sh");
  }
}

TEST(Jieba, MalformedDictionaryNamesTheLine) {
  const TempData data("北京 3 ns\n大学\n", kFlatHmm);
  try {
    Jieba jieba(data.dir.string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), (data.dir / "dict.txt").string() + ": line 2: expected \"word frequency [tag]\"");
  }
}

TEST(Jieba, RouteMaximisesTheProductOfWordFrequencies) {
  // total 100 (every line counts, as in jieba's gen_pfdict; 大学 keeps its last frequency, 20):
  // 北京大学 (0.59) beats 北京 x 大学 (0.2 x 0.2).
  const TempData data("北京 20\n大学 1\n大学 20\n北京大学 59\n学 0\n", kFlatHmm);
  const Jieba jieba(data.dir.string());
  EXPECT_EQ(jieba.cut("北京大学"), (std::vector<std::string>{"北京大学"}));
  // 学 has frequency 0, so 学学 goes to the HMM. With no emissions every score absorbs into multiples
  // of MIN_FLOAT, and ties go to the larger state letter as in Python's max over (prob, state): S S.
  EXPECT_EQ(jieba.cut("学学"), (std::vector<std::string>{"学", "学"}));
  // Unknown ASCII inside a han block: letters+digits with a decimal part and % stay whole.
  EXPECT_EQ(jieba.cut("北京ab3.5%x"), (std::vector<std::string>{"北京", "ab3.5%", "x"}));
}

}  // namespace
}  // namespace nammkit
