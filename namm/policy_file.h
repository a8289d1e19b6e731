// Policy files: a versioned Protobuf message (namm/policy.proto) holding a policy's kind, every
// hyper-parameter, the NAMM parameters and normalisation statistics, the base model and the
// provenance; plus the factories that turn one into a MemoryPolicy.
//
// Binary layout (little-endian): "NAMMPLCY" | u64 payload bytes | u32 CRC-32 of the payload |
// payload = the serialized PolicyFile. The envelope makes truncation and corruption detectable
// (a bare protobuf parses many damaged byte strings without complaint).
// Every load validates the message; problems are Errors "<file>: <field>: <problem>", never crashes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "namm/namm_policy.h"
#include "namm/normalization.h"
#include "namm/policy.pb.h"
#include "transformer/backend.h"
#include "transformer/memory_policy.h"
#include "transformer/model.h"

namespace nammkit {

inline constexpr uint32_t kPolicyFormatVersion = 1;

const char* policy_kind_name(PolicyKind kind);  // "namm_bam", "namm_mlp", "full", "streaming", "h2o", "l2", "random"
const char* nammkit_version();

// A NAMM policy with the paper's hyper-parameters (spec §2, update interval 512), all-zero
// parameters (every score 0: nothing is evicted) and identity normalisation (mean 0, var 1, count 0).
PolicyFile make_namm_policy_file(ScorerKind kind = ScorerKind::Bam);
// A baseline from a spec "kind[:budget][,option=value...]":
//   "full", "streaming:256,sinks=4", "h2o:0.25[,heavy=0.5]", "l2:512", "random:0.5[,seed=1]".
// A budget with a '.' or below 1 is a fraction of the tokens seen; otherwise absolute tokens.
PolicyFile make_baseline_policy_file(const std::string& spec);

// The NAMM pieces of a (validated) NAMM policy file.
NammConfig namm_config_from(const PolicyFile& file);
FeatureNormalizer normalizer_from(const PolicyFile& file);
// Stores collected statistics (NammPolicy::collected_stats()) in the file.
void set_norm_stats(PolicyFile& file, const FeatureStats& stats);
void set_base_model(PolicyFile& file, const Model& model);

// Checks version, kind, every hyper-parameter, sizes and finiteness. `where` prefixes errors.
void validate_policy_file(const PolicyFile& file, const std::string& where);

std::string serialize_policy(const PolicyFile& file);                       // envelope bytes
PolicyFile parse_policy(std::string_view bytes, const std::string& where);  // validates
void save_policy(const PolicyFile& file, const std::string& path);          // validates, atomic
PolicyFile load_policy(const std::string& path);                            // validates

// JSON for humans (proto field names, every field printed). policy_from_json validates.
std::string policy_to_json(const PolicyFile& file);
PolicyFile policy_from_json(std::string_view json, const std::string& where);

// A multi-line human-readable summary (`nammkit policy show`).
std::string describe_policy(const PolicyFile& file);

// The MemoryPolicy a file describes (validated first). Every result is a RecordingPolicy.
std::unique_ptr<MemoryPolicy> make_policy(const PolicyFile& file);
// The session settings a policy file fixes, copied into `session`: its update interval and whether the
// attention handed to the policy is rounded to bf16 (as during its evolution). Every run of a policy
// file goes through this, so a policy always sees the attention it was trained on.
void apply_policy_session(const PolicyFile& file, SessionOptions& session);
// The one rule for a run's update intervals (nammkit run and eval): an explicit --interval applies to
// every policy of the run; otherwise a policy file keeps its own, and a baseline made from a spec takes
// the first policy file's, else kDefaultUpdateInterval. `flag` is 0 when --interval was not given.
int run_update_interval(int flag, const PolicyFile* own_file, const PolicyFile* first_file);

// Shorthand: make_policy(make_baseline_policy_file(spec)).
std::unique_ptr<MemoryPolicy> make_baseline_policy(const std::string& spec);

}  // namespace nammkit
