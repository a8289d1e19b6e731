// Memory3's read path with retrieval (spec memory3_bmojo.md §2.4): generation that reads explicit
// memories chosen by a retriever (namm/bank_retriever.h), as the paper schedules them:
//   - before the prompt, the retriever gets the prompt's text and the best `memories` (5) chunks of
//     the bank are injected (inject_memories, namm/export_memory3.h);
//   - every `retrieve_every` (64) generated tokens, the memories are discarded and the text of those
//     64 tokens is the next query (the paper's query is the latest 64-token chunk, not the whole
//     context); the new chunks are injected and the context so far (prompt + generated tokens) is
//     fed again on top of them, so every position then attends to the new memories.
// The re-feed is where nammkit departs from the paper: Memory3 lets each 64-token chunk attend only
// to its own memories, which needs per-chunk masks the runtime does not have; here the whole context
// sees the current memories, as if it had been read with them. A retrieval that returns the same
// chunks as before keeps the session as it is (nothing changes).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "namm/bank_retriever.h"
#include "namm/memory_bank.h"
#include "transformer/backend.h"
#include "transformer/session.h"

namespace nammkit {

struct Memory3ReadOptions {
  int memories = 5;         // chunks per retrieval
  int retrieve_every = 64;  // generated tokens between retrievals (>= 1)
  GenerateOptions generate;
};

struct Memory3Retrieval {
  int generated = 0;                   // generated tokens before it (0: the prompt's retrieval)
  std::string query;                   // the text it searched with
  std::vector<RetrievedChunk> chunks;  // best first
};

struct Memory3Generation {
  std::vector<int32_t> tokens;  // generated ids, without the prompt
  std::vector<Memory3Retrieval> retrievals;
};

// Greedy generation in `session` (a CPU Session without a memory policy: nothing may evict the
// memories) with memories from `bank` chosen by `retriever`, which must index this bank. Stops at
// EOS (when asked), max_new_tokens, the model's context, or when `on_token` returns true for a token
// (it is kept). `on_retrieval` sees each retrieval as it happens.
Memory3Generation generate_with_retrieval(Session& session, const MemoryBank& bank, const BankRetriever& retriever,
                                          std::span<const int32_t> prompt, const Memory3ReadOptions& options,
                                          const std::function<bool(int32_t)>& on_token = {},
                                          const std::function<void(const Memory3Retrieval&)>& on_retrieval = {});

}  // namespace nammkit
