#include "namm/policy_file.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "namm/baselines.h"
#include "transformer/backend.h"

#ifndef NAMMKIT_VERSION
#define NAMMKIT_VERSION "unknown"
#endif

namespace nammkit {

namespace {
constexpr char kMagic[8] = {'N', 'A', 'M', 'M', 'P', 'L', 'C', 'Y'};
constexpr size_t kHeaderBytes = 8 + 8 + 4;

bool is_namm(PolicyKind k) { return k == POLICY_NAMM_BAM || k == POLICY_NAMM_MLP; }

template <typename Values>
void require_finite(const Values& values, const std::string& where, const std::string& field) {
  for (int i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      fail(where, field + "[" + std::to_string(i) + "]: not finite (" + std::to_string(values[i]) + ")");
}

void require_count(int got, int expected, const std::string& where, const std::string& field) {
  if (got != expected)
    fail(where, field + ": expected " + std::to_string(expected) + " values, got " + std::to_string(got));
}

Budget budget_from(const BaselineHyper& b) { return Budget{b.budget_is_fraction(), b.budget()}; }

}  // namespace

const char* nammkit_version() { return NAMMKIT_VERSION; }

void apply_policy_session(const PolicyFile& file, SessionOptions& session) {
  session.update_interval = file.update_interval();
  session.attention_bf16 = file.attention_bf16();
}

int run_update_interval(int flag, const PolicyFile* own_file, const PolicyFile* first_file) {
  if (flag > 0) return flag;
  if (own_file) return own_file->update_interval();
  return first_file ? first_file->update_interval() : kDefaultUpdateInterval;
}

const char* policy_kind_name(PolicyKind kind) {
  switch (kind) {
    case POLICY_NAMM_BAM: return "namm_bam";
    case POLICY_NAMM_MLP: return "namm_mlp";
    case POLICY_FULL: return "full";
    case POLICY_STREAMING: return "streaming";
    case POLICY_H2O: return "h2o";
    case POLICY_L2: return "l2";
    case POLICY_RANDOM: return "random";
    default: return "unspecified";
  }
}

static void fill_provenance(PolicyFile& f) {
  f.set_format_version(kPolicyFormatVersion);
  f.mutable_provenance()->set_created_at(utc_now_iso8601());
  f.mutable_provenance()->set_nammkit_version(nammkit_version());
}

PolicyFile make_namm_policy_file(ScorerKind kind) {
  const NammConfig c = NammConfig::reference(kind);
  PolicyFile f;
  fill_provenance(f);
  f.set_kind(kind == ScorerKind::Bam ? POLICY_NAMM_BAM : POLICY_NAMM_MLP);
  f.set_update_interval(kDefaultUpdateInterval);
  NammHyper* h = f.mutable_namm();
  h->set_n_fft(c.spectrogram.n_fft);
  h->set_hop(c.spectrogram.hop);
  h->set_ema_coeff(c.spectrogram.ema_coeff);
  h->set_recency_dim(c.recency.dim);
  h->set_recency_max_freq(c.recency.max_freq);
  h->set_hidden(c.scorer.hidden);
  h->set_n_features(c.scorer.n_features);
  h->set_selection(SELECTION_SHARED_MAX_K);
  h->set_threshold(c.selection.threshold);
  h->set_max_tokens_per_head(c.selection.max_tokens_per_head);
  h->set_keep_fraction(c.selection.keep_fraction);
  f.mutable_params()->Resize(c.scorer.n_params(), 0.0f);
  f.mutable_norm()->mutable_mean()->Resize(c.spectrogram.n_bins(), 0.0f);
  f.mutable_norm()->mutable_var()->Resize(c.spectrogram.n_bins(), 1.0f);
  f.mutable_norm()->set_count(0);
  return f;
}

PolicyFile make_baseline_policy_file(const std::string& spec) {
  const std::string where = "policy spec '" + spec + "'";
  std::vector<std::string> parts;
  {
    std::stringstream ss(spec);
    std::string part;
    while (std::getline(ss, part, ',')) parts.push_back(trim(part));
  }
  if (parts.empty() || parts[0].empty()) fail(where, "empty");
  std::string kind = parts[0], budget_text;
  if (auto colon = kind.find(':'); colon != std::string::npos) {
    budget_text = trim(kind.substr(colon + 1));
    kind = trim(kind.substr(0, colon));
  }
  PolicyFile f;
  fill_provenance(f);
  f.set_update_interval(kDefaultUpdateInterval);
  BaselineHyper* b = f.mutable_baseline();
  if (kind == "full") f.set_kind(POLICY_FULL);
  else if (kind == "streaming") f.set_kind(POLICY_STREAMING), b->set_sinks(4);
  else if (kind == "h2o") f.set_kind(POLICY_H2O), b->set_heavy_ratio(0.5);
  else if (kind == "l2") f.set_kind(POLICY_L2);
  else if (kind == "random") f.set_kind(POLICY_RANDOM), b->set_seed(0);
  else fail(where, "unknown policy '" + kind + "' (expected full, streaming, h2o, l2 or random)");

  if (f.kind() == POLICY_FULL) {
    if (!budget_text.empty() || parts.size() > 1) fail(where, "full takes no budget or options");
    return f;
  }
  if (budget_text.empty()) fail(where, kind + " needs a budget, e.g. '" + kind + ":512' or '" + kind + ":0.25'");
  const Budget budget = Budget::parse(budget_text, where);
  b->set_budget_is_fraction(budget.is_fraction);
  b->set_budget(budget.value);
  for (size_t i = 1; i < parts.size(); ++i) {
    const auto eq = parts[i].find('=');
    if (eq == std::string::npos) fail(where, "option '" + parts[i] + "': expected name=value");
    const std::string key = trim(parts[i].substr(0, eq)), value = trim(parts[i].substr(eq + 1));
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0') fail(where, key + ": not a number: '" + value + "'");
    if (key == "sinks" && f.kind() == POLICY_STREAMING) {
      if (v < 0 || v != std::floor(v)) fail(where, "sinks: expected an integer >= 0");
      b->set_sinks(static_cast<int>(v));
    } else if (key == "interval") {
      if (v < 1 || v != std::floor(v)) fail(where, "interval: expected an integer >= 1");
      f.set_update_interval(static_cast<int>(v));
    } else if (key == "heavy" && f.kind() == POLICY_H2O) {
      b->set_heavy_ratio(v);
    } else if (key == "seed" && f.kind() == POLICY_RANDOM) {
      if (v < 0 || v != std::floor(v)) fail(where, "seed: expected an integer >= 0");
      b->set_seed(static_cast<uint64_t>(v));
    } else {
      fail(where, "unknown option '" + key + "' for " + kind);
    }
  }
  validate_policy_file(f, where);
  return f;
}

NammConfig namm_config_from(const PolicyFile& file) {
  NammConfig c;
  const NammHyper& h = file.namm();
  c.spectrogram.n_fft = h.n_fft();
  c.spectrogram.hop = h.hop();
  c.spectrogram.ema_coeff = h.ema_coeff();
  c.recency.dim = h.recency_dim();
  c.recency.max_freq = h.recency_max_freq();
  c.scorer.kind = file.kind() == POLICY_NAMM_MLP ? ScorerKind::Mlp : ScorerKind::Bam;
  c.scorer.hidden = h.hidden();
  c.scorer.n_features = h.n_features();
  c.selection.mode = h.selection() == SELECTION_PER_HEAD ? SelectionMode::PerHead : SelectionMode::SharedMaxK;
  c.selection.threshold = h.threshold();
  c.selection.max_tokens_per_head = h.max_tokens_per_head();
  c.selection.keep_fraction = h.keep_fraction();
  return c;
}

FeatureNormalizer normalizer_from(const PolicyFile& file) {
  return FeatureNormalizer(std::vector<float>(file.norm().mean().begin(), file.norm().mean().end()),
                           std::vector<float>(file.norm().var().begin(), file.norm().var().end()));
}

void set_norm_stats(PolicyFile& file, const FeatureStats& stats) {
  NormStats* n = file.mutable_norm();
  n->clear_mean();
  n->clear_var();
  const std::vector<double> var = stats.variance();
  for (int i = 0; i < stats.dim(); ++i) {
    n->add_mean(static_cast<float>(stats.mean()[i]));
    n->add_var(static_cast<float>(var[i]));
  }
  n->set_count(stats.count());
}

void set_base_model(PolicyFile& file, const Model& model) {
  BaseModel* b = file.mutable_base_model();
  b->set_name(model.config.name);
  b->set_path(model.path);
  b->set_n_layers(model.config.n_layers);
  b->set_n_heads(model.config.n_heads);
  b->set_n_kv_heads(model.config.n_kv_heads);
  b->set_head_dim(model.config.head_dim);
}

void validate_policy_file(const PolicyFile& f, const std::string& where) {
  if (f.format_version() != kPolicyFormatVersion)
    fail(where, "format_version: expected " + std::to_string(kPolicyFormatVersion) + ", got " +
                    std::to_string(f.format_version()) +
                    (f.format_version() > kPolicyFormatVersion ? " (written by a newer nammkit)" : ""));
  const PolicyKind kind = f.kind();
  if (kind == POLICY_KIND_UNSPECIFIED || !PolicyKind_IsValid(kind))
    fail(where, "kind: unknown policy kind " + std::to_string(static_cast<int>(kind)));
  if (f.update_interval() < 1)
    fail(where, "update_interval: expected >= 1, got " + std::to_string(f.update_interval()));

  if (is_namm(kind)) {
    const NammConfig c = namm_config_from(f);
    if (f.namm().selection() == SELECTION_UNSPECIFIED || !SelectionModeProto_IsValid(f.namm().selection()))
      fail(where, "namm.selection: unknown selection mode " + std::to_string(static_cast<int>(f.namm().selection())));
    c.validate(where + ": namm");
    if (f.update_interval() % c.spectrogram.hop != 0)
      fail(where, "update_interval: must be a multiple of hop " + std::to_string(c.spectrogram.hop) + ", got " +
                      std::to_string(f.update_interval()));
    require_count(f.params_size(), c.scorer.n_params(), where, "params");
    require_finite(f.params(), where, "params");
    require_count(f.norm().mean_size(), c.spectrogram.n_bins(), where, "norm.mean");
    require_count(f.norm().var_size(), c.spectrogram.n_bins(), where, "norm.var");
    require_finite(f.norm().mean(), where, "norm.mean");
    require_finite(f.norm().var(), where, "norm.var");
    for (int i = 0; i < f.norm().var_size(); ++i)
      if (f.norm().var(i) < 0) fail(where, "norm.var[" + std::to_string(i) + "]: negative");
    if (f.norm().count() < 0) fail(where, "norm.count: negative");
  } else {
    if (f.params_size() != 0)
      require_count(f.params_size(), 0, where,
                    "params (a " + std::string(policy_kind_name(kind)) + " policy has none)");
    if (kind != POLICY_FULL) {
      const BaselineHyper& b = f.baseline();
      budget_from(b).validate(where + ": baseline");
      if (kind == POLICY_STREAMING && b.sinks() < 0) fail(where, "baseline.sinks: expected >= 0");
      if (kind == POLICY_H2O && !(b.heavy_ratio() >= 0 && b.heavy_ratio() <= 1))
        fail(where, "baseline.heavy_ratio: expected a value in [0, 1], got " + std::to_string(b.heavy_ratio()));
    }
  }
  if (!std::isfinite(f.provenance().fitness())) fail(where, "provenance.fitness: not finite");
  if (f.has_bmojo()) {
    const BmojoTarget& t = f.bmojo();
    if (t.window() < 1) fail(where, "bmojo.window: expected >= 1, got " + std::to_string(t.window()));
    if (t.memory_budget() < 0)
      fail(where, "bmojo.memory_budget: expected >= 0, got " + std::to_string(t.memory_budget()));
    if (t.update_every() != f.update_interval())
      fail(where, "bmojo.update_every: " + std::to_string(t.update_every()) + " differs from update_interval " +
                      std::to_string(f.update_interval()));
    if (t.granularity() == BMOJO_GRANULARITY_UNSPECIFIED || !BmojoGranularity_IsValid(t.granularity()))
      fail(where, "bmojo.granularity: unknown value " + std::to_string(static_cast<int>(t.granularity())));
    if (t.innovation() == INNOVATION_UNSPECIFIED || !InnovationFeature_IsValid(t.innovation()))
      fail(where, "bmojo.innovation: unknown value " + std::to_string(static_cast<int>(t.innovation())));
    if (!std::isfinite(t.threshold())) fail(where, "bmojo.threshold: not finite");
  }
}

std::string serialize_policy(const PolicyFile& file) {
  std::string payload;
  if (!file.SerializeToString(&payload)) fail("serialize_policy", "protobuf serialization failed");
  std::string out(kMagic, sizeof kMagic);
  put_le<uint64_t>(out, payload.size());
  put_le<uint32_t>(out, crc32(payload));
  out += payload;
  return out;
}

PolicyFile parse_policy(std::string_view bytes, const std::string& where) {
  // string_view comparisons, not memcmp: an empty view may have a null data() (found by fuzz_policy).
  const std::string_view magic(kMagic, sizeof kMagic);
  if (bytes.size() < kHeaderBytes || bytes.substr(0, magic.size()) != magic) {
    const size_t n = std::min(bytes.size(), magic.size());
    if (bytes.size() < kHeaderBytes && bytes.substr(0, n) == magic.substr(0, n))
      fail(where, "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the header");
    fail(where, "not a nammkit policy file (no NAMMPLCY header)");
  }
  const uint64_t size = get_le<uint64_t>(bytes.data() + 8);
  const uint32_t crc = get_le<uint32_t>(bytes.data() + 16);
  const uint64_t have = bytes.size() - kHeaderBytes;
  if (have < size)
    fail(where, "truncated: header says " + std::to_string(size) + " payload bytes, file has " + std::to_string(have));
  if (have > size) fail(where, "corrupted: " + std::to_string(have - size) + " unexpected bytes after the payload");
  const std::string_view payload = bytes.substr(kHeaderBytes);
  if (crc32(payload) != crc) fail(where, "corrupted: checksum mismatch");
  PolicyFile f;
  if (!f.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    fail(where, "corrupted: not a valid PolicyFile message");
  validate_policy_file(f, where);
  return f;
}

void save_policy(const PolicyFile& file, const std::string& path) {
  validate_policy_file(file, path);
  write_file_atomic(path, serialize_policy(file));
}

PolicyFile load_policy(const std::string& path) { return parse_policy(read_file(path), path); }

std::string policy_to_json(const PolicyFile& file) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(file, &json, options);
  if (!status.ok()) fail("policy_to_json", status.ToString());
  return json;
}

namespace {

// A policy has no nested arrays, but protobuf's JSON parser flattens them into a repeated field.
void reject_nested_arrays(const nlohmann::json& j, const std::string& path, const std::string& where) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items())
      reject_nested_arrays(value, path.empty() ? key : path + "." + key, where);
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      if (j[i].is_array() || j[i].is_object())
        fail(where,
             path + "[" + std::to_string(i) + "]: expected a number or string, found a nested " + j[i].type_name());
    }
  }
}

}  // namespace

PolicyFile policy_from_json(std::string_view json, const std::string& where) {
  // Syntax and shape first with nlohmann (one-line errors; protobuf's put a caret on a third line).
  try {
    reject_nested_arrays(nlohmann::json::parse(json), "", where);
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("invalid policy JSON: ") + e.what());
  }
  PolicyFile f;
  google::protobuf::util::JsonParseOptions options;  // unknown fields are errors: a typo never passes silently
  const auto status = google::protobuf::util::JsonStringToMessage(std::string(json), &f, options);
  if (!status.ok()) {
    const std::string message = status.ToString();
    fail(where, "invalid policy JSON: " + message.substr(0, message.find('\n')));
  }
  validate_policy_file(f, where);
  return f;
}

std::string describe_policy(const PolicyFile& f) {
  std::ostringstream o;
  o << "policy:          " << policy_kind_name(f.kind()) << " (format " << f.format_version() << ")\n";
  o << "update interval: " << f.update_interval() << " tokens\n";
  o << "attention:       " << (f.attention_bf16() ? "rounded to bf16 before the policy sees it" : "f32") << "\n";
  if (is_namm(f.kind())) {
    const NammHyper& h = f.namm();
    o << "spectrogram:     n_fft " << h.n_fft() << ", hop " << h.hop() << ", periodic Hann, " << h.n_fft() / 2 + 1
      << " bins, EMA " << h.ema_coeff() << " per token\n";
    o << "recency:         " << h.recency_dim() << " dims, max_freq " << h.recency_max_freq() << "\n";
    o << "scorer:          "
      << (f.kind() == POLICY_NAMM_BAM ? "BAM (backward mask, gated residual), hidden " + std::to_string(h.hidden())
                                      : std::string("linear read-out"))
      << ", " << h.n_features() << " features\n";
    o << "selection:       "
      << (h.selection() == SELECTION_PER_HEAD ? "per head" : "shared K = max over heads, top-K per head")
      << ", threshold " << h.threshold() << ", cap "
      << (h.max_tokens_per_head() > 0 ? std::to_string(h.max_tokens_per_head()) : std::string("none")) << "\n";
    if (h.keep_fraction() > 0)
      o << "budget:          each head keeps its top " << h.keep_fraction()
        << " x tokens seen by score (replaces the threshold)\n";
    double sum_abs = 0, sum_sq = 0, max_abs = 0;
    int zeros = 0;
    for (float p : f.params()) {
      sum_abs += std::fabs(p);
      sum_sq += double{p} * p;
      max_abs = std::max(max_abs, double{std::fabs(p)});
      zeros += p == 0.0f;
    }
    const int n = f.params_size();
    o << "params:          " << n << " values, mean |p| " << (n ? sum_abs / n : 0.0) << ", max |p| " << max_abs
      << ", L2 " << std::sqrt(sum_sq) << ", " << zeros << " zeros\n";
    o << "norm stats:      count " << f.norm().count() << "\n";
    for (int i = 0; i < f.norm().mean_size(); ++i)
      o << "  bin " << i << (i < 10 ? " " : "") << "  mean " << f.norm().mean(i) << "  var " << f.norm().var(i) << "\n";
  } else if (f.kind() != POLICY_FULL) {
    const BaselineHyper& b = f.baseline();
    o << "budget:          " << budget_from(b).to_string()
      << (b.budget_is_fraction() ? " of the tokens seen" : " tokens per head") << "\n";
    if (f.kind() == POLICY_STREAMING) o << "sinks:           " << b.sinks() << "\n";
    if (f.kind() == POLICY_H2O) o << "heavy ratio:     " << b.heavy_ratio() << "\n";
    if (f.kind() == POLICY_RANDOM) o << "seed:            " << b.seed() << "\n";
  }
  if (f.has_bmojo()) {
    const BmojoTarget& t = f.bmojo();
    o << "bmojo target:    window " << t.window() << ", memory " << t.memory_budget() << ", every " << t.update_every()
      << " tokens, " << (t.granularity() == BMOJO_TOKEN_PER_LAYER ? "token per layer" : "per KV head")
      << ", innovation " << InnovationFeature_Name(t.innovation()) << ", threshold " << t.threshold() << ", replaces "
      << (t.replaced_rule().empty() ? "?" : t.replaced_rule()) << "\n";
  }
  const BaseModel& m = f.base_model();
  if (!m.name().empty() || !m.path().empty())
    o << "base model:      " << m.name() << " (" << m.path() << "), " << m.n_layers() << " layers, " << m.n_heads()
      << " heads, " << m.n_kv_heads() << " KV heads, head_dim " << m.head_dim() << "\n";
  const Provenance& p = f.provenance();
  o << "provenance:      created " << (p.created_at().empty() ? "?" : p.created_at()) << " by nammkit "
    << (p.nammkit_version().empty() ? "?" : p.nammkit_version());
  if (!p.config_hash().empty()) o << ", config " << p.config_hash();
  if (p.generation() || p.fitness()) o << ", generation " << p.generation() << ", fitness " << p.fitness();
  o << "\n";
  if (!p.note().empty()) o << "note:            " << p.note() << "\n";
  return o.str();
}

std::unique_ptr<MemoryPolicy> make_policy(const PolicyFile& f) {
  validate_policy_file(f, "make_policy");
  const BaselineHyper& b = f.baseline();
  switch (f.kind()) {
    case POLICY_NAMM_BAM:
    case POLICY_NAMM_MLP:
      return std::make_unique<NammPolicy>(namm_config_from(f), std::vector<float>(f.params().begin(), f.params().end()),
                                          normalizer_from(f));
    case POLICY_FULL: return std::make_unique<KeepAllPolicy>();
    case POLICY_STREAMING: return std::make_unique<StreamingLlmPolicy>(budget_from(b), b.sinks());
    case POLICY_H2O: return std::make_unique<H2oPolicy>(budget_from(b), b.heavy_ratio());
    case POLICY_L2: return std::make_unique<L2NormPolicy>(budget_from(b));
    case POLICY_RANDOM: return std::make_unique<RandomPolicy>(budget_from(b), b.seed());
    default: fail("make_policy", "kind: unknown policy kind");
  }
}

std::unique_ptr<MemoryPolicy> make_baseline_policy(const std::string& spec) {
  return make_policy(make_baseline_policy_file(spec));
}

}  // namespace nammkit
