// Device NAMM updates; see namm_device.h.
#include "kernels/namm_device.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "kernels/bam_batched.h"
#include "kernels/cuda_session.h"
#include "kernels/layer_ops.h"

namespace nammkit::kernels {

namespace {

constexpr const char* kWhere = "device NAMM";

bool same_features(const NammConfig& a, const NammConfig& b) {
  return a.spectrogram.n_fft == b.spectrogram.n_fft && a.spectrogram.hop == b.spectrogram.hop &&
         a.spectrogram.ema_coeff == b.spectrogram.ema_coeff && a.recency.dim == b.recency.dim &&
         a.recency.max_freq == b.recency.max_freq && a.scorer.kind == b.scorer.kind &&
         a.scorer.n_features == b.scorer.n_features && a.scorer.hidden == b.scorer.hidden;
}

}  // namespace

DeviceNamm::DeviceNamm(const NammConfig& config, const FeatureNormalizer& normalizer, DeviceNammBudget budget)
    : config_(config),
      normalizer_(normalizer),
      budget_(budget),
      spectrogram_(config.spectrogram, config.recency, normalizer) {
  config_.validate(kWhere);
  if (config_.scorer.kind != ScorerKind::Bam) fail(kWhere, "only the BAM scorer runs on the device");
  if (budget_.key_rows < 1 || budget_.attention_floats < 1 || budget_.segments < 1 || budget_.segments > 65535)
    fail(kWhere, "budget: expected key_rows and attention_floats >= 1 and segments in 1..65535");
  // cut_namm_passes checks the rest at each update (a job's segments against the budget).
}

bool DeviceNamm::serves(const NammPolicy& policy) const {
  return policy.takes_external_scores() && same_features(policy.config(), config_) &&
         policy.normalizer().mean() == normalizer_.mean() && policy.normalizer().var() == normalizer_.var();
}

void DeviceNamm::check(const CudaSession& s, const CudaModel& model, size_t n_queries) const {
  const NammPolicy* policy = s.device_namm_policy();
  if (!policy || !serves(*policy)) fail(kWhere, "a session whose policy this device NAMM does not serve");
  if (&s.model_ != &model) fail(kWhere, "sessions of different models in one update");
  if (s.query_positions_.size() != n_queries)
    fail(kWhere, "sessions with different update intervals in one update (" + std::to_string(n_queries) + " and " +
                     std::to_string(s.query_positions_.size()) + " queries)");
  const int n_kv = model.config().n_kv_heads;
  for (size_t i = 0; i < s.heads_.size(); ++i) {
    const CudaSession::Head& h = s.heads_[i];
    const int64_t n_old = int64_t{h.len} - int64_t(n_queries);
    if (n_old < 0 || h.state_rows != n_old)
      fail(kWhere, "layer " + std::to_string(i / size_t(n_kv)) + " KV head " + std::to_string(i % size_t(n_kv)) +
                       ": spectral state out of step (" + std::to_string(h.state_rows) + " rows of state for " +
                       std::to_string(h.len) + " cached tokens and " + std::to_string(n_queries) +
                       " new queries): a sequence runs every NAMM update on the device or none");
  }
}

void DeviceNamm::update(std::span<CudaSession* const> sessions, cudaStream_t stream) {
  const auto start = std::chrono::steady_clock::now();
  if (sessions.empty()) return;
  const CudaModel& model = sessions[0]->model_;
  const ModelConfig& c = model.config();
  const size_t n_queries = sessions[0]->query_positions_.size();
  for (CudaSession* s : sessions) check(*s, model, n_queries);  // before anything changes
  for (CudaSession* s : sessions) cuda_check(cudaStreamSynchronize(s->stream_), "cudaStreamSynchronize (device NAMM)");

  // (session, layer) jobs, cut into passes within the budget.
  std::vector<LayerJob> jobs;
  std::vector<int64_t> job_rows;
  for (int si = 0; si < static_cast<int>(sessions.size()); ++si)
    for (int l = 0; l < c.n_layers; ++l) {
      int64_t rows = 0;
      for (int g = 0; g < c.n_kv_heads; ++g) rows += sessions[si]->heads_[size_t(l) * c.n_kv_heads + g].len;
      jobs.push_back({si, l, 0});
      job_rows.push_back(rows);
    }
  const std::vector<int> first = cut_namm_passes(job_rows, c.n_kv_heads, static_cast<int>(n_queries), budget_);
  for (size_t p = 0; p + 1 < first.size(); ++p) {
    const std::span<LayerJob> pass(jobs.data() + first[p], size_t(first[p + 1] - first[p]));
    for (size_t j = 0; j < pass.size(); ++j) pass[j].first_segment = static_cast<int>(j) * c.n_kv_heads;
    run_pass(sessions, pass, stream);
  }
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (device NAMM)");
  const double share =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(sessions.size());
  for (CudaSession* s : sessions) {
    s->finish_policy_update(share);
    ++s->device_namm_updates_;
  }
}

void DeviceNamm::run_pass(std::span<CudaSession* const> sessions, std::span<const LayerJob> jobs, cudaStream_t stream) {
  const ModelConfig& c = sessions[0]->model_.config();
  const int n_kv = c.n_kv_heads, B = config_.spectrogram.n_bins(), O = config_.spectrogram.overlap();
  const int F = config_.n_features(), M = config_.scorer.n_params();
  const int Q = static_cast<int>(sessions[0]->query_positions_.size());

  // Segments: one per (job, KV head); one parameter set per session of the pass.
  std::vector<int> param_set(sessions.size(), -1);
  params_host_.clear();
  std::vector<NammSegmentShape> shapes;
  std::vector<int64_t> attention_offset;
  int64_t attention_floats = 0;
  for (const LayerJob& job : jobs) {
    CudaSession& s = *sessions[size_t(job.session)];
    if (param_set[size_t(job.session)] < 0) {
      param_set[size_t(job.session)] = static_cast<int>(params_host_.size() / size_t(M));
      const std::vector<float>& p = s.device_namm_policy()->params();
      params_host_.insert(params_host_.end(), p.begin(), p.end());
    }
    for (int g = 0; g < n_kv; ++g) {
      const CudaSession::Head& h = s.heads_[size_t(job.layer) * n_kv + g];
      const int n_old = h.len - Q;  // check() made sure the state has exactly these rows
      shapes.push_back({h.len, n_old, param_set[size_t(job.session)]});
      attention_offset.push_back(attention_floats);
      attention_floats += int64_t(Q) * h.len;
    }
  }
  const int n_sets = static_cast<int>(params_host_.size() / size_t(M));
  const NammBatchLayout layout = plan_namm_batch(shapes, Q, config_.spectrogram, n_sets);

  // The attention of every segment, densified from the host logs straight into the staging, one upload.
  attention_host_.resize(size_t(attention_floats));
  for (const LayerJob& job : jobs)
    for (int g = 0; g < n_kv; ++g)
      sessions[size_t(job.session)]->densify_attention(
          job.layer, g, attention_host_.data() + attention_offset[size_t(job.first_segment + g)]);
  upload(attention_, attention_host_, stream, "cudaMemcpyAsync (attention windows)");

  std::vector<SpectrogramSegment> segments;
  segments.reserve(shapes.size());
  for (const LayerJob& job : jobs)
    for (int g = 0; g < n_kv; ++g) {
      const CudaSession::Head& h = sessions[size_t(job.session)]->heads_[size_t(job.layer) * n_kv + g];
      const bool has_state = h.state_rows > 0;
      segments.push_back({attention_.get() + attention_offset[size_t(job.first_segment + g)],
                          has_state ? h.ema.get() : nullptr, has_state ? h.tail.get() : nullptr, h.positions.get()});
    }

  // Features and scores of every segment.
  const size_t R = size_t(layout.total_keys());
  grow(ema_new_, std::max<size_t>(R * B, 1), stream);
  grow(tail_new_, std::max<size_t>(R * O, 1), stream);
  grow(features_, std::max<size_t>(R * F, 1), stream);
  grow(scores_, std::max<size_t>(R, 1), stream);
  spectrogram_.update_batched(layout, segments, ema_new_.get(), tail_new_.get(), features_.get(), stream);
  upload(params_, params_host_, stream, "cudaMemcpyAsync (NAMM parameters)");
  const BamBatch batch{n_sets, layout.key_offset, layout.params_index, features_.get(), params_.get(), scores_.get()};
  grow(bam_ws_, bam_workspace_bytes(config_.scorer, batch), stream);
  bam_score_batched(config_.scorer, batch, bam_ws_.get(), bam_ws_.size(), stream);
  scores_host_.resize(R);
  cuda_check(cudaMemcpyAsync(scores_host_.data(), scores_.get(), R * sizeof(float), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync (NAMM scores)");
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (NAMM scores)");

  // Selection on the host, per (session, layer), with each policy's own options and statistics.
  CudaSession::WindowScratch scratch;
  std::vector<KeepLists> keeps(jobs.size());
  std::vector<size_t> keep_offset(shapes.size());
  keep_host_.clear();
  for (size_t j = 0; j < jobs.size(); ++j) {
    CudaSession& s = *sessions[size_t(jobs[j].session)];
    const LayerWindow window = s.policy_window(jobs[j].layer, false, false, scratch);  // copies nothing
    std::vector<std::vector<float>> scores(n_kv);
    for (int g = 0; g < n_kv; ++g) {
      const int seg = jobs[j].first_segment + g;
      scores[g].assign(scores_host_.begin() + layout.key_offset[seg],
                       scores_host_.begin() + layout.key_offset[seg + 1]);
    }
    keeps[j] = s.device_namm_policy()->select_from_scores(window, scores);
    for (int g = 0; g < n_kv; ++g) {
      const int seg = jobs[j].first_segment + g;
      keep_offset[size_t(seg)] = keep_host_.size();
      keep_host_.insert(keep_host_.end(), keeps[j][size_t(g)].begin(), keeps[j][size_t(g)].end());
    }
  }
  upload(keep_index_, keep_host_, stream, "cudaMemcpyAsync (keep lists)");

  // Eviction: the cache compacted (apply_keep validates each list first), and the new state's kept rows
  // gathered into each head's state alike.
  for (size_t j = 0; j < jobs.size(); ++j) {
    CudaSession& s = *sessions[size_t(jobs[j].session)];
    s.apply_keep(jobs[j].layer, keeps[j], stream);
    for (int g = 0; g < n_kv; ++g) {
      const int seg = jobs[j].first_segment + g;
      CudaSession::Head& h = s.heads_[size_t(jobs[j].layer) * n_kv + g];
      const int n_keep = static_cast<int>(keeps[j][size_t(g)].size());
      if (n_keep > 0) {
        // grow() waits for the stream before it frees the old state, which this pass has just read.
        grow(h.ema, size_t(n_keep) * B, stream);
        grow(h.tail, size_t(n_keep) * O, stream);
        const int32_t* index = keep_index_.get() + keep_offset[size_t(seg)];
        gather_rows(ema_new_.get() + size_t(layout.key_offset[seg]) * B, index, n_keep, B, h.ema.get(), stream);
        gather_rows(tail_new_.get() + size_t(layout.key_offset[seg]) * O, index, n_keep, O, h.tail.get(), stream);
      }
      h.state_rows = n_keep;
    }
  }
  // The next pass reuses the scratch (and the sessions' compaction workspaces).
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (device NAMM eviction)");
}

}  // namespace nammkit::kernels
