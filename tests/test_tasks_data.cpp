// Data-driven tasks on the shared files: LongBench records/config/prompts, the shipped test sets,
// middle truncation, and the task registry's JSON validation.
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "core/file_io.h"
#include "tasks/longbench.h"
#include "tasks/registry.h"
#include "tasks/shipped_sets.h"
#include "tasks/truncation.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"

namespace nammkit {
namespace {

using testing::stories;

const std::string kShared = NAMMKIT_SHARED_DIR;
const std::string kLongBench = kShared + "/data/longbench";

#define REQUIRE_FILE(path) \
  if (!file_exists(path)) GTEST_SKIP() << "shared file missing: " << (path)

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TasksLongBench, LoadsTheSharedFiles) {
  REQUIRE_FILE(kLongBench + "/multi_news.jsonl");
  const auto news = load_longbench_records(kLongBench + "/multi_news.jsonl");
  ASSERT_EQ(news.size(), 200u);
  EXPECT_EQ(news[0].dataset, "multi_news");
  EXPECT_EQ(news[0].id, "e45abfcb82a3c862c0f772e6f461866839955c11ea2f46a8");
  EXPECT_EQ(news[0].input, "");
  EXPECT_EQ(news[0].answers.size(), 1u);
  EXPECT_TRUE(news[0].all_classes.empty());  // null in the file
  EXPECT_EQ(news[0].length, 2099);
  const auto zh = load_longbench_records(kLongBench + "/passage_retrieval_zh.jsonl");
  EXPECT_EQ(zh[0].answers, std::vector<std::string>{"段落27"});
}

TEST(TasksLongBench, ConfigMetricAndPrompt) {
  REQUIRE_FILE(kLongBench + "/config/dataset2prompt.json");
  const LongBenchConfig config =
      load_longbench_config(kLongBench + "/config/dataset2prompt.json", kLongBench + "/config/dataset2maxlen.json");
  EXPECT_EQ(config.prompt.size(), 21u);
  EXPECT_EQ(config.max_new_tokens.at("multi_news"), 512);
  EXPECT_EQ(config.max_new_tokens.at("passage_retrieval_en"), 32);
  EXPECT_EQ(longbench_metric("multi_news"), Metric::Rouge);
  EXPECT_EQ(longbench_metric("multifieldqa_zh"), Metric::QaF1Zh);
  EXPECT_EQ(longbench_metric("passage_retrieval_zh"), Metric::RetrievalZh);
  EXPECT_EQ(longbench_metric("lcc"), Metric::CodeSim);
  EXPECT_EQ(longbench_metric("trec"), Metric::Classification);
  EXPECT_TRUE(longbench_first_line_only("samsum"));
  EXPECT_TRUE(longbench_stops_at_newline("samsum"));
  EXPECT_FALSE(longbench_first_line_only("multi_news"));
  EXPECT_THROW(longbench_metric("no_such_set"), Error);

  LongBenchRecord r;
  r.context = "CTX {input}";  // substituted text is never re-expanded
  r.input = "Q";
  EXPECT_EQ(format_longbench_prompt("A {context} B {input}.", r), "A CTX {input} B Q.");
  const Sample s = make_longbench_sample(r, "passage_retrieval_zh", config);
  EXPECT_EQ(s.max_new_tokens, 32);
  EXPECT_EQ(s.metric, Metric::RetrievalZh);
  EXPECT_NE(s.prompt.find("CTX {input}\n\n下面是一个摘要\n\nQ\n\n"), std::string::npos);
}

TEST(TasksLongBench, TaskSamplingIsSeededAndSplitsAreDisjoint) {
  REQUIRE_FILE(kLongBench + "/multifieldqa_zh.jsonl");
  LongBenchTaskOptions o;
  o.dataset = "multifieldqa_zh";
  o.file = kLongBench + "/multifieldqa_zh.jsonl";
  o.samples = 5;
  o.seed = 3;
  o.split = Split::Train;
  const Task a = make_longbench_task(o), b = make_longbench_task(o);
  ASSERT_EQ(a.samples.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(a.samples[i].id, b.samples[i].id);
  EXPECT_EQ(a.name, "longbench/multifieldqa_zh");
  o.samples = 0;
  const Task train = make_longbench_task(o);
  o.split = Split::HeldOut;
  const Task held = make_longbench_task(o);
  EXPECT_EQ(train.samples.size(), 160u);
  EXPECT_EQ(held.samples.size(), 40u);
  std::set<std::string> ids;
  for (const auto& s : train.samples) ids.insert(s.id);
  for (const auto& s : held.samples) EXPECT_EQ(ids.count(s.id), 0u);
  o.dataset = "multi_news";  // the file's records say multifieldqa_zh
  EXPECT_NE(error_of([&] { make_longbench_task(o); }).find("dataset: \"multifieldqa_zh\", expected \"multi_news\""),
            std::string::npos);
}

TEST(TasksShipped, RulerKvLongEvalAndBabi) {
  REQUIRE_FILE(kShared + "/data/kv_retrieval/kv-retrieval-75_keys.jsonl.gz");
  ShippedSetOptions o;
  o.set = ShippedSet::RulerNiah;
  o.file = kShared + "/data/ruler/niah_multikey_3_4096.jsonl";
  Task t = make_shipped_task(o);
  ASSERT_EQ(t.samples.size(), 500u);
  EXPECT_EQ(t.samples[0].answers, std::vector<std::string>{"1ee34dc4-3b04-4a8b-805b-fdc94e7ed827"});
  EXPECT_EQ(t.samples[0].metric, Metric::StringMatchAll);

  o.set = ShippedSet::KvRetrieval;
  o.file = kShared + "/data/kv_retrieval/kv-retrieval-75_keys.jsonl.gz";
  o.samples = 3;
  t = make_shipped_task(o);
  ASSERT_EQ(t.samples.size(), 3u);
  for (const auto& s : t.samples) {
    EXPECT_EQ(s.metric, Metric::SubspanEm);
    EXPECT_NE(s.prompt.find("\"" + s.answers[0] + "\""), std::string::npos);  // the value is in the JSON
    EXPECT_EQ(s.prompt.rfind("Corresponding value:"), s.prompt.size() - 20);
  }
  EXPECT_EQ(format_kv_records({{"a", "1"}, {"b", "2"}}), "{\"a\": \"1\",\n \"b\": \"2\"}");

  o.set = ShippedSet::LongEvalLines;
  o.file = kShared + "/data/longeval_lines/200_lines.jsonl";
  o.samples = 0;
  o.split = Split::HeldOut;
  t = make_shipped_task(o);
  ASSERT_EQ(t.samples.size(), 10u);  // 50 records, the last 20 %
  for (const auto& s : t.samples)
    EXPECT_NE(s.prompt.find("REGISTER_CONTENT is <" + s.answers[0] + ">"), std::string::npos);

  const auto qs =
      parse_babi("1 Mary went home.\n2 Where is Mary? \thome\t1\n1 John left.\n2 Where is John? \tgarden\t1\n", "x");
  ASSERT_EQ(qs.size(), 2u);
  EXPECT_EQ(qs[0].story, "Mary went home.\n");
  EXPECT_EQ(qs[0].question, "Where is Mary?");
  EXPECT_EQ(qs[1].story, "John left.\n");
  EXPECT_EQ(qs[1].answer, "garden");
  // A line number too large for any integer names the file and line (was "error: stoul").
  try {
    parse_babi("1 Mary went home.\n99999999999999999999999 Where is Mary? \thome\t1\n", "qa.txt");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("qa.txt: line 2: number: expected an integer", 0), 0u) << e.what();
  }
  o.set = ShippedSet::Babi;
  o.file = kShared + "/data/babi/qa1_single-supporting-fact_test.txt";
  o.split = Split::All;
  t = make_shipped_task(o);
  EXPECT_EQ(t.samples.size(), 1000u);  // 200 stories x 5 questions
  EXPECT_NE(t.samples[0].prompt.find("<context>\nJohn travelled to the hallway.\nMary journeyed to the bathroom.\n"
                                     "</context>\n\nQuestion: Where is John?\nAnswer:"),
            std::string::npos);
  EXPECT_EQ(t.samples[0].answers, std::vector<std::string>{"hallway"});
}

TEST(TasksTruncation, KeepsFirstAndLastHalves) {
  const std::vector<int32_t> ids = {1, 10, 11, 12, 13, 14, 15, 16};
  EXPECT_EQ(truncate_middle_ids(ids, 8), ids);
  EXPECT_EQ(truncate_middle_ids(ids, 4), (std::vector<int32_t>{1, 10, 15, 16}));
  EXPECT_EQ(truncate_middle_ids(ids, 5), (std::vector<int32_t>{1, 10, 15, 16}));  // half = 5 / 2

  const Tokenizer& tok = stories().tokenizer;
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "Line " + std::to_string(i) + " of the story. ";
  const auto full = tok.encode(prompt, true);
  ASSERT_GT(full.size(), 100u);
  EXPECT_EQ(truncate_middle_text(tok, prompt, full.size()), prompt);
  const std::string cut = truncate_middle_text(tok, prompt, 60);
  EXPECT_EQ(cut.rfind("Line 0 of", 0), 0u);                                   // starts like the prompt
  EXPECT_EQ(cut.substr(cut.size() - 20), prompt.substr(prompt.size() - 20));  // ends like it
  EXPECT_EQ(cut.find("Line 20 "), std::string::npos);                         // the middle is gone
  bool truncated = false;
  const auto ids60 = encode_truncated(tok, prompt, 60, &truncated);
  EXPECT_TRUE(truncated);
  EXPECT_LE(ids60.size(), 60u);
  EXPECT_GE(ids60.size(), 56u);
  EXPECT_EQ(ids60[0], tok.bos_id());

  // A prompt far longer than 60 tokens can span is cut by bytes before tokenising (memory bounded by
  // what the model can use), with the same ids as tokenising it whole.
  std::string huge;
  for (int i = 0; i < 2000; ++i) huge += "Line " + std::to_string(i) + " of the story. ";
  const auto whole = tok.encode(huge, true);
  const size_t half = 30;
  const std::string reference = tok.decode(std::vector<int32_t>(whole.begin(), whole.begin() + half)) +
                                tok.decode(std::vector<int32_t>(whole.end() - half, whole.end()));
  EXPECT_EQ(encode_truncated(tok, huge, 60, &truncated), truncate_middle_ids(tok.encode(reference, true), 60));
  EXPECT_TRUE(truncated);
  EXPECT_EQ(prompt_ends(huge, 60).size(), 2 * 60 * kBytesPerTokenBound);
  EXPECT_EQ(prompt_ends(prompt, 1000), prompt);
  const std::string ends =
      prompt_ends(std::string(100, 'a') + std::string(50, '\xC3') + "\xA9" + std::string(100, 'b'), 1);
  EXPECT_EQ(ends, std::string(32, 'a') + std::string(32, 'b'));
  const std::string accents =
      prompt_ends(std::string(200, 'a') + "\xC3\xA9" + std::string(30, 'b'), 1);  // é at the tail cut
  EXPECT_EQ(accents, std::string(32, 'a') + "\xC3\xA9" + std::string(30, 'b'));
}

TEST(TasksRegistry, BuildsTasksAndNamesBadFields) {
  REQUIRE_FILE(kLongBench + "/multi_news.jsonl");
  TaskContext ctx;
  ctx.tokenizer = &stories().tokenizer;
  ctx.shared_dir = kShared;
  ctx.base_dir = NAMMKIT_SOURCE_DIR;
  const auto set = build_task_set(nlohmann::json::parse(R"([
      {"name": "passkey", "split": "train", "samples": 2, "context_tokens": 256},
      {"name": "lm", "samples": 2, "context_tokens": 256, "score_tokens": 64, "text": "tinystories"},
      {"name": "longbench", "dataset": "multi_news", "file": "../shared/data/longbench/multi_news.jsonl", "samples": 4},
      {"name": "babi", "file": "../shared/data/babi/qa2_two-supporting-facts_test.txt", "samples": 3, "label": "babi2"}])"),
                                  ctx, "set.json");
  ASSERT_EQ(set.size(), 4u);
  EXPECT_EQ(set[0].name, "passkey");
  EXPECT_EQ(set[1].name, "lm/tinystories");
  EXPECT_EQ(set[1].samples[0].kind, SampleKind::LogLikelihood);
  EXPECT_EQ(set[2].samples.size(), 4u);
  EXPECT_EQ(set[3].name, "babi2");
  const auto scored = build_task_set(nlohmann::json::parse(R"([
      {"name": "needle", "samples": 2, "context_tokens": 256, "score": "likelihood"},
      {"name": "needle", "samples": 2, "context_tokens": 256, "score": "match", "label": "needle_match"},
      {"name": "needle", "samples": 2, "context_tokens": 256, "score": "probability", "label": "needle_p"}])"),
                                     ctx, "set.json");
  EXPECT_EQ(scored[0].samples[1].kind, SampleKind::LogLikelihood);
  EXPECT_FALSE(scored[0].samples[1].sequence_probability);
  EXPECT_EQ(scored[0].samples[1].id, scored[1].samples[1].id + "/likelihood");
  EXPECT_EQ(scored[1].samples[1].kind, SampleKind::Generate);
  EXPECT_TRUE(scored[2].samples[1].sequence_probability);
  EXPECT_EQ(scored[2].samples[1].id, scored[1].samples[1].id + "/probability");

  auto err = [&](const char* json) {
    return error_of([&] { build_task_set(nlohmann::json::parse(json), ctx, "set.json"); });
  };
  EXPECT_EQ(err(R"({"name": "passkey", "contxt_tokens": 10})"),
            "set.json: task 0 (passkey): contxt_tokens: unknown field");
  EXPECT_EQ(err(R"({"name": "passkey", "context_tokens": "big"})"),
            "set.json: task 0 (passkey): context_tokens: expected an integer");
  EXPECT_EQ(err(R"({"name": "passkey", "split": "dev"})"),
            "set.json: task 0 (passkey): split: unknown split \"dev\" (expected train, heldout or all)");
  EXPECT_EQ(err(R"({"name": "needle", "depth": 150})"),
            "set.json: task 0 (needle): depth: 150.000000 is outside 0.000000..100.000000");
  EXPECT_EQ(err(R"({"name": "passkey", "depth": 50})"),
            "set.json: task 0 (passkey): depth: only the needle task places its needle at a given depth");
  EXPECT_EQ(err(R"({"name": "longbench", "dataset": "nope", "file": "x"})"),
            "set.json: task 0 (longbench): dataset: unknown LongBench dataset \"nope\"");
  EXPECT_EQ(err(R"({"name": "longbench", "dataset": "multi_news"})"), "set.json: task 0 (longbench): file: missing");
  EXPECT_NE(err(R"({"name": "sudoku"})").find("set.json: task 0 (sudoku): name: unknown task \"sudoku\""),
            std::string::npos);
  EXPECT_NE(err(R"({"name": "lm", "text": "wiki"})").find("set.json: task 0 (lm): text: wiki: unknown text"),
            std::string::npos);
  EXPECT_NE(
      err(R"({"name": "passkey", "haystack": "wiki"})").find("set.json: task 0 (passkey): haystack: wiki: unknown"),
      std::string::npos);
  EXPECT_NE(
      err(R"([{"name": "lm", "context_tokens": 64, "score_tokens": 8}, {"name": "lm", "context_tokens": 64, "score_tokens": 8}])")
          .find("set.json: task 1: label: task name \"lm/tinystories\" is used twice"),
      std::string::npos);
  EXPECT_EQ(err(R"({"name": "passkey", "score": "exact"})"),
            "set.json: task 0 (passkey): score: \"exact\" is not \"match\", \"likelihood\" or \"probability\"");
  EXPECT_EQ(err(R"({"name": "vartrack", "score": "likelihood"})"),
            "set.json: task 0 (vartrack): score: likelihood needs a single answer (passkey, needle or multikey)");
  EXPECT_EQ(err(R"({"name": "needle", "score": "probability", "max_new_tokens": 8})"),
            "set.json: task 0 (needle): max_new_tokens: nothing is generated with score probability");
  EXPECT_EQ(err(R"({"name": "multiquery", "score": "probability"})"),
            "set.json: task 0 (multiquery): score: probability needs a single answer (passkey, needle or multikey)");
  EXPECT_EQ(err(R"({"name": "lm", "score": "likelihood"})"), "set.json: task 0 (lm): score: unknown field");
  EXPECT_EQ(err(R"({"tasks": [], "extra": 1})"), "set.json: extra: unknown field (a task set has only \"tasks\")");
}

}  // namespace
}  // namespace nammkit
