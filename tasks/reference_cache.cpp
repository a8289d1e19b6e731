#include "tasks/reference_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"

namespace nammkit {
namespace {

constexpr const char* kFormat = "nammkit-full-cache-reference/1";

// FNV-1a 64 fed field by field; fields are length-prefixed so concatenations cannot collide.
struct Hasher {
  uint64_t h = kFnvOffset;
  void bytes(const void* p, size_t n) { h = fnv1a64(std::string_view(static_cast<const char*>(p), n), h); }
  template <class T>
  void value(const T& v) {
    bytes(&v, sizeof(v));
  }
  void str(const std::string& s) {
    value(s.size());
    bytes(s.data(), s.size());
  }
};

std::string file_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return std::to_string(static_cast<long long>(st.st_size)) + "@" +
         std::to_string(static_cast<long long>(st.st_mtim.tv_sec)) + "." +
         std::to_string(static_cast<long long>(st.st_mtim.tv_nsec));
}

nlohmann::json parse_file(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, "expected a JSON object");
  if (!j.contains("format") || j["format"] != kFormat) fail(path, std::string("format: expected \"") + kFormat + "\"");
  if (!j.contains("models") || !j["models"].is_object()) fail(path, "models: expected an object");
  for (const auto& [model, tasks] : j["models"].items()) {
    if (!tasks.is_object()) fail(path, "models." + model + ": expected an object");
    for (const auto& [task, samples] : tasks.items()) {
      if (!samples.is_object()) fail(path, "models." + model + "." + task + ": expected an object");
      for (const auto& [id, e] : samples.items()) {
        const std::string where = "models." + model + "." + task + "." + id;
        if (!e.is_object() || !e.contains("fingerprint") || !e["fingerprint"].is_string() || !e.contains("score") ||
            !e["score"].is_number() || !e.contains("log_likelihood") || !e["log_likelihood"].is_number() ||
            !e.contains("mean_cache") || !e["mean_cache"].is_number())
          fail(path, where + ": expected {fingerprint, score, log_likelihood, mean_cache}");
      }
    }
  }
  return j;
}

}  // namespace

std::string model_identity(const Model& model) {
  std::string stamp;
  if (is_directory(model.path)) {
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(model.path))
      if (e.is_regular_file()) files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) stamp += f + "=" + file_stamp(model.path + "/" + f) + ";";
  } else {
    stamp = file_stamp(model.path);
  }
  const ModelConfig& c = model.config;
  Hasher h;
  h.str(c.architecture);
  for (int v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.max_seq_len,
                c.rope_original_context, static_cast<int>(c.rope_style), static_cast<int>(c.rope_scaling),
                static_cast<int>(c.qkv_bias), static_cast<int>(c.tied_embeddings)})
    h.value(v);
  for (float v :
       {c.norm_eps, c.rope_theta, c.rope_factor, c.rope_ntk_alpha, c.rope_low_freq_factor, c.rope_high_freq_factor})
    h.value(v);
  return std::filesystem::absolute(model.path).lexically_normal().string() + "|" + stamp + "|" + hex64(h.h);
}

uint64_t sample_fingerprint(const Sample& s, const RunOptions& options) {
  Hasher h;
  h.value(static_cast<int>(s.kind));
  h.str(s.prompt);
  h.value(s.answers.size());
  for (const auto& a : s.answers) h.str(a);
  h.value(s.all_classes.size());
  for (const auto& a : s.all_classes) h.str(a);
  h.value(static_cast<int>(s.metric));
  h.value(s.max_new_tokens);
  h.value(static_cast<int>(s.first_line_only));
  h.value(static_cast<int>(s.stop_at_newline));
  h.value(s.tokens.size());
  h.bytes(s.tokens.data(), s.tokens.size() * sizeof(int32_t));
  h.value(s.score_tokens);
  h.value(options.max_context);
  h.value(options.session.prefill_chunk);
  h.value(options.session.update_interval);
  h.value(static_cast<int>(options.session.attention_bf16));
  if (options.session.float_activations) h.value(1);  // only when set: older cache files stay valid
  if (s.sequence_probability) h.value(2);             // likewise
  return h.h;
}

ReferenceCache::ReferenceCache(std::string path) : path_(std::move(path)) {
  if (!path_.empty() && file_exists(path_)) models_ = parse_file(path_)["models"];
}

std::optional<ReferenceEntry> ReferenceCache::find(const std::string& model_id, const std::string& task,
                                                   const std::string& sample_id, uint64_t fingerprint) const {
  auto m = models_.find(model_id);
  if (m == models_.end()) return std::nullopt;
  auto t = m->find(task);
  if (t == m->end()) return std::nullopt;
  auto e = t->find(sample_id);
  if (e == t->end() || (*e)["fingerprint"].get<std::string>() != hex64(fingerprint)) return std::nullopt;
  return ReferenceEntry{fingerprint, (*e)["score"].get<double>(), (*e)["log_likelihood"].get<double>(),
                        (*e)["mean_cache"].get<double>()};
}

void ReferenceCache::put(const std::string& model_id, const std::string& task, const std::string& sample_id,
                         const ReferenceEntry& e) {
  models_[model_id][task][sample_id] = {{"fingerprint", hex64(e.fingerprint)},
                                        {"score", e.score},
                                        {"log_likelihood", e.log_likelihood},
                                        {"mean_cache", e.mean_cache}};
}

void ReferenceCache::save() const {
  if (path_.empty()) return;
  nlohmann::json merged = file_exists(path_) ? parse_file(path_)["models"] : nlohmann::json::object();
  for (const auto& [model, tasks] : models_.items())
    for (const auto& [task, samples] : tasks.items())
      for (const auto& [id, e] : samples.items()) merged[model][task][id] = e;
  const nlohmann::json doc = {{"format", kFormat}, {"models", merged}};
  write_file_atomic(path_, doc.dump(1) + "\n");
}

size_t ReferenceCache::size() const {
  size_t n = 0;
  for (const auto& [model, tasks] : models_.items())
    for (const auto& [task, samples] : tasks.items()) n += samples.size();
  return n;
}

}  // namespace nammkit
