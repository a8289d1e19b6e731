#include "kernels/namm_batch_layout.h"

#include <algorithm>
#include <limits>
#include <string>

#include "core/error.h"

namespace nammkit::kernels {

namespace {
constexpr const char* kWhere = "NAMM batch layout";
}

int NammBatchLayout::max_keys() const {
  int m = 0;
  for (size_t s = 0; s + 1 < key_offset.size(); ++s) m = std::max(m, key_offset[s + 1] - key_offset[s]);
  return m;
}

NammBatchLayout plan_namm_batch(std::span<const NammSegmentShape> segments, int n_queries,
                                const SpectrogramConfig& spectrogram, int n_param_sets) {
  spectrogram.validate(kWhere);
  const int hop = spectrogram.hop;
  if (n_queries <= 0 || n_queries % hop != 0)
    fail(kWhere, "n_queries: expected a positive multiple of hop " + std::to_string(hop) + ", got " +
                     std::to_string(n_queries));
  NammBatchLayout layout;
  layout.n_fft = spectrogram.n_fft;
  layout.hop = hop;
  layout.n_queries = n_queries;
  layout.n_frames = (spectrogram.overlap() + n_queries - spectrogram.n_fft) / hop + 1;
  const size_t S = segments.size();
  layout.key_offset.assign(S + 1, 0);
  layout.old_offset.assign(S + 1, 0);
  layout.frame_offset.assign(S + 1, 0);
  layout.n_old.resize(S);
  layout.params_index.resize(S);
  int64_t keys = 0, old = 0;
  for (size_t s = 0; s < S; ++s) {
    const NammSegmentShape& seg = segments[s];
    auto at = [s] { return "segment " + std::to_string(s) + ": "; };
    if (seg.n_old < 0 || seg.n_keys - seg.n_old != n_queries)
      fail(kWhere, at() + "expected " + std::to_string(n_queries) + " new keys (one per query), got " +
                       std::to_string(seg.n_keys - seg.n_old) + " (" + std::to_string(seg.n_keys) + " keys, " +
                       std::to_string(seg.n_old) + " with state)");
    if (seg.params_index < 0 || seg.params_index >= n_param_sets)
      fail(kWhere, at() + "params_index: expected 0.." + std::to_string(n_param_sets - 1) + ", got " +
                       std::to_string(seg.params_index));
    layout.frame_offset[s + 1] = layout.frame_offset[s] + int64_t{layout.n_frames} * seg.n_keys;
    keys += seg.n_keys;
    old += seg.n_old;
    if (keys > std::numeric_limits<int32_t>::max()) fail(kWhere, "more than 2^31 - 1 key rows in one batch; split it");
    layout.key_offset[s + 1] = static_cast<int32_t>(keys);
    layout.old_offset[s + 1] = static_cast<int32_t>(old);
    layout.n_old[s] = seg.n_old;
    layout.params_index[s] = seg.params_index;
  }
  return layout;
}

std::vector<int> cut_namm_passes(std::span<const int64_t> job_rows, int segments_per_job, int n_queries,
                                 const NammPassBudget& budget) {
  if (budget.key_rows < 1 || budget.attention_floats < 1 || budget.segments < 1)
    fail(kWhere, "pass budget: expected key_rows, attention_floats and segments >= 1");
  if (segments_per_job < 1 || segments_per_job > budget.segments)
    fail(kWhere, "pass budget: a job's " + std::to_string(segments_per_job) + " segments exceed the " +
                     std::to_string(budget.segments) + " a pass may hold");
  std::vector<int> first;
  int64_t rows = 0, attention = 0;
  int segments = 0;
  for (size_t i = 0; i < job_rows.size(); ++i) {
    const int64_t job_attention = job_rows[i] * n_queries;
    const bool over = rows + job_rows[i] > budget.key_rows || attention + job_attention > budget.attention_floats ||
                      segments + segments_per_job > budget.segments;
    if (first.empty() || (segments > 0 && over)) {
      first.push_back(static_cast<int>(i));
      rows = attention = 0;
      segments = 0;
    }
    rows += job_rows[i];
    attention += job_attention;
    segments += segments_per_job;
  }
  first.push_back(static_cast<int>(job_rows.size()));
  return first;
}

RowRange rows_of_batch(const NammBatchLayout& layout, int64_t g0, int batch) {
  const int S = layout.n_segments();
  if (S == 0 || batch < 1 || g0 >= layout.total_frames() || g0 < 0) return {};
  const int64_t g1 = std::min(g0 + batch, layout.total_frames()) - 1;  // last frame of the batch
  const int s0 = segment_containing(layout.frame_offset.data(), S, g0);
  const int s1 = segment_containing(layout.frame_offset.data(), S, g1);
  return {layout.key_offset[s0], layout.key_offset[s1 + 1]};
}

}  // namespace nammkit::kernels
