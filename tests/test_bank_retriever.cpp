// Memory3's retrieval read path (issue #17 item 4): the Xapian BM25 retriever
// (namm/bank_retriever.h), chunk texts in the bank (namm/memory_bank.h), re-retrieval every N
// generated tokens (namm/memory3_reader.h) and the QA corpus of eval-export memory3-qa.
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "experiments/memory3_qa.h"
#include "namm/bank_retriever.h"
#include "namm/export_memory3.h"
#include "namm/memory3_reader.h"
#include "namm/memory_bank.h"
#include "tests/shared_model.h"
#include "transformer/session.h"

namespace nammkit {
namespace {

using testing::stories;

#define REQUIRE_XAPIAN() \
  if (!BankRetriever::available()) GTEST_SKIP() << "built without Xapian (libxapian-dev)"

const std::vector<std::string> kTexts = {
    "Lily went to the park with her dog and they played all day.",
    "The quartermaster counted seventeen barrels of salted herring in the hold.",
    "Tom had a little boat. He put it in the water and it sailed away.",
    "The dog ran to the park. The dog was happy.",
};

std::vector<int> ids(const std::vector<RetrievedChunk>& r) {
  std::vector<int> out;
  for (const RetrievedChunk& c : r) out.push_back(c.index);
  return out;
}

TEST(BankRetriever, FindsTheChunkWithTheQuerysRareWords) {
  REQUIRE_XAPIAN();
  const BankRetriever r(kTexts, "test");
  EXPECT_EQ(r.n_chunks(), 4);
  const auto got = r.retrieve("How many barrels did the quartermaster count?", 5);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0].index, 1);
  EXPECT_EQ(ids(got), std::vector<int>{1});  // no other chunk shares a (non-stop) term
  // Stemming: "sailing boats" matches "boat", "sailed".
  EXPECT_EQ(r.retrieve("sailing boats", 5).at(0).index, 2);
  // Two chunks about a dog in the park: the one saying "dog" twice ranks first; at most n come back.
  const auto dogs = r.retrieve("dog park", 1);
  EXPECT_EQ(ids(dogs), std::vector<int>{3});
  EXPECT_TRUE(r.retrieve("the of and", 5).empty());  // stop words only
  EXPECT_TRUE(r.retrieve("xylophone", 5).empty());   // no shared term
}

TEST(BankRetriever, DeterministicWithTiesToTheLowerIndex) {
  REQUIRE_XAPIAN();
  const std::vector<std::string> same = {"red apple pie", "blue sky", "red apple pie", "red apple pie"};
  const BankRetriever r(same, "test");
  const auto a = r.retrieve("apple", 5);
  EXPECT_EQ(ids(a), (std::vector<int>{0, 2, 3}));
  EXPECT_DOUBLE_EQ(a[0].score, a[1].score);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ids(BankRetriever(same, "again").retrieve("apple", 5)), ids(a));
}

// A bank of stories260K memories over `chunks` (ids "c<i>").
MemoryBank story_bank(const std::vector<std::string>& chunks) {
  Memory3Options opt;
  opt.selector = Memory3Selector::First;
  MemoryBankWriter w(stories(), opt, "");
  for (size_t i = 0; i < chunks.size(); ++i) {
    std::string id = "c";
    id += std::to_string(i);
    w.add(encode_chunk(stories(), {id, chunks[i]}, opt, "test"), nullptr);
  }
  return MemoryBank::from_bytes(w.serialize(), "story.bank");
}

TEST(BankRetriever, BankStoresTextsAndOldBanksCannotRetrieve) {
  REQUIRE_STORIES();
  REQUIRE_XAPIAN();
  const MemoryBank bank = story_bank(kTexts);
  ASSERT_TRUE(bank.has_texts());
  EXPECT_EQ(bank.index().chunks(1).text(), kTexts[1]);
  EXPECT_EQ(BankRetriever(bank).retrieve("quartermaster", 5).at(0).index, 1);

  // Re-frame the same tensors with an edited index (texts removed or partly removed).
  auto reframe = [&](const std::function<void(bank::BankIndex&)>& edit) {
    bank::BankIndex x = bank.index();
    edit(x);
    const ModelConfig& c = stories().config;
    const size_t prefix = size_t(c.n_layers) * 2 * c.n_kv_heads * x.prefix_tokens_size() * c.head_dim;
    std::vector<std::vector<float>> blocks;
    for (int i = 0; i < bank.n_chunks(); ++i) {
      const float* p = bank.chunk_vector(i, 0, 0, 0, 0);
      blocks.emplace_back(p, p + x.chunk_bytes() / sizeof(float));
    }
    return serialize_bank(x, std::span<const float>(bank.prefix_vector(0, 0, 0, 0), prefix), blocks);
  };
  const MemoryBank old = MemoryBank::from_bytes(reframe([](bank::BankIndex& x) {
                                                  for (auto& ch : *x.mutable_chunks()) ch.clear_text();
                                                }),
                                                "old.bank");
  EXPECT_FALSE(old.has_texts());
  try {
    BankRetriever r(old);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("old.bank: chunks[].text: none stored"), std::string::npos) << e.what();
  }
  try {
    MemoryBank::from_bytes(reframe([](bank::BankIndex& x) { x.mutable_chunks(2)->clear_text(); }), "mixed.bank");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mixed.bank: chunks[2].text: missing while chunks[0] has one"),
              std::string::npos)
        << e.what();
  }
}

// Re-retrieval: the prompt's rare words find chunk 0 only; the generated story finds others, and after
// each swap the session holds exactly the new memories with the context fed again on top.
TEST(Memory3Reader, ReRetrievesEveryNTokensAndSwapsTheMemories) {
  REQUIRE_STORIES();
  REQUIRE_XAPIAN();
  const std::vector<std::string> chunks = {
      "Zorblax quuxified the wibbly gadget.",
      "Lily and Tom went to the park. They saw a big dog and a little cat.",
      "One day, a girl named Lily found a ball. She was very happy and wanted to play.",
      "The sun was hot. Mom said they could go to the pond and swim with the fish.",
  };
  const MemoryBank bank = story_bank(chunks);
  const BankRetriever retriever(bank);
  const std::vector<int32_t> prompt = stories().tokenizer.encode("Zorblax quuxified", true);
  Memory3ReadOptions opt;
  opt.retrieve_every = 16;
  opt.generate.max_new_tokens = 40;
  opt.generate.stop_at_eos = false;
  Session session(stories());
  std::vector<Memory3Retrieval> seen;
  const Memory3Generation g = generate_with_retrieval(session, bank, retriever, prompt, opt, {},
                                                      [&](const Memory3Retrieval& r) { seen.push_back(r); });
  ASSERT_EQ(g.tokens.size(), 40u);
  ASSERT_EQ(g.retrievals.size(), 3u);  // the prompt, after 16 and after 32 tokens
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(g.retrievals[0].generated, 0);
  EXPECT_EQ(ids(g.retrievals[0].chunks), std::vector<int>{0});
  for (int i = 1; i < 3; ++i) {
    const Memory3Retrieval& r = g.retrievals[i];
    EXPECT_EQ(r.generated, 16 * i);
    EXPECT_EQ(r.query, stories().tokenizer.decode(
                           std::vector<int32_t>(g.tokens.begin() + 16 * (i - 1), g.tokens.begin() + 16 * i)));
    EXPECT_LE(r.chunks.size(), 5u);
  }
  EXPECT_NE(ids(g.retrievals[1].chunks), ids(g.retrievals[0].chunks)) << g.retrievals[1].query;
  // The token after a swap is what a fresh session with those memories and that context predicts.
  for (int i = 1; i < 3; ++i) {
    const std::vector<int> now = ids(g.retrievals[i].chunks);
    Session fresh(stories());
    inject_memories(fresh, bank, now);
    std::vector<int32_t> ctx = prompt;
    ctx.insert(ctx.end(), g.tokens.begin(), g.tokens.begin() + 16 * i);
    EXPECT_EQ(argmax(fresh.feed(ctx)), g.tokens[16 * i]) << "after retrieval " << i;
  }
  // Deterministic.
  Session again(stories());
  EXPECT_EQ(generate_with_retrieval(again, bank, retriever, prompt, opt).tokens, g.tokens);
}

TEST(Memory3Qa, EachAnswerLivesInExactlyOneChunk) {
  REQUIRE_STORIES();
  Memory3QaOptions o;
  o.corpus_path = std::string(NAMMKIT_SHARED_DIR) + "/data/books/pg84.txt";
  o.chunks = 1000;
  o.questions = 30;
  const Memory3QaCorpus c = build_memory3_qa_corpus(stories().tokenizer, o);
  ASSERT_EQ(c.chunks.size(), 1000u);
  ASSERT_EQ(c.questions.size(), 30u);
  std::set<int> holders;
  for (const Memory3QaQuestion& q : c.questions) {
    int found = 0;
    for (size_t i = 0; i < c.chunks.size(); ++i) found += c.chunks[i].text.find(q.name) != std::string::npos;
    EXPECT_EQ(found, 1) << q.name;
    std::string fact = "The secret code of ";
    fact.append(q.name).append(" is").append(q.answer).append(".");
    EXPECT_NE(c.chunks[q.chunk].text.find(fact), std::string::npos);
    holders.insert(q.chunk);
  }
  EXPECT_EQ(holders.size(), 30u);
  for (const ReferenceChunk& ch : c.chunks) EXPECT_LE(stories().tokenizer.encode(ch.text, false).size(), 128u) << ch.id;
  if (!BankRetriever::available()) return;
  std::vector<std::string> texts;
  for (const ReferenceChunk& ch : c.chunks) texts.push_back(ch.text);
  const BankRetriever r(texts, "corpus");
  for (const Memory3QaQuestion& q : c.questions) EXPECT_EQ(r.retrieve(q.query, 5).at(0).index, q.chunk) << q.query;
}

}  // namespace
}  // namespace nammkit
