// The on-disk store of full-cache reference results, so each (model, task, prompt) is run with the
// full cache once and reused by every later fitness evaluation.
//
// File (JSON): {"format": "nammkit-full-cache-reference/1",
//               "models": {<model id>: {<task>: {<sample id>: {"fingerprint": "<16 hex>",
//                          "score": s, "log_likelihood": ll, "mean_cache": c}}}}}
// - model id = model_identity(): the file path, its size and mtime (all files of a directory
//   model) and a hash of the ModelConfig, so a replaced checkpoint never reuses stale scores;
// - fingerprint = sample_fingerprint(): a hash of everything that determines the result (prompt or
//   tokens, answers, metric, lengths, post-processing, context and session options). A stored
//   entry whose fingerprint differs is a miss and gets overwritten.
// save() writes atomically (write_file_atomic) after merging with what is on disk now, so two
// processes filling different entries keep both (the last writer wins on the same entry).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tasks/runner.h"
#include "tasks/sample.h"
#include "transformer/model.h"

namespace nammkit {

std::string model_identity(const Model& model);
uint64_t sample_fingerprint(const Sample& sample, const RunOptions& options);

struct ReferenceEntry {
  uint64_t fingerprint = 0;
  double score = 0;
  double log_likelihood = 0;
  double mean_cache = 0;
};

class ReferenceCache {
 public:
  // An empty path keeps the cache in memory only. An existing file is loaded; a malformed one is
  // an Error naming the path and the field (never silently discarded).
  explicit ReferenceCache(std::string path = "");

  std::optional<ReferenceEntry> find(const std::string& model_id, const std::string& task, const std::string& sample_id,
                                     uint64_t fingerprint) const;
  void put(const std::string& model_id, const std::string& task, const std::string& sample_id, const ReferenceEntry& e);
  void save() const;

  const std::string& path() const { return path_; }
  size_t size() const;  // stored entries

 private:
  std::string path_;
  nlohmann::json models_ = nlohmann::json::object();
};

}  // namespace nammkit
