// Memory3 with retrieval, evaluated (issue #17 item 4): question answering over a reference corpus
// where each answer lives in exactly one chunk among >= 1,000, read through the retriever
// (namm/bank_retriever.h) and the injected memories (namm/export_memory3.h).
//
// The corpus. A book of the shared data is cut into chunks of `chunk_words` words (at most
// max_chunk_tokens tokens). Into `questions` of them, drawn by the seed, one sentence is planted:
//   "The secret code of <Name> is <number>."
// with a made-up two-word name (seeded syllables: it occurs nowhere else, so exactly one chunk
// holds the answer) and a four-digit number. Synthetic facts rather than questions about the book:
// the answer cannot be known without the chunk (no memory must fail), it is one short span whose
// tokens a selector either keeps or drops, and its correctness is exact.
// The question is "Question: What is the secret code of <Name>? Answer: The secret code of <Name> is"
// and the answer " <number>"; the retriever's query is the question sentence.
//
// Per question, the answer's NLL (teacher forcing) and exact match (every answer token is the
// argmax, i.e. greedy decoding writes it) under:
//   no memory; the answer's chunk with all its tokens (oracle); the 5 retrieved chunks with all their
//   tokens; and, per selector at k (namm, exp-sum = Memory3's rule, random), the answer's chunk and
//   the 5 retrieved chunks with k tokens per (memory layer, KV head).
// Retrieval recall@5 is the share of questions whose chunk is among the 5 retrieved.
//
// Chunks are encoded when first retrieved (the paper's "cold start", spec §2.2): only the chunks some
// question reads are encoded, once, and every selector builds its bank from that one forward pass.
// The encoding time per chunk is reported, so a bank of the whole corpus can be costed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "namm/export_memory3.h"
#include "namm/policy.pb.h"
#include "transformer/model.h"

namespace nammkit {

struct Memory3QaOptions {
  std::string corpus_path;  // a plain-text book (e.g. shared data/books/pg84.txt)
  int chunks = 1000;        // reference chunks (>= questions)
  int chunk_words = 60;     // words per chunk before the token limit trims it
  int questions = 40;
  int memories = 5;     // chunks retrieved per question
  uint64_t seed = 0;    // which chunks get a fact, names, numbers, where the fact sits
  Memory3Options base;  // k, layers, prefix, max_chunk_tokens; base.selector is ignored
};

struct Memory3QaQuestion {
  int chunk = 0;       // index of the chunk that holds the answer
  std::string name;    // the made-up name
  std::string query;   // the retriever's query: "What is the secret code of <Name>?"
  std::string prompt;  // the model's prompt (ends with "... is")
  std::string answer;  // " <number>"
};

struct Memory3QaCorpus {
  std::vector<ReferenceChunk> chunks;  // ids "c0", "c1", ...
  std::vector<Memory3QaQuestion> questions;
};

// Builds the corpus; Errors name the corpus file when it has too few words for `chunks` chunks.
Memory3QaCorpus build_memory3_qa_corpus(const Tokenizer& tokenizer, const Memory3QaOptions& options);

struct Memory3QaScore {
  std::string name;
  double nll = 0;    // mean answer NLL over the questions
  double exact = 0;  // share answered exactly
};

struct Memory3QaResult {
  int n_chunks = 0, n_questions = 0;
  double mean_chunk_tokens = 0;
  double recall = 0;               // recall@memories of the retriever
  int n_encoded = 0;               // chunks encoded (those some question reads)
  double encode_ms_per_chunk = 0;  // forward pass with attention capture
  double retrieve_ms = 0;          // per query (index built once: index_ms)
  double index_ms = 0;
  std::vector<Memory3QaScore> rows;         // in the order of the header comment
  std::vector<double> select_ms_per_chunk;  // per selector (namm, exp-sum, random)
};

// `policy` is the NAMM policy of the namm selector. Errors when nammkit was built without Xapian.
Memory3QaResult eval_memory3_qa(const Model& model, const PolicyFile& policy, const Memory3QaOptions& options);

}  // namespace nammkit
