#include "tools/nammkit/experiment_config.h"

#include "core/byte_io.h"
#include "core/file_io.h"
#include "namm/bam_scorer.h"
#include "tasks/data_paths.h"
#include "tools/nammkit/json_reader.h"

namespace nammkit::cli {

std::string expand_shared(const std::string& path) {
  const std::string prefix = "$SHARED/";
  if (path.rfind(prefix, 0) == 0) return default_shared_dir() + "/" + path.substr(prefix.size());
  return path;
}

std::string ExperimentConfig::hash() const { return hex64(fnv1a64(canonical)); }

ExperimentConfig parse_experiment_config(const nlohmann::json& json, const std::string& file) {
  ExperimentConfig c;
  c.file = file;
  // The experiment's identity (hashed into provenance, checked on resume): everything but where
  // its files go, so a copy of a run directory can be resumed elsewhere.
  nlohmann::json identity = json;
  if (identity.is_object()) identity.erase("output_dir");
  c.canonical = identity.dump();
  c.source = json.dump(2) + "\n";
  JsonReader root(json, file, "");
  c.name = root.get_string("name", "experiment");
  c.seed = static_cast<uint64_t>(root.get_int("seed", 0, 0, 2147483647));
  c.model = expand_shared(root.require_string("model"));
  c.output_dir = root.require_string("output_dir");
  c.threads = root.get_int("threads", 0, 0, 4096);

  JsonReader session = root.object("session");
  c.session.prefill_chunk = session.get_int("prefill_chunk", 128, 1, 1 << 20);
  c.session.update_interval = session.get_int("update_interval", kDefaultUpdateInterval, 16, 1 << 20);
  if (c.session.update_interval % 16 != 0)
    session.fail_at("update_interval", "must be a multiple of 16 (the spectrogram hop)");
  c.session.attention_bf16 = session.get_bool("attention_bf16", false);
  c.session.float_activations = session.get_bool("float_activations", false);
  c.max_context = session.get_int("max_context", 0, 0, 1 << 24);
  session.finish();

  JsonReader policy = root.object("policy");
  const std::string scorer = policy.get_string("scorer", "bam");
  if (scorer == "bam") c.scorer = ScorerKind::Bam;
  else if (scorer == "mlp") c.scorer = ScorerKind::Mlp;
  else policy.fail_at("scorer", "expected \"bam\" or \"mlp\", got \"" + scorer + "\"");
  const std::string selection = policy.get_string("selection", "shared_max_k");
  if (selection == "shared_max_k") c.selection.mode = SelectionMode::SharedMaxK;
  else if (selection == "per_head") c.selection.mode = SelectionMode::PerHead;
  else policy.fail_at("selection", "expected \"shared_max_k\" or \"per_head\", got \"" + selection + "\"");
  c.selection.max_tokens_per_head = policy.get_int("max_tokens_per_head", 0, 0, 1 << 24);
  policy.finish();

  JsonReader cmaes = root.object("cmaes");
  ScorerShape shape;
  shape.kind = c.scorer;
  c.cmaes = evo::namm_reference_settings(shape.n_params(), c.seed);
  c.cmaes.lambda = cmaes.get_int("population", c.cmaes.lambda, 2, 1 << 16);
  c.cmaes.elite_ratio = cmaes.get_double("elite_ratio", c.cmaes.elite_ratio, 1e-6, 1.0);
  c.cmaes.sigma0 = cmaes.get_double("sigma0", c.cmaes.sigma0, 1e-12, 1e6);
  c.cmaes.separable = cmaes.get_bool("separable", c.cmaes.separable);
  c.cmaes.lazy_eigen = cmaes.get_bool("lazy_eigen", c.cmaes.lazy_eigen);
  c.cmaes.reference_initial_jitter = cmaes.get_bool("reference_initial_jitter", c.cmaes.reference_initial_jitter);
  cmaes.finish();
  if (int(c.cmaes.lambda * c.cmaes.elite_ratio) < 1)
    cmaes.fail_at("elite_ratio", "population x elite_ratio must select at least one member");

  JsonReader fitness = root.object("fitness");
  c.cache_weight = fitness.get_double("cache_weight", 0.0, 0.0, 1e6);
  c.epsilon = fitness.get_double("epsilon", 0.01, 1e-9, 1.0);
  fitness.finish();

  JsonReader norm = root.object("normalization");
  c.norm_samples = norm.get_int("samples", 0, 0, 1 << 20);
  norm.finish();

  for (JsonReader& stage : root.array_of_objects("stages")) {
    StageConfig s;
    s.name = stage.get_string("name", "stage" + std::to_string(c.stages.size() + 1));
    s.generations = stage.get_int("generations", 0, 1, 1 << 24);
    if (!stage.has("generations")) stage.fail_at("generations", "missing (required)");
    s.prompts_per_generation = stage.get_int("prompts_per_generation", 0, 0, 1 << 20);
    s.tasks = stage.require_raw("tasks");
    stage.finish();
    c.stages.push_back(std::move(s));
  }
  root.finish();
  evo::validate_settings(c.cmaes);
  return c;
}

ExperimentConfig load_experiment_config(const std::string& path) {
  const std::string text = read_file(path);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("not valid JSON: ") + e.what());
  }
  return parse_experiment_config(json, path);
}

}  // namespace nammkit::cli
