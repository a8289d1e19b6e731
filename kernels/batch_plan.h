// The layout of one lockstep step on the GPU (kernels/cuda_lockstep.h): where each sequence's chunk
// sits among the stacked rows, and how the attention kernels run over all sequences at once.
//
// Plain host code (no CUDA), so the index arithmetic is tested on any machine
// (tests/test_kernels_batch_plan.cpp runs it against the CPU attention references).
//
// Rows. The step's jobs (one chunk of one sequence each, in submission order) are stacked: job j's T_j
// tokens are rows row_offset[j] .. row_offset[j] + T_j - 1 of every activation matrix, so the dense
// layers are one GEMM over all rows.
//
// Attention. The kernels take one layer's KV heads as device pointer arrays with a length each, and
// queries laid out [T][n_q_heads][D] (attention_prefill) or [n_q_heads][D] (attention_decode, T = 1).
// Jobs with the same T are one launch: their query rows are gathered into a staging matrix laid out
// [T][n_jobs * n_q_heads][D] (row t * n_jobs + i = job i's query t), their KV heads listed job after job
// ([n_jobs * n_kv_heads] pointers), so query head i * Hq + h reads KV head (i * Hq + h) / group =
// i * Hkv + h / group: job i's own head. The output comes back in the same layout and is scattered to
// the stacked rows with the same index list; the GQA-averaged probabilities come out as
// [n_jobs * n_kv_heads][T][stride], job i's block being exactly what a launch for job i alone writes.
//
// Slots. Jobs are ordered by (T, wants_probs) for the launches (their "slot"); each layer's pointer and
// length arrays are laid out [slot][kv head], so a launch's heads are contiguous.
//
// Probabilities are only computed for launches holding a job whose policy reads attention; such a
// launch is cut so that its probabilities fit max_probs_floats (n_jobs * Hkv * T * max_len floats).
// Every launch is also cut at kMaxLaunchKvHeads KV heads: the kernels put them in gridDim.y.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace nammkit::kernels {

enum class LogitRows { None, Last, All };

inline constexpr int kMaxLaunchKvHeads = 65535;

struct BatchJobShape {
  int n_tokens = 0;          // T: this step's chunk (>= 1)
  bool wants_probs = false;  // its policy reads attention
  int max_len = 0;           // its longest KV head after this chunk's append, over all layers (>= n_tokens)
  LogitRows logits = LogitRows::None;
};

struct AttentionLaunch {
  int n_queries = 0;   // T of every job in it
  int first_slot = 0;  // slots first_slot .. first_slot + n_jobs - 1
  int n_jobs = 0;
  int gather_offset = 0;  // its n_queries * n_jobs entries of BatchPlan::gather_rows, [t][i] order
  bool with_probs = false;
};

struct BatchPlan {
  int n_rows = 0;                    // stacked rows, sum of T_j
  std::vector<int> row_offset;       // [job] first stacked row
  std::vector<int> slot_job;         // [slot] job
  std::vector<int> job_slot;         // [job] slot
  std::vector<int32_t> row_slot;     // [row] slot of the row's job
  std::vector<int32_t> row_t;        // [row] index of the row within its job's chunk
  std::vector<int32_t> slot_tokens;  // [slot] T of the slot's job
  std::vector<int32_t> gather_rows;  // every launch's staging row -> stacked row
  std::vector<AttentionLaunch> launches;
  std::vector<int32_t> logit_rows;  // stacked rows that go through the output layer, job after job
  std::vector<int> logit_offset;    // [job] first entry of logit_rows (T_j, 1 or 0 entries)
  size_t max_probs_floats = 0;      // the most probability floats one launch writes

  int n_jobs() const { return static_cast<int>(row_offset.size()); }
  // Staging rows (= gather_rows entries) of the largest launch.
  int max_launch_rows() const;
};

// Lays out a step. Throws Error("batch plan: ...") for a job with n_tokens < 1 or max_len < n_tokens.
// max_probs_floats bounds the probabilities of one launch (a job alone may exceed it: it then gets a
// launch of its own). n_kv_heads is the model's.
BatchPlan plan_batch(std::span<const BatchJobShape> jobs, int n_kv_heads, size_t max_probs_floats);

}  // namespace nammkit::kernels
