#include "namm/memory3_reader.h"

#include <algorithm>

#include "core/error.h"
#include "namm/export_memory3.h"

namespace nammkit {

Memory3Generation generate_with_retrieval(Session& session, const MemoryBank& bank, const BankRetriever& retriever,
                                          std::span<const int32_t> prompt, const Memory3ReadOptions& options,
                                          const std::function<bool(int32_t)>& on_token,
                                          const std::function<void(const Memory3Retrieval&)>& on_retrieval) {
  if (prompt.empty()) fail("memory3 read", "prompt: empty");
  if (options.memories < 1 || options.retrieve_every < 1)
    fail("memory3 read", "memories and retrieve_every: expected >= 1");
  if (retriever.n_chunks() != bank.n_chunks())
    fail(bank.name(), "retriever: indexes " + std::to_string(retriever.n_chunks()) + " chunks, the bank has " +
                          std::to_string(bank.n_chunks()));
  const Tokenizer& tok = session.model().tokenizer;
  const int64_t context = session.model().config.max_seq_len;
  Memory3Generation out;
  std::vector<int> current;                                // injected chunk indices, in retrieval order
  std::vector<int32_t> fed(prompt.begin(), prompt.end());  // what the session has seen after the memories

  // Retrieves for `query`; when the chunks change, swaps the memories and feeds `fed` again.
  // Returns the logits after the last fed token; nullptr when a re-retrieval keeps the same chunks.
  auto retrieve = [&](const std::string& query, bool first) -> const std::vector<float>* {
    Memory3Retrieval r;
    r.generated = static_cast<int>(out.tokens.size());
    r.query = query;
    r.chunks = retriever.retrieve(query, options.memories);
    std::vector<int> chosen;
    for (const RetrievedChunk& c : r.chunks) chosen.push_back(c.index);
    if (on_retrieval) on_retrieval(r);
    out.retrievals.push_back(std::move(r));
    if (!first && chosen == current) return nullptr;
    current = std::move(chosen);
    const int64_t start = inject_memories(session, bank, current);
    if (context > 0 && start + int64_t(fed.size()) > context)
      fail("memory3 read", "memories (" + std::to_string(start) + " positions) and " + std::to_string(fed.size()) +
                               " tokens exceed the model's context of " + std::to_string(context));
    return &session.feed(fed);
  };

  const std::vector<float>* logits = retrieve(tok.decode(fed), true);
  const GenerateOptions& g = options.generate;
  for (int i = 0; i < g.max_new_tokens; ++i) {
    const int32_t next = argmax(*logits);
    if (g.stop_at_eos && g.eos_id >= 0 && next == g.eos_id) break;
    out.tokens.push_back(next);
    if (on_token && on_token(next)) break;
    if (i + 1 == g.max_new_tokens) break;
    if (context > 0 && session.position() + 1 > context) break;  // no room for the next position
    fed.push_back(next);
    const int n = static_cast<int>(out.tokens.size());
    const std::vector<float>* swapped = nullptr;
    if (n % options.retrieve_every == 0)  // the latest 64 generated tokens are the next query
      swapped = retrieve(tok.decode(std::vector<int32_t>(out.tokens.end() - options.retrieve_every, out.tokens.end())),
                         false);
    if (swapped) {
      logits = swapped;
    } else {
      const int32_t one[1] = {next};
      logits = &session.feed(one);
    }
  }
  return out;
}

}  // namespace nammkit
