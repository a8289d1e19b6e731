#include "kernels/batch_plan.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "core/error.h"

namespace nammkit::kernels {

int BatchPlan::max_launch_rows() const {
  int rows = 0;
  for (const AttentionLaunch& a : launches) rows = std::max(rows, a.n_queries * a.n_jobs);
  return rows;
}

BatchPlan plan_batch(std::span<const BatchJobShape> jobs, int n_kv_heads, size_t max_probs_floats) {
  const char* where = "batch plan";
  if (n_kv_heads < 1) fail(where, "n_kv_heads must be >= 1");
  const int n = static_cast<int>(jobs.size());
  BatchPlan p;
  p.row_offset.resize(size_t(n));
  p.logit_offset.resize(size_t(n));
  for (int j = 0; j < n; ++j) {
    const BatchJobShape& job = jobs[size_t(j)];
    if (job.n_tokens < 1) fail(where, "job " + std::to_string(j) + ": n_tokens must be >= 1");
    if (job.max_len < job.n_tokens)
      fail(where, "job " + std::to_string(j) + ": max_len " + std::to_string(job.max_len) + " < n_tokens " +
                      std::to_string(job.n_tokens));
    p.row_offset[size_t(j)] = p.n_rows;
    p.logit_offset[size_t(j)] = static_cast<int>(p.logit_rows.size());
    const int last = p.n_rows + job.n_tokens - 1;
    if (job.logits == LogitRows::All)
      for (int r = p.n_rows; r <= last; ++r) p.logit_rows.push_back(r);
    else if (job.logits == LogitRows::Last) p.logit_rows.push_back(last);
    p.n_rows += job.n_tokens;
  }

  // Slots: jobs by (T, wants_probs), submission order within, so that launches are contiguous runs.
  p.slot_job.resize(size_t(n));
  std::iota(p.slot_job.begin(), p.slot_job.end(), 0);
  std::stable_sort(p.slot_job.begin(), p.slot_job.end(), [&](int a, int b) {
    const BatchJobShape &x = jobs[size_t(a)], &y = jobs[size_t(b)];
    if (x.n_tokens != y.n_tokens) return x.n_tokens < y.n_tokens;
    return !x.wants_probs && y.wants_probs;
  });
  p.job_slot.resize(size_t(n));
  p.slot_tokens.resize(size_t(n));
  for (int s = 0; s < n; ++s) {
    p.job_slot[size_t(p.slot_job[size_t(s)])] = s;
    p.slot_tokens[size_t(s)] = jobs[size_t(p.slot_job[size_t(s)])].n_tokens;
  }
  p.row_slot.resize(size_t(p.n_rows));
  p.row_t.resize(size_t(p.n_rows));
  for (int j = 0; j < n; ++j)
    for (int t = 0; t < jobs[size_t(j)].n_tokens; ++t) {
      p.row_slot[size_t(p.row_offset[size_t(j)] + t)] = p.job_slot[size_t(j)];
      p.row_t[size_t(p.row_offset[size_t(j)] + t)] = t;
    }

  // Launches: runs of equal (T, wants_probs); a run with probabilities is cut to fit max_probs_floats.
  for (int s = 0; s < n;) {
    const BatchJobShape& first = jobs[size_t(p.slot_job[size_t(s)])];
    AttentionLaunch a;
    a.n_queries = first.n_tokens;
    a.first_slot = s;
    a.with_probs = first.wants_probs;
    int max_len = 0;
    while (s < n) {
      const BatchJobShape& job = jobs[size_t(p.slot_job[size_t(s)])];
      if (job.n_tokens != a.n_queries || job.wants_probs != a.with_probs) break;
      const int len = std::max(max_len, job.max_len);
      const size_t floats = size_t(a.n_jobs + 1) * size_t(n_kv_heads) * size_t(a.n_queries) * size_t(len);
      if (a.with_probs && a.n_jobs > 0 && floats > max_probs_floats) break;
      if (a.n_jobs > 0 && int64_t(a.n_jobs + 1) * n_kv_heads > kMaxLaunchKvHeads) break;
      max_len = len;
      ++a.n_jobs;
      ++s;
    }
    a.gather_offset = static_cast<int>(p.gather_rows.size());
    for (int t = 0; t < a.n_queries; ++t)
      for (int i = 0; i < a.n_jobs; ++i)
        p.gather_rows.push_back(p.row_offset[size_t(p.slot_job[size_t(a.first_slot + i)])] + t);
    if (a.with_probs)
      p.max_probs_floats =
          std::max(p.max_probs_floats, size_t(a.n_jobs) * size_t(n_kv_heads) * size_t(a.n_queries) * size_t(max_len));
    p.launches.push_back(a);
  }
  return p;
}

}  // namespace nammkit::kernels
