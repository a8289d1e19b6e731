#include "experiments/memory3_qa.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "core/file_io.h"
#include "namm/bank_retriever.h"
#include "namm/memory_bank.h"
#include "namm/namm_scoring.h"
#include "transformer/backend.h"
#include "transformer/session.h"

namespace nammkit {
namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t0) {
  return 1e3 * std::chrono::duration<double>(clock_type::now() - t0).count();
}

// A made-up name: two capitalised words of 2-3 consonant-vowel syllables, e.g. "Kavoru Teliz".
std::string made_up_name(std::mt19937_64& rng) {
  static const char* kOnsets[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"};
  static const char* kVowels[] = {"a", "e", "i", "o", "u"};
  auto word = [&](int syllables) {
    std::string w;
    for (int s = 0; s < syllables; ++s) {
      w.append(kOnsets[rng() % 14]);
      w.append(kVowels[rng() % 5]);
    }
    w[0] = static_cast<char>(w[0] - 'a' + 'A');
    return w;
  };
  const int a = 2 + static_cast<int>(rng() % 2), b = 2 + static_cast<int>(rng() % 2);
  return word(a) + " " + word(b);
}

// The parts joined (appends, not operator+: GCC 12's -Wrestrict misfires on literal + string here).
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (std::string_view p : parts) s.append(p);
  return s;
}

// Appends `w` to `s` with a space between them (none when either is empty).
void append_word(std::string& s, const std::string& w) {
  if (!s.empty() && !w.empty()) s.push_back(' ');
  s.append(w);
}

std::string join_words(const std::vector<std::string>& words, size_t from, size_t to) {
  std::string s;
  for (size_t i = from; i < to; ++i) append_word(s, words[i]);
  return s;
}

// Teacher-forced answer: mean NLL and whether every answer token is the argmax.
struct AnswerScore {
  double nll = 0;
  bool exact = true;
};
AnswerScore score(Session& s, const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) {
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), answer.begin(), answer.end() - 1);
  std::vector<float> logits;
  s.feed(seq, &logits);
  const int vocab = s.model().config.vocab_size;
  AnswerScore a;
  for (size_t i = 0; i < answer.size(); ++i) {
    const std::span<const float> row(logits.data() + (prompt.size() - 1 + i) * vocab, size_t(vocab));
    a.nll -= log_prob(row, answer[i]);
    a.exact = a.exact && argmax(row) == answer[i];
  }
  a.nll /= double(answer.size());
  return a;
}

}  // namespace

Memory3QaCorpus build_memory3_qa_corpus(const Tokenizer& tok, const Memory3QaOptions& o) {
  const std::string& where = o.corpus_path;
  if (o.chunks < 1 || o.questions < 1 || o.questions > o.chunks || o.chunk_words < 1)
    fail(where, "memory3-qa: expected 1 <= questions <= chunks and chunk_words >= 1");
  std::vector<std::string> words;
  {
    std::istringstream in(read_file(where));
    // The shared books are Windows-1252: their few non-ASCII bytes (curly quotes, dashes) are dropped
    // so that chunks are valid UTF-8 (JSONL, the tokenizer).
    for (std::string w; in >> w;) {
      std::erase_if(w, [](char ch) { return static_cast<unsigned char>(ch) >= 0x80; });
      if (!w.empty()) words.push_back(w);
    }
  }
  if (words.size() < size_t(o.chunks) * o.chunk_words)
    fail(where, "memory3-qa: " + std::to_string(words.size()) + " words, " + std::to_string(o.chunks) + " chunks of " +
                    std::to_string(o.chunk_words) + " need " + std::to_string(size_t(o.chunks) * o.chunk_words));
  std::mt19937_64 rng(o.seed);
  // Which chunks hold a fact: the first `questions` of a seeded permutation.
  std::vector<int> order(o.chunks);
  for (int i = 0; i < o.chunks; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::map<int, int> fact_of;  // chunk -> question
  Memory3QaCorpus c;
  std::set<std::string> names;
  for (int q = 0; q < o.questions; ++q) {
    Memory3QaQuestion x;
    x.chunk = order[q];
    do x.name = made_up_name(rng);
    while (!names.insert(x.name).second);
    const std::string number = std::to_string(1000 + rng() % 9000);
    x.query = concat({"What is the secret code of ", x.name, "?"});
    x.prompt = concat({"Question: ", x.query, " Answer: The secret code of ", x.name, " is"});
    x.answer = concat({" ", number});
    fact_of[x.chunk] = q;
    c.questions.push_back(std::move(x));
  }
  const int limit = o.base.max_chunk_tokens;
  for (int i = 0; i < o.chunks; ++i) {
    const size_t first = size_t(i) * o.chunk_words;
    size_t n = o.chunk_words;
    const auto f = fact_of.find(i);
    const std::string fact =
        f == fact_of.end()
            ? std::string()
            : concat({"The secret code of ", c.questions[f->second].name, " is", c.questions[f->second].answer, "."});
    const size_t at = f == fact_of.end() ? 0 : rng() % (n + 1);  // the fact goes before word `at`
    std::string text;
    for (;;) {  // trim words from the end until the chunk fits the token limit
      const size_t fact_at = std::min(at, n);
      text = join_words(words, first, first + fact_at);
      append_word(text, fact);
      append_word(text, join_words(words, first + fact_at, first + n));
      const int tokens = static_cast<int>(tok.encode(text, false).size());
      if (tokens <= limit) break;
      if (n == 0) fail(where, concat({"memory3-qa: chunk ", std::to_string(i), ": the fact alone exceeds the limit"}));
      n -= std::min(n, size_t(1 + (tokens - limit) / 3));
    }
    c.chunks.push_back({concat({"c", std::to_string(i)}), text});
  }
  return c;
}

Memory3QaResult eval_memory3_qa(const Model& model, const PolicyFile& policy, const Memory3QaOptions& o) {
  const Tokenizer& tok = model.tokenizer;
  const Memory3QaCorpus corpus = build_memory3_qa_corpus(tok, o);
  Memory3QaResult r;
  r.n_chunks = static_cast<int>(corpus.chunks.size());
  r.n_questions = static_cast<int>(corpus.questions.size());

  // Retrieval over the whole corpus (texts only: no chunk needs encoding to be found).
  std::vector<std::string> texts;
  for (const ReferenceChunk& ch : corpus.chunks) texts.push_back(ch.text);
  auto t0 = clock_type::now();
  const BankRetriever retriever(texts, o.corpus_path);
  r.index_ms = ms_since(t0);
  std::vector<std::vector<int>> retrieved(corpus.questions.size());
  std::set<int> needed;
  t0 = clock_type::now();
  int hits = 0;
  for (size_t q = 0; q < corpus.questions.size(); ++q) {
    for (const RetrievedChunk& c : retriever.retrieve(corpus.questions[q].query, o.memories))
      retrieved[q].push_back(c.index);
    hits += std::count(retrieved[q].begin(), retrieved[q].end(), corpus.questions[q].chunk) > 0;
    needed.insert(retrieved[q].begin(), retrieved[q].end());
    needed.insert(corpus.questions[q].chunk);
  }
  r.retrieve_ms = ms_since(t0) / double(corpus.questions.size());
  r.recall = double(hits) / double(corpus.questions.size());

  // One bank per selector, plus one keeping every token, over the chunks some question reads.
  const std::vector<Memory3Selector> selectors = {Memory3Selector::Namm, Memory3Selector::ExpSum,
                                                  Memory3Selector::Random};
  Memory3Options base = o.base;
  base.attention_bf16 = policy.attention_bf16();  // the attention the NAMM was evolved on
  const NammScoring namm = NammScoring::from(policy);
  std::vector<MemoryBankWriter> writers;
  for (Memory3Selector s : selectors) {
    Memory3Options opt = base;
    opt.selector = s;
    writers.emplace_back(model, opt, "");
  }
  Memory3Options all = base;
  all.selector = Memory3Selector::First;
  all.k = base.max_chunk_tokens;
  writers.emplace_back(model, all, "");
  std::vector<double> select_ms(writers.size(), 0.0);
  std::map<int, int> slot;  // corpus chunk -> bank chunk
  double encode_ms = 0, tokens = 0;
  for (int ci : needed) {
    Memory3Options enc = base;
    enc.selector = Memory3Selector::Namm;  // with attention: every selector can use the one forward pass
    t0 = clock_type::now();
    const EncodedReference ref = encode_chunk(model, corpus.chunks[ci], enc, o.corpus_path);
    encode_ms += ms_since(t0);
    tokens += ref.n_chunk();
    for (size_t w = 0; w < writers.size(); ++w) {
      t0 = clock_type::now();
      writers[w].add(ref, &namm);
      select_ms[w] += ms_since(t0);
    }
    slot[ci] = static_cast<int>(slot.size());
  }
  r.n_encoded = static_cast<int>(needed.size());
  r.encode_ms_per_chunk = encode_ms / r.n_encoded;
  r.mean_chunk_tokens = tokens / r.n_encoded;
  for (size_t s = 0; s < selectors.size(); ++s) r.select_ms_per_chunk.push_back(select_ms[s] / r.n_encoded);
  std::vector<MemoryBank> banks;
  for (const MemoryBankWriter& w : writers) banks.push_back(MemoryBank::from_bytes(w.serialize(), "memory3-qa bank"));
  const MemoryBank& full = banks.back();

  // Rows: no memory, oracle (all tokens), retrieved (all tokens), then per selector oracle and retrieved.
  std::vector<Memory3QaScore> rows = {{"no memory"}, {"answer chunk, all tokens"}, {"retrieved, all tokens"}};
  for (Memory3Selector s : selectors) {
    const std::string k = " (k=" + std::to_string(base.k) + ")";
    rows.push_back({std::string("answer chunk, ") + memory3_selector_name(s) + k});
    rows.push_back({std::string("retrieved, ") + memory3_selector_name(s) + k});
  }
  Session session(model);
  for (size_t q = 0; q < corpus.questions.size(); ++q) {
    const Memory3QaQuestion& x = corpus.questions[q];
    const std::vector<int32_t> prompt = tok.encode(x.prompt, true), answer = tok.encode(x.answer, false);
    const std::vector<int> oracle = {slot.at(x.chunk)};
    std::vector<int> got;
    for (int ci : retrieved[q]) got.push_back(slot.at(ci));
    auto run = [&](size_t row, const MemoryBank* bank, const std::vector<int>& chunks) {
      if (bank) inject_memories(session, *bank, chunks);
      else session.reset();
      const AnswerScore a = score(session, prompt, answer);
      rows[row].nll += a.nll, rows[row].exact += a.exact;
    };
    run(0, nullptr, {});
    run(1, &full, oracle);
    run(2, &full, got);
    for (size_t s = 0; s < selectors.size(); ++s) {
      run(3 + 2 * s, &banks[s], oracle);
      run(4 + 2 * s, &banks[s], got);
    }
  }
  for (Memory3QaScore& row : rows) row.nll /= r.n_questions, row.exact /= r.n_questions;
  r.rows = std::move(rows);
  return r;
}

}  // namespace nammkit
