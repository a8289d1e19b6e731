#include "tools/nammkit/sample_runner.h"

#include <tbb/parallel_for.h>

#include <algorithm>

#include "core/error.h"
#include "distributed/messages.pb.h"
#include "distributed/work_split.h"

namespace nammkit::cli {

double expected_tokens(const Sample& sample, int max_context) {
  // About 4 bytes of text per token: only the balance between ranks depends on it, never a result.
  const double prompt =
      sample.kind == SampleKind::LogLikelihood ? double(sample.tokens.size()) : double(sample.prompt.size()) / 4 + 1;
  const double fed = max_context > 0 ? std::min(prompt, double(max_context)) : prompt;
  return fed + (sample.kind == SampleKind::Generate ? sample.max_new_tokens : 0);
}

SampleRunner::SampleRunner(const Backend& backend, SampleAt samples, RunOptions base, dist::Coordinator* coordinator,
                           std::string job)
    : backend_(backend), samples_(std::move(samples)), base_(base), coordinator_(coordinator), job_(std::move(job)) {}

std::vector<RunResult> SampleRunner::run_here(std::span<const int> indices, const PolicyFile* policy) const {
  RunOptions run = base_;
  if (policy) apply_policy_session(*policy, run.session);
  std::vector<RunResult> results(indices.size());
  tbb::parallel_for(size_t(0), indices.size(), [&](size_t i) {
    std::unique_ptr<MemoryPolicy> instance = policy ? make_policy(*policy) : nullptr;
    results[i] = run_sample(backend_, instance.get(), samples_(indices[i]), run);
  });
  return results;
}

namespace {

void to_message(const RunResult& r, int sample, dist::SampleResultMsg* m) {
  m->set_sample(sample);
  m->set_score(r.score);
  m->set_log_likelihood(r.log_likelihood);
  m->set_prompt_tokens(r.prompt_tokens);
  m->set_generated_tokens(r.generated_tokens);
  m->set_truncated(r.truncated);
  m->set_prefill_seconds(r.prefill_seconds);
  m->set_decode_seconds(r.decode_seconds);
  m->mutable_cache_mean_per_layer()->Add(r.cache.mean_per_layer.begin(), r.cache.mean_per_layer.end());
  m->mutable_cache_max_per_layer()->Add(r.cache.max_per_layer.begin(), r.cache.max_per_layer.end());
  m->set_cache_mean(r.cache.mean);
  m->set_cache_max(r.cache.max);
}

RunResult from_message(const dist::SampleResultMsg& m) {
  RunResult r;
  r.score = m.score();
  r.log_likelihood = m.log_likelihood();
  r.prompt_tokens = m.prompt_tokens();
  r.generated_tokens = m.generated_tokens();
  r.truncated = m.truncated();
  r.prefill_seconds = m.prefill_seconds();
  r.decode_seconds = m.decode_seconds();
  const double seconds = r.prefill_seconds + r.decode_seconds;
  r.tokens_per_second = seconds > 0 ? (r.prompt_tokens + r.generated_tokens) / seconds : 0;
  r.cache.mean_per_layer.assign(m.cache_mean_per_layer().begin(), m.cache_mean_per_layer().end());
  r.cache.max_per_layer.assign(m.cache_max_per_layer().begin(), m.cache_max_per_layer().end());
  r.cache.mean = m.cache_mean();
  r.cache.max = m.cache_max();
  return r;
}

}  // namespace

std::vector<RunResult> SampleRunner::run(std::span<const int> indices, const PolicyFile* policy,
                                         const std::string& what) {
  if (!coordinator_) return run_here(indices, policy);
  dist::SampleJobMsg job;
  std::vector<double> costs;
  for (int i : indices) {
    job.add_sample(i);
    costs.push_back(expected_tokens(samples_(i), base_.max_context));
  }
  for (int r : dist::assign_by_cost(costs, coordinator_->size())) job.add_rank_of_sample(r);
  if (policy) job.set_policy(serialize_policy(*policy));
  const std::vector<std::string> replies = coordinator_->run(job_, job.SerializeAsString(), what);
  // Results come back keyed by position in `indices`.
  std::vector<RunResult> out(indices.size());
  std::vector<bool> filled(indices.size(), false);
  for (size_t r = 0; r < replies.size(); ++r) {
    dist::SampleResultsMsg reply;
    if (!reply.ParseFromString(replies[r])) fail(coordinator_->describe(int(r)), what + ": the reply does not parse");
    for (const dist::SampleResultMsg& m : reply.results()) {
      const int pos = m.sample();
      if (pos < 0 || size_t(pos) >= out.size() || job.rank_of_sample(pos) != int(r) || filled[size_t(pos)])
        fail(coordinator_->describe(int(r)),
             what + ": a reply for sample " + std::to_string(pos) + " it was not given");
      out[size_t(pos)] = from_message(m);
      filled[size_t(pos)] = true;
    }
  }
  for (size_t i = 0; i < filled.size(); ++i)
    if (!filled[i])
      fail(coordinator_->describe(job.rank_of_sample(int(i))), what + ": sample " + std::to_string(i) + " missing");
  return out;
}

void SampleRunner::serve() {
  if (!coordinator_) return;
  coordinator_->on(job_, [this](const std::string& payload) {
    dist::SampleJobMsg job;
    if (!job.ParseFromString(payload) || job.sample_size() != job.rank_of_sample_size())
      fail("sample job", "malformed request");
    std::optional<PolicyFile> policy;
    if (!job.policy().empty()) policy = parse_policy(job.policy(), "sample job: policy");
    std::vector<int> positions, indices;
    for (int p = 0; p < job.sample_size(); ++p)
      if (job.rank_of_sample(p) == coordinator_->rank()) {
        positions.push_back(p);
        indices.push_back(job.sample(p));
      }
    const std::vector<RunResult> results = run_here(indices, policy ? &*policy : nullptr);
    dist::SampleResultsMsg reply;
    for (size_t i = 0; i < results.size(); ++i) to_message(results[i], positions[i], reply.add_results());
    return reply.SerializeAsString();
  });
}

}  // namespace nammkit::cli
