// Memory3's retriever (spec memory3_bmojo.md §2.4): which reference chunks of a memory bank to read
// for a query. Memory3 retrieves with dense BGE-M3 embeddings; nammkit uses BM25 over the chunks'
// text (stored in the bank, namm/export_bank.proto BankChunk.text) through Xapian, because
//   - it needs no second model: an embedding model would be another network to load, quantise and
//     test, and the banks are built for small testbed models whose own hidden states are poor
//     sentence embeddings;
//   - BM25 is the standard lexical baseline of retrieval (Robertson & Zaragoza) and is exact for the
//     questions nammkit evaluates, whose answers sit next to rare names and numbers;
//   - Xapian is a mature, packaged library (Debian libxapian-dev) with an in-memory backend, so the
//     index is built when a bank is opened, nothing is written next to it, and it cannot go stale.
//
// Text analysis, the same for chunks and queries: Xapian's TermGenerator with the English Snowball
// stemmer (STEM_ALL: only stemmed terms) and a short English stop list, so that "the", "is", ...
// neither match nor count. Ranking: Xapian::BM25Weight with k1 = 1.2, b = 0.75 (the usual values;
// k2 = 0, k3 = 1, min_normlen = 0.5, Xapian's defaults). Ties go to the lower chunk index, so a query
// always gives the same chunks. A chunk sharing no term with the query is never returned, so fewer
// than n chunks come back when fewer match.
//
// Built without Xapian (the package missing at configure time), available() is false and the
// constructor is an Error that says so.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "namm/memory_bank.h"

namespace nammkit {

struct RetrievedChunk {
  int index = 0;     // chunk index in the bank (the order of its chunks)
  double score = 0;  // BM25
};

class BankRetriever {
 public:
  static bool available();  // nammkit was built with Xapian

  // Indexes the texts, chunk i = texts[i]. `where` names the source in Errors.
  BankRetriever(std::span<const std::string> texts, const std::string& where);
  // Indexes a bank's chunk texts; an Error "<bank>: chunks[].text: ..." when it has none (written
  // before texts were stored: export it again).
  explicit BankRetriever(const MemoryBank& bank);
  ~BankRetriever();
  BankRetriever(BankRetriever&&) noexcept;
  BankRetriever& operator=(BankRetriever&&) noexcept;

  int n_chunks() const { return n_chunks_; }
  // The best `n` chunks for `query`, best first (ties to the lower index); fewer when fewer match.
  std::vector<RetrievedChunk> retrieve(const std::string& query, int n = 5) const;

 private:
  struct Index;
  std::unique_ptr<Index> index_;
  int n_chunks_ = 0;
};

}  // namespace nammkit
