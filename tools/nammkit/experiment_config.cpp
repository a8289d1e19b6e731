#include "tools/nammkit/experiment_config.h"

#include "core/byte_io.h"
#include "core/file_io.h"
#include "evolution/rng.h"
#include "namm/bam_scorer.h"
#include "tasks/data_paths.h"
#include "tools/nammkit/json_reader.h"

namespace nammkit::cli {

std::string expand_shared(const std::string& path) {
  const std::string prefix = "$SHARED/";
  if (path.rfind(prefix, 0) == 0) return default_shared_dir() + "/" + path.substr(prefix.size());
  return path;
}

const char* trainer_name(TrainerKind kind) {
  switch (kind) {
    case TrainerKind::Reinforce: return "reinforce";
    case TrainerKind::Ppo: return "ppo";
    default: return "cmaes";
  }
}

std::vector<double> initial_params(const ExperimentConfig& config) {
  ScorerShape shape;
  shape.kind = config.scorer;
  std::vector<double> p(static_cast<size_t>(shape.n_params()), 0.0);
  // Zero weights are a saddle for gradient training of BAM: with W_o = 0 and V = 0 the attention's
  // parameters get no gradient, so RL configs give a small random scale (CMA-ES does not need one).
  if (config.initial_scale > 0) {
    evo::Rng rng(evo::derive_seed(config.initial_seed, 0x696e6974));  // "init"
    rng.fill_normal(p.data(), p.size());
    for (double& v : p) v *= config.initial_scale;
  }
  p.back() = config.initial_bias;
  return p;
}

std::string ExperimentConfig::hash() const { return hex64(fnv1a64(canonical)); }

ExperimentConfig parse_experiment_config(const nlohmann::json& json, const std::string& file) {
  ExperimentConfig c;
  c.file = file;
  // The experiment's identity (hashed into provenance, checked on resume): everything but where
  // its files go, so a copy of a run directory can be resumed elsewhere.
  nlohmann::json identity = json;
  // "batching" only changes how fast the same results come (lockstep batches are bit-identical).
  if (identity.is_object()) {
    identity.erase("output_dir");
    identity.erase("batching");
  }
  c.canonical = identity.dump();
  c.source = json.dump(2) + "\n";
  JsonReader root(json, file, "");
  c.name = root.get_string("name", "experiment");
  c.seed = static_cast<uint64_t>(root.get_int("seed", 0, 0, 2147483647));
  c.model = expand_shared(root.require_string("model"));
  c.output_dir = root.require_string("output_dir");
  c.threads = root.get_int("threads", 0, 0, 4096);
  JsonReader batching = root.object("batching");
  const std::string batching_mode = batching.get_string("mode", "auto");
  if (batching_mode == "auto") c.batching.mode = BatchingMode::Auto;
  else if (batching_mode == "lockstep") c.batching.mode = BatchingMode::Lockstep;
  else if (batching_mode == "members") c.batching.mode = BatchingMode::Members;
  else batching.fail_at("mode", "expected \"auto\", \"lockstep\" or \"members\", got \"" + batching_mode + "\"");
  c.batching.sequences = batching.get_int("sequences", 64, 1, 4096);
  batching.finish();
  const std::string trainer = root.get_string("trainer", "cmaes");
  if (trainer == "cmaes") c.trainer = TrainerKind::Cmaes;
  else if (trainer == "reinforce") c.trainer = TrainerKind::Reinforce;
  else if (trainer == "ppo") c.trainer = TrainerKind::Ppo;
  else root.fail_at("trainer", "expected \"cmaes\", \"reinforce\" or \"ppo\", got \"" + trainer + "\"");

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
  c.initial_bias = policy.get_double("initial_bias", 0.0, -1e3, 1e3);
  c.initial_scale = policy.get_double("initial_scale", 0.0, 0.0, 1e3);
  c.initial_seed = static_cast<uint64_t>(policy.get_int("initial_seed", 0, 0, 2147483647));
  if (c.trainer != TrainerKind::Cmaes) {
    // The RL policy samples every token's keep/evict independently: its greedy counterpart is the
    // per-head threshold rule, which is what the written policy must say.
    if (c.selection.mode != SelectionMode::PerHead)
      policy.fail_at("selection", "the \"" + trainer +
                                      "\" trainer samples each token's keep/evict action independently (the "
                                      "per_head rule); set \"selection\": \"per_head\"");
    if (c.selection.max_tokens_per_head != 0)
      policy.fail_at("max_tokens_per_head", "not supported with the \"" + trainer + "\" trainer (must be 0)");
  }
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

  // Read whatever the trainer, so a misspelt field is an error in every config.
  JsonReader rl = root.object("rl");
  c.rl.algorithm = c.trainer == TrainerKind::Ppo ? rl::Algorithm::Ppo : rl::Algorithm::Reinforce;
  c.rl.temperature = rl.get_double("temperature", 0.5, 1e-6, 1e6);
  c.rl.samples_per_prompt = rl.get_int("samples_per_prompt", 4, 1, 4096);
  c.rl.adam.learning_rate = rl.get_double("learning_rate", 0.01, 1e-12, 1e3);
  c.rl.adam.beta1 = rl.get_double("adam_beta1", 0.9, 0.0, 0.999999);
  c.rl.adam.beta2 = rl.get_double("adam_beta2", 0.999, 0.0, 0.99999999);
  c.rl.adam.max_grad_norm = rl.get_double("max_grad_norm", 1.0, 0.0, 1e12);
  const std::string baseline = rl.get_string("baseline", "leave_one_out");
  if (baseline == "leave_one_out") c.rl.baseline.kind = rl::BaselineKind::LeaveOneOut;
  else if (baseline == "moving_average") c.rl.baseline.kind = rl::BaselineKind::MovingAverage;
  else rl.fail_at("baseline", "expected \"leave_one_out\" or \"moving_average\", got \"" + baseline + "\"");
  c.rl.baseline.decay = rl.get_double("baseline_decay", 0.9, 0.0, 0.999999);
  c.rl.baseline.normalize = rl.get_bool("normalize_advantages", false);
  c.rl.ppo_epochs = rl.get_int("ppo_epochs", 4, 1, 1000);
  c.rl.ppo_clip = rl.get_double("ppo_clip", 0.2, 1e-6, 0.999999);
  if (c.rl.baseline.kind == rl::BaselineKind::LeaveOneOut && c.rl.samples_per_prompt < 2)
    rl.fail_at("samples_per_prompt", "the leave_one_out baseline needs >= 2 samples per prompt");
  rl.finish();
  // CMA-ES starts from the same initial policy as the RL trainers.
  if (c.initial_bias != 0 || c.initial_scale != 0) c.cmaes.mean0 = initial_params(c);

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
    if (s.name == "(heldout)") stage.fail_at("name", "\"(heldout)\" is reserved for the held-out prompts");
    s.generations = stage.get_int("generations", 0, 1, 1 << 24);
    if (!stage.has("generations")) stage.fail_at("generations", "missing (required)");
    s.prompts_per_generation = stage.get_int("prompts_per_generation", 0, 0, 1 << 20);
    s.tasks = stage.require_raw("tasks");
    stage.finish();
    c.stages.push_back(std::move(s));
  }
  JsonReader heldout = root.object("heldout");
  c.heldout_every = heldout.get_int("every", 0, 0, 1 << 24);
  if (heldout.has("tasks")) c.heldout_tasks = heldout.require_raw("tasks");
  else if (c.heldout_every > 0) heldout.fail_at("tasks", "missing (required when \"every\" > 0)");
  heldout.finish();
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
