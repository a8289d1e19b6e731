#include "namm/bank_retriever.h"

#include <algorithm>

#include "core/error.h"

#ifdef NAMMKIT_HAVE_XAPIAN
#include <xapian.h>
#endif

namespace nammkit {

#ifdef NAMMKIT_HAVE_XAPIAN

namespace {

// Function words that would otherwise match nearly every chunk. Short and fixed (not a file of the
// installation) so that retrieval is the same everywhere.
constexpr const char* kStopWords[] = {"a",     "an",    "and",  "are",  "as",  "at",  "be",   "but",  "by",    "for",
                                      "from",  "had",   "has",  "have", "he",  "her", "his",  "i",    "in",    "is",
                                      "it",    "its",   "of",   "on",   "or",  "she", "that", "the",  "their", "them",
                                      "then",  "there", "they", "this", "to",  "was", "were", "what", "when",  "where",
                                      "which", "who",   "will", "with", "you", "your"};

}  // namespace

struct BankRetriever::Index {
  Xapian::WritableDatabase db{std::string(), Xapian::DB_BACKEND_INMEMORY};
  Xapian::Stem stem{"english"};
  Xapian::SimpleStopper stopper{std::begin(kStopWords), std::end(kStopWords)};

  // The analysis shared by chunks and queries (see the header).
  Xapian::TermGenerator generator() const {
    Xapian::TermGenerator g;
    g.set_stemmer(stem);
    g.set_stemming_strategy(Xapian::TermGenerator::STEM_ALL);
    g.set_stopper(&stopper);
    g.set_stopper_strategy(Xapian::TermGenerator::STOP_ALL);
    return g;
  }
};

bool BankRetriever::available() { return true; }

BankRetriever::BankRetriever(std::span<const std::string> texts, const std::string& where)
    : index_(std::make_unique<Index>()), n_chunks_(static_cast<int>(texts.size())) {
  if (texts.empty()) fail(where, "retriever: no chunks to index");
  try {
    Xapian::TermGenerator g = index_->generator();
    for (const std::string& text : texts) {  // docid i + 1 is chunk i: docids start at 1 and go up by one
      Xapian::Document doc;
      g.set_document(doc);
      g.index_text(text);
      index_->db.add_document(doc);
    }
    index_->db.commit();
  } catch (const Xapian::Error& e) {
    fail(where, "retriever: Xapian: " + e.get_description());
  }
}

std::vector<RetrievedChunk> BankRetriever::retrieve(const std::string& query, int n) const {
  std::vector<RetrievedChunk> out;
  if (n <= 0) return out;
  try {
    // The query's terms through the chunks' own analysis (not QueryParser: generated text is not
    // query syntax), each weighted by how often it occurs (BM25's k3 term).
    Xapian::Document scratch;
    Xapian::TermGenerator g = index_->generator();
    g.set_document(scratch);
    g.index_text(query);
    std::vector<Xapian::Query> terms;
    for (auto t = scratch.termlist_begin(); t != scratch.termlist_end(); ++t) terms.emplace_back(*t, t.get_wdf());
    if (terms.empty()) return out;
    Xapian::Enquire enquire(index_->db);
    enquire.set_query(Xapian::Query(Xapian::Query::OP_OR, terms.begin(), terms.end()));
    enquire.set_weighting_scheme(Xapian::BM25Weight(1.2, 0, 1, 0.75, 0.5));
    enquire.set_docid_order(Xapian::Enquire::ASCENDING);  // equal weights: the lower chunk index first
    const Xapian::MSet mset = enquire.get_mset(0, static_cast<Xapian::doccount>(n));
    for (auto it = mset.begin(); it != mset.end(); ++it) out.push_back({static_cast<int>(*it) - 1, it.get_weight()});
  } catch (const Xapian::Error& e) {
    fail("retriever", "Xapian: " + e.get_description());
  }
  // Xapian already orders by weight then docid; restated so the contract does not rest on it.
  std::stable_sort(out.begin(), out.end(), [](const RetrievedChunk& a, const RetrievedChunk& b) {
    return a.score != b.score ? a.score > b.score : a.index < b.index;
  });
  return out;
}

#else  // built without Xapian

struct BankRetriever::Index {};

bool BankRetriever::available() { return false; }

BankRetriever::BankRetriever(std::span<const std::string>, const std::string& where) {
  fail(where, "retriever: nammkit was built without Xapian (install libxapian-dev and configure again)");
}

std::vector<RetrievedChunk> BankRetriever::retrieve(const std::string&, int) const { return {}; }

#endif

namespace {
std::vector<std::string> bank_texts(const MemoryBank& bank) {
  if (!bank.has_texts())
    fail(bank.name(), "chunks[].text: none stored (a bank written before the retriever; export it again)");
  std::vector<std::string> texts;
  texts.reserve(bank.n_chunks());
  for (const auto& ch : bank.index().chunks()) texts.push_back(ch.text());
  return texts;
}
}  // namespace

BankRetriever::BankRetriever(const MemoryBank& bank) : BankRetriever(bank_texts(bank), bank.name()) {}
BankRetriever::~BankRetriever() = default;
BankRetriever::BankRetriever(BankRetriever&&) noexcept = default;
BankRetriever& BankRetriever::operator=(BankRetriever&&) noexcept = default;

}  // namespace nammkit
