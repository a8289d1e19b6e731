// The layout of a lockstep step on the GPU (kernels/batch_plan.h), checked on the CPU: the attention of
// every launch, run by the CPU references on the gathered queries and the listed KV heads exactly as the
// CUDA step hands them to the kernels, must equal each sequence's attention computed alone, bit for bit
// (the same arithmetic on the same numbers); likewise the probabilities, the append rows and the logit
// rows. Runs without a GPU (built where nvcc exists, like the other kernel tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/batch_plan.h"
#include "kernels/reference.h"

namespace nammkit::kernels {
namespace {

constexpr int kQHeads = 4, kKvHeads = 2, kDim = 8;  // GQA group 2
constexpr int kQDim = kQHeads * kDim;

// One sequence of the step: its chunk's queries and its KV heads (the chunk's keys already appended).
struct Sequence {
  int T = 0;
  bool wants_probs = false;
  LogitRows logits = LogitRows::None;
  std::vector<std::vector<float>> keys, values;  // [kv head][len * D]
  std::vector<float> q;                          // [T][kQDim]
  int len(int g) const { return static_cast<int>(keys[size_t(g)].size() / kDim); }
};

std::vector<Sequence> random_step(uint32_t seed, const std::vector<int>& chunk_tokens) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> old_len(0, 40);
  std::vector<Sequence> step;
  for (size_t j = 0; j < chunk_tokens.size(); ++j) {
    Sequence s;
    s.T = chunk_tokens[j];
    s.wants_probs = j % 3 != 1;
    s.logits = j % 4 == 0 ? LogitRows::All : (j % 4 == 3 ? LogitRows::None : LogitRows::Last);
    for (int g = 0; g < kKvHeads; ++g) {
      const int len = old_len(rng) + s.T;  // ragged: every head its own length
      std::vector<float> k(size_t(len) * kDim), v(size_t(len) * kDim);
      for (float& x : k) x = u(rng);
      for (float& x : v) x = u(rng);
      s.keys.push_back(std::move(k));
      s.values.push_back(std::move(v));
    }
    s.q.resize(size_t(s.T) * kQDim);
    for (float& x : s.q) x = u(rng);
    step.push_back(std::move(s));
  }
  return step;
}

std::vector<ref::KvHead> heads_of(const Sequence& s) {
  std::vector<ref::KvHead> h;
  for (int g = 0; g < kKvHeads; ++g) h.push_back({s.keys[size_t(g)].data(), s.values[size_t(g)].data(), s.len(g)});
  return h;
}

int max_len_of(const Sequence& s) {
  int m = 0;
  for (int g = 0; g < kKvHeads; ++g) m = std::max(m, s.len(g));
  return m;
}

// What one sequence's attention is alone: out [T][kQDim], probs [kv][T][max_len].
void attend_alone(const Sequence& s, std::vector<float>& out, std::vector<float>& probs) {
  const std::vector<ref::KvHead> heads = heads_of(s);
  const int stride = max_len_of(s);
  out.assign(s.q.size(), 0.0f);
  probs.assign(size_t(kKvHeads) * s.T * stride, 0.0f);
  const float scale = 0.35f;
  if (s.T == 1)
    ref::attention_decode(DType::F32, kQHeads, kDim, heads, s.q.data(), scale, out.data(), probs.data(), stride);
  else
    ref::attention_prefill(DType::F32, kQHeads, kDim, s.T, heads, s.q.data(), scale, out.data(), probs.data(), stride);
}

void expect_step_equals_alone(const std::vector<Sequence>& step, size_t max_probs_floats) {
  std::vector<BatchJobShape> shapes;
  for (const Sequence& s : step) shapes.push_back({s.T, s.wants_probs, max_len_of(s), s.logits});
  const BatchPlan plan = plan_batch(shapes, kKvHeads, max_probs_floats);
  const int n = static_cast<int>(step.size());

  // Stacked rows: job after job.
  ASSERT_EQ(plan.n_jobs(), n);
  std::vector<float> q_rows(size_t(plan.n_rows) * kQDim);
  for (int j = 0; j < n; ++j) {
    EXPECT_EQ(plan.slot_job[size_t(plan.job_slot[size_t(j)])], j);
    std::copy(step[size_t(j)].q.begin(), step[size_t(j)].q.end(),
              q_rows.begin() + ptrdiff_t(plan.row_offset[size_t(j)]) * kQDim);
    for (int t = 0; t < step[size_t(j)].T; ++t) {
      const int r = plan.row_offset[size_t(j)] + t;
      EXPECT_EQ(plan.row_slot[size_t(r)], plan.job_slot[size_t(j)]);
      EXPECT_EQ(plan.row_t[size_t(r)], t);
    }
    EXPECT_EQ(plan.slot_tokens[size_t(plan.job_slot[size_t(j)])], step[size_t(j)].T);
  }

  // Every launch as the CUDA step runs it: gather, one attention call over all its sequences' heads,
  // scatter; probabilities split per sequence.
  std::vector<float> attn_rows(q_rows.size(), -7.0f);
  std::vector<std::vector<float>> probs_batched(static_cast<size_t>(n));
  std::vector<int> covered(size_t(n), 0);
  size_t most_probs = 0;
  for (const AttentionLaunch& a : plan.launches) {
    ASSERT_GE(a.n_jobs, 1);
    std::vector<ref::KvHead> heads;
    int max_len = 0;
    for (int i = 0; i < a.n_jobs; ++i) {
      const Sequence& s = step[size_t(plan.slot_job[size_t(a.first_slot + i)])];
      ASSERT_EQ(s.T, a.n_queries);
      ASSERT_EQ(s.wants_probs, a.with_probs);
      for (const ref::KvHead& h : heads_of(s)) heads.push_back(h);
      max_len = std::max(max_len, max_len_of(s));
      ++covered[size_t(plan.slot_job[size_t(a.first_slot + i)])];
    }
    const int rows = a.n_queries * a.n_jobs;
    std::vector<float> stage(size_t(rows) * kQDim), out(stage.size());
    for (int i = 0; i < rows; ++i)
      std::copy_n(q_rows.begin() + ptrdiff_t(plan.gather_rows[size_t(a.gather_offset + i)]) * kQDim, kQDim,
                  stage.begin() + ptrdiff_t(i) * kQDim);
    std::vector<float> probs(size_t(a.n_jobs) * kKvHeads * a.n_queries * max_len);
    if (a.with_probs) most_probs = std::max(most_probs, probs.size());
    const float scale = 0.35f;
    if (a.n_queries == 1)
      ref::attention_decode(DType::F32, a.n_jobs * kQHeads, kDim, heads, stage.data(), scale, out.data(), probs.data(),
                            max_len);
    else
      ref::attention_prefill(DType::F32, a.n_jobs * kQHeads, kDim, a.n_queries, heads, stage.data(), scale, out.data(),
                             probs.data(), max_len);
    for (int i = 0; i < rows; ++i)
      std::copy_n(out.begin() + ptrdiff_t(i) * kQDim, kQDim,
                  attn_rows.begin() + ptrdiff_t(plan.gather_rows[size_t(a.gather_offset + i)]) * kQDim);
    const size_t per_job = size_t(kKvHeads) * a.n_queries * max_len;
    for (int i = 0; i < a.n_jobs; ++i) {
      const int j = plan.slot_job[size_t(a.first_slot + i)];
      // Re-stride to the sequence's own max_len, as the session's log keeps only visible keys anyway.
      const int own = max_len_of(step[size_t(j)]);
      std::vector<float>& p = probs_batched[size_t(j)];
      p.assign(size_t(kKvHeads) * a.n_queries * own, 0.0f);
      for (int row = 0; row < kKvHeads * a.n_queries; ++row) {
        const float* src = probs.data() + size_t(i) * per_job + size_t(row) * max_len;
        std::copy_n(src, own, p.begin() + ptrdiff_t(row) * own);
        for (int c = own; c < max_len; ++c) EXPECT_EQ(src[c], 0.0f) << "a key of another sequence leaked in";
      }
    }
  }
  EXPECT_EQ(plan.max_probs_floats, most_probs);
  for (int j = 0; j < n; ++j) EXPECT_EQ(covered[size_t(j)], 1) << "job " << j << " in exactly one launch";

  for (int j = 0; j < n; ++j) {
    const Sequence& s = step[size_t(j)];
    std::vector<float> out, probs;
    attend_alone(s, out, probs);
    const std::vector<float> got(attn_rows.begin() + ptrdiff_t(plan.row_offset[size_t(j)]) * kQDim,
                                 attn_rows.begin() + ptrdiff_t(plan.row_offset[size_t(j)] + s.T) * kQDim);
    EXPECT_EQ(got, out) << "job " << j << " (T " << s.T << ")";
    EXPECT_EQ(probs_batched[size_t(j)], probs) << "job " << j;

    // Logit rows: the job's last row, or all of them, or none, contiguous from logit_offset.
    const int first = plan.logit_offset[size_t(j)];
    const int count = s.logits == LogitRows::All ? s.T : (s.logits == LogitRows::Last ? 1 : 0);
    const int next = j + 1 < n ? plan.logit_offset[size_t(j + 1)] : static_cast<int>(plan.logit_rows.size());
    EXPECT_EQ(next - first, count);
    for (int i = 0; i < count; ++i)
      EXPECT_EQ(plan.logit_rows[size_t(first + i)], plan.row_offset[size_t(j)] + (s.T - count) + i);
  }
}

TEST(KernelBatchPlan, DecodeStepOfManySequencesIsOneLaunchAndEqualsEachAlone) {
  const std::vector<Sequence> step = random_step(1, std::vector<int>(9, 1));
  expect_step_equals_alone(step, size_t{1} << 30);
  std::vector<BatchJobShape> shapes;
  for (const Sequence& s : step) shapes.push_back({1, false, max_len_of(s), LogitRows::Last});
  EXPECT_EQ(plan_batch(shapes, kKvHeads, 1).launches.size(), 1u) << "no probabilities: one launch for all";
}

TEST(KernelBatchPlan, MixedPrefillAndDecodeEqualEachAlone) {
  expect_step_equals_alone(random_step(2, {5, 1, 5, 3, 1, 5, 16, 3, 1}), size_t{1} << 30);
}

TEST(KernelBatchPlan, ProbabilityBudgetCutsLaunchesWithoutChangingResults) {
  const std::vector<Sequence> step = random_step(3, {4, 4, 4, 4, 4, 4, 1, 1, 1, 1});
  for (const size_t budget : {size_t{1}, size_t{600}, size_t{5000}, size_t{1} << 30}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    expect_step_equals_alone(step, budget);
    std::vector<BatchJobShape> shapes;
    for (const Sequence& s : step) shapes.push_back({s.T, s.wants_probs, max_len_of(s), s.logits});
    const BatchPlan plan = plan_batch(shapes, kKvHeads, budget);
    for (const AttentionLaunch& a : plan.launches)
      if (a.with_probs && a.n_jobs > 1) {
        int max_len = 0;
        for (int i = 0; i < a.n_jobs; ++i)
          max_len = std::max(max_len, shapes[size_t(plan.slot_job[size_t(a.first_slot + i)])].max_len);
        EXPECT_LE(size_t(a.n_jobs) * kKvHeads * a.n_queries * max_len, budget);
      }
  }
}

TEST(KernelBatchPlan, LaunchesStayWithinTheGridLimit) {
  // 3 sequences of 30,000 KV heads each: at most 2 per launch (65,535 heads in gridDim.y).
  const std::vector<BatchJobShape> shapes(3, BatchJobShape{1, false, 8, LogitRows::Last});
  const BatchPlan plan = plan_batch(shapes, 30000, size_t{1} << 30);
  ASSERT_EQ(plan.launches.size(), 2u);
  EXPECT_EQ(plan.launches[0].n_jobs, 2);
  EXPECT_EQ(plan.launches[1].n_jobs, 1);
  EXPECT_EQ(plan.launches[1].first_slot, 2);
}

TEST(KernelBatchPlan, RejectsEmptyChunksAndShortCaches) {
  const BatchJobShape empty{0, false, 4, LogitRows::Last};
  EXPECT_THROW(plan_batch(std::vector<BatchJobShape>{empty}, kKvHeads, 100), Error);
  const BatchJobShape short_cache{8, false, 4, LogitRows::Last};
  EXPECT_THROW(plan_batch(std::vector<BatchJobShape>{short_cache}, kKvHeads, 100), Error);
  EXPECT_EQ(plan_batch(std::vector<BatchJobShape>{}, kKvHeads, 100).n_rows, 0);
}

}  // namespace
}  // namespace nammkit::kernels
