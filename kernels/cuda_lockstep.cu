// A lockstep step on the GPU; see cuda_lockstep.h (what), batch_plan.h (the layout) and
// cuda_session.cu (the one-sequence forward pass this stacks, step by step).
#include "kernels/cuda_lockstep.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/attention_decode.h"
#include "kernels/layer_ops.h"
#include "kernels/layer_pass.h"
#include "kernels/namm_device.h"
#include "namm/namm_policy.h"

namespace nammkit::kernels {

namespace {

constexpr const char* kWhere = "cuda lockstep";

// Rows per output-layer GEMM: the logits buffer stays under 2^26 floats (256 MiB) whatever the
// vocabulary and however many rows ask for logits.
int logit_block_rows(const ModelConfig& c, int rows) {
  return static_cast<int>(std::clamp<size_t>((size_t{1} << 26) / size_t(c.vocab_size), 1, size_t(std::max(rows, 1))));
}

}  // namespace

// Activations of the stacked rows, the step's index and pointer arrays (device and their host
// staging), and scratch. Host vectors keep their capacity from step to step.
struct CudaLockstepGroup::Buffers {
  RowActivations act;                      // the stacked rows
  DeviceBuffer<float> q_stage, out_stage;  // a launch's queries and outputs in the kernels' layout
  DeviceBuffer<float> logits, probs;
  DeviceBuffer<uint8_t> decode_ws;
  // The step's int32 arrays, one upload: tokens | row_positions | row_slot | row_t | slot_tokens |
  // gather_rows | logit_rows | lens ([layer][slot][kv head]).
  DeviceBuffer<int32_t> ints;
  DeviceBuffer<void*> kv_ptrs;      // keys [layer][slot][kv head], then values likewise
  DeviceBuffer<int32_t*> pos_ptrs;  // [layer][slot][kv head]
  std::vector<int32_t> ints_host;
  std::vector<void*> kv_ptrs_host;
  std::vector<int32_t*> pos_ptrs_host;
  std::vector<BatchJobShape> shapes;
  std::vector<float> probs_host, logits_host;

  void reserve_rows(const ModelConfig& c, int rows, cudaStream_t stream) {
    act.reserve(c, rows, stream);
    grow(q_stage, size_t(act.rows_capacity) * c.q_dim(), stream);
    grow(out_stage, size_t(act.rows_capacity) * c.q_dim(), stream);
  }
};

CudaLockstepGroup::CudaLockstepGroup(const CudaModel& model, CudaLockstepOptions options)
    : model_(model),
      options_(options),
      buf_(std::make_unique<Buffers>()),
      scheduler_([this](std::span<const CudaSession::ChunkJob> jobs, std::span<std::exception_ptr> errors) {
        run_step(jobs, errors);
      }) {
  if (options_.max_rows < 0 || options_.max_sequences < 0 || options_.max_len < 0)
    fail(kWhere, "max_rows, max_sequences and max_len must be >= 0");
  if (options_.max_probs_floats < 1) fail(kWhere, "max_probs_floats must be >= 1");
  cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  const cublasStatus_t created = cublasCreate(&cublas_);
  if (created != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream_);
    cublas_check(created, "cublasCreate");
  }
  try {
    cublas_check(cublasSetStream(cublas_, stream_), "cublasSetStream");
    // The planned pool: activations for max_rows stacked rows, the decode workspace for a decode step
    // of max_sequences sequences over max_len keys (the largest decode launch).
    const ModelConfig& c = model_.config();
    if (options_.max_rows > 0) buf_->reserve_rows(c, options_.max_rows, stream_);
    if (options_.max_sequences > 0 && options_.max_len > 0) {
      DecodeShape shape;
      shape.n_q_heads = options_.max_sequences * c.n_heads;
      shape.n_kv_heads = options_.max_sequences * c.n_kv_heads;
      shape.head_dim = c.head_dim;
      shape.max_len = options_.max_len;
      shape.with_probs = true;
      for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        shape.kv_dtype = dt;
        grow(buf_->decode_ws, decode_workspace_bytes(shape), stream_);
      }
    }
  } catch (...) {  // the destructor does not run for a constructor that throws
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaLockstepGroup::~CudaLockstepGroup() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaLockstepGroup::run_step(std::span<const CudaSession::ChunkJob> jobs, std::span<std::exception_ptr> errors) {
  // Attention launches read one KV type: one stacked pass per type present. A pass that fails fails its
  // own jobs only.
  for (const DType dtype : {DType::F16, DType::BF16, DType::F32}) {
    dtype_jobs_.clear();
    dtype_index_.clear();
    for (size_t i = 0; i < jobs.size(); ++i)
      if (jobs[i].session->options_.kv_dtype == dtype) {
        dtype_jobs_.push_back(jobs[i]);
        dtype_index_.push_back(i);
      }
    if (dtype_jobs_.empty()) continue;
    try {
      forward_jobs(dtype_jobs_);
    } catch (...) {
      for (size_t i : dtype_index_) errors[i] = std::current_exception();
    }
  }
  run_device_namm(jobs, errors);
}

void CudaLockstepGroup::run_device_namm(std::span<const CudaSession::ChunkJob> jobs,
                                        std::span<std::exception_ptr> errors) {
  // The sessions whose chunk ended at an update and whose NAMM runs on the device, served by one engine
  // (the first such session's configuration and normalizer; a population shares them) and at the
  // first one's query count. Others update on their own threads, as any policy. A session that cannot
  // take part (DeviceNamm::check) fails alone, untouched.
  namm_sessions_.clear();
  dtype_index_.clear();
  for (size_t i = 0; i < jobs.size(); ++i) {
    CudaSession* s = jobs[i].session;
    if (errors[i] || !jobs[i].ends_at_update) continue;
    const NammPolicy* policy = s->device_namm_policy();
    if (!policy) continue;
    try {
      if (namm_sessions_.empty() && (!namm_engine_ || !namm_engine_->serves(*policy)))
        namm_engine_ = std::make_unique<DeviceNamm>(policy->config(), policy->normalizer(), options_.namm_budget);
      if (!namm_engine_->serves(*policy)) continue;
      if (!namm_sessions_.empty() && s->query_positions_.size() != namm_sessions_[0]->query_positions_.size()) continue;
      namm_engine_->check(*s, model_, s->query_positions_.size());
      namm_sessions_.push_back(s);
      dtype_index_.push_back(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  if (namm_sessions_.empty()) return;
  try {
    namm_engine_->update(namm_sessions_, stream_);
    for (CudaSession* s : namm_sessions_) {
      s->policy_ran_in_step_ = true;
      ++s->batched_namm_updates_;
    }
  } catch (...) {
    for (size_t i : dtype_index_) {
      errors[i] = std::current_exception();
      jobs[i].session->broken_ = true;  // some of its layers may be compacted, others not
    }
  }
}

void CudaLockstepGroup::forward_jobs(std::span<const CudaSession::ChunkJob> jobs) {
  const ModelConfig& c = model_.config();
  const int n_layers = c.n_layers, n_kv = c.n_kv_heads, d = c.head_dim;
  const int n_jobs = static_cast<int>(jobs.size());
  const DType kv_dtype = jobs[0].session->options_.kv_dtype;
  Buffers& b = *buf_;

  // Room in every session's cache for its chunk (on the session's stream, synchronised), and the shapes
  // the plan needs.
  b.shapes.resize(size_t(n_jobs));
  for (int j = 0; j < n_jobs; ++j) {
    const CudaSession::ChunkJob& job = jobs[size_t(j)];
    CudaSession& s = *job.session;
    const int T = static_cast<int>(job.tokens.size());
    int max_len = 0;
    for (int l = 0; l < n_layers; ++l) {
      int layer_len = 0;
      for (int g = 0; g < n_kv; ++g) layer_len = std::max(layer_len, s.heads_[size_t(l) * n_kv + g].len + T);
      s.ensure_capacity(l, layer_len);
      max_len = std::max(max_len, layer_len);
    }
    BatchJobShape& shape = b.shapes[size_t(j)];
    shape.n_tokens = T;
    shape.wants_probs = s.policy_ && s.policy_->needs_attention();
    shape.max_len = max_len;
    shape.logits = !job.logits_out ? LogitRows::None : (job.logits_for_all ? LogitRows::All : LogitRows::Last);
  }
  const BatchPlan plan = plan_batch(b.shapes, n_kv, options_.max_probs_floats);
  const int R = plan.n_rows;
  const size_t vocab = size_t(c.vocab_size);
  const int n_logit_rows = static_cast<int>(plan.logit_rows.size());
  const int logit_block = logit_block_rows(c, R);

  // Every buffer the step needs, before any session's state changes (so that running out of memory
  // leaves the sessions as they were): activations, probabilities, the decode workspace of the
  // largest decode launch (attend() grows it further if a layer needs more), logits.
  b.reserve_rows(c, R, stream_);
  if (plan.max_probs_floats > 0) grow(b.probs, plan.max_probs_floats, stream_);
  for (const AttentionLaunch& launch : plan.launches) {
    if (launch.n_queries != 1) continue;
    DecodeShape shape;
    shape.kv_dtype = kv_dtype;
    shape.n_q_heads = launch.n_jobs * c.n_heads;
    shape.n_kv_heads = launch.n_jobs * n_kv;
    shape.head_dim = d;
    for (int i = 0; i < launch.n_jobs; ++i)
      shape.max_len = std::max(shape.max_len, b.shapes[size_t(plan.slot_job[size_t(launch.first_slot + i)])].max_len);
    shape.with_probs = launch.with_probs;
    grow(b.decode_ws, decode_workspace_bytes(shape), stream_);
  }
  if (n_logit_rows > 0) grow(b.logits, size_t(std::min(logit_block, n_logit_rows)) * vocab, stream_);
  b.logits_host.resize(size_t(n_logit_rows) * vocab);

  try {
    run_planned(jobs, plan);
  } catch (...) {
    // The sessions' lengths and positions may have moved past what their caches hold: they refuse to
    // run until reset (CudaSession::feed). Kernels may still be in flight on their caches.
    cudaStreamSynchronize(stream_);
    for (const CudaSession::ChunkJob& job : jobs) job.session->broken_ = true;
    throw;
  }
}

void CudaLockstepGroup::run_planned(std::span<const CudaSession::ChunkJob> jobs, const BatchPlan& plan) {
  const ModelConfig& c = model_.config();
  const int n_layers = c.n_layers, n_kv = c.n_kv_heads, d = c.head_dim;
  const int n_jobs = static_cast<int>(jobs.size());
  const DType kv_dtype = jobs[0].session->options_.kv_dtype;
  Buffers& b = *buf_;
  const int R = plan.n_rows;
  const int n_slots = n_jobs;
  const size_t layer_heads = size_t(n_slots) * n_kv;
  const size_t vocab = size_t(c.vocab_size);
  const int n_logit_rows = static_cast<int>(plan.logit_rows.size());
  const int logit_block = logit_block_rows(c, R);

  // Host bookkeeping of the append (lengths, positions), then the step's index and pointer arrays.
  std::vector<int32_t>& ints = b.ints_host;
  ints.clear();
  const size_t off_tokens = ints.size();
  for (const CudaSession::ChunkJob& job : jobs) ints.insert(ints.end(), job.tokens.begin(), job.tokens.end());
  const size_t off_positions = ints.size();
  for (const CudaSession::ChunkJob& job : jobs) {
    CudaSession& s = *job.session;
    const int T = static_cast<int>(job.tokens.size());
    for (int t = 0; t < T; ++t) {
      ints.push_back(int32_t(s.position_ + t));
      s.query_positions_.push_back(int32_t(s.position_ + t));
    }
    for (CudaSession::Head& h : s.heads_) {
      for (int t = 0; t < T; ++t) h.host_positions.push_back(int32_t(s.position_ + t));
      h.len += T;
    }
  }
  const size_t off_row_slot = ints.size();
  ints.insert(ints.end(), plan.row_slot.begin(), plan.row_slot.end());
  const size_t off_row_t = ints.size();
  ints.insert(ints.end(), plan.row_t.begin(), plan.row_t.end());
  const size_t off_slot_tokens = ints.size();
  ints.insert(ints.end(), plan.slot_tokens.begin(), plan.slot_tokens.end());
  const size_t off_gather = ints.size();
  ints.insert(ints.end(), plan.gather_rows.begin(), plan.gather_rows.end());
  const size_t off_logit_rows = ints.size();
  ints.insert(ints.end(), plan.logit_rows.begin(), plan.logit_rows.end());
  const size_t off_lens = ints.size();
  b.kv_ptrs_host.resize(2 * n_layers * layer_heads);
  b.pos_ptrs_host.resize(n_layers * layer_heads);
  for (int l = 0; l < n_layers; ++l)
    for (int slot = 0; slot < n_slots; ++slot) {
      const CudaSession& s = *jobs[size_t(plan.slot_job[size_t(slot)])].session;
      for (int g = 0; g < n_kv; ++g) {
        const CudaSession::Head& h = s.heads_[size_t(l) * n_kv + g];
        const size_t i = l * layer_heads + size_t(slot) * n_kv + g;
        b.kv_ptrs_host[i] = h.keys.get();
        b.kv_ptrs_host[n_layers * layer_heads + i] = h.values.get();
        b.pos_ptrs_host[i] = h.positions.get();
        ints.push_back(h.len);
      }
    }
  upload(b.ints, ints, stream_, "cudaMemcpyAsync (step indices)");
  upload(b.kv_ptrs, b.kv_ptrs_host, stream_, "cudaMemcpyAsync (KV pointers)");
  upload(b.pos_ptrs, b.pos_ptrs_host, stream_, "cudaMemcpyAsync (position pointers)");
  const int32_t* d_ints = b.ints.get();
  const int32_t* d_positions = d_ints + off_positions;
  const int32_t* d_gather = d_ints + off_gather;
  const int* d_lens = d_ints + off_lens;
  void* const* d_keys = b.kv_ptrs.get();
  void* const* d_values = b.kv_ptrs.get() + n_layers * layer_heads;
  const int* host_lens = ints.data() + off_lens;

  RowActivations& act = b.act;
  embedding_gather(model_.token_embedding().data.get(), model_.token_embedding().dtype, d_ints + off_tokens, R, c.dim,
                   act.x.get(), stream_);
  const float scale = 1.0f / std::sqrt(float(d));
  for (int l = 0; l < n_layers; ++l) {
    project_qkv(cublas_, model_, l, act, R, stream_);
    rope_rows_at(act.q.get(), R, c.n_heads, d, c.q_dim(), d_positions, model_.inv_freq(), c.rope_style, stream_);
    rope_rows_at(act.k.get(), R, n_kv, d, c.kv_dim(), d_positions, model_.inv_freq(), c.rope_style, stream_);
    const size_t lay = size_t(l) * layer_heads;
    append_kv_rows(act.k.get(), act.v.get(), R, n_kv, d, kv_dtype, d_keys + lay, d_values + lay, b.pos_ptrs.get() + lay,
                   d_lens + lay, d_ints + off_row_slot, d_ints + off_row_t, d_ints + off_slot_tokens, d_positions,
                   stream_);

    for (const AttentionLaunch& launch : plan.launches) {
      const size_t heads0 = lay + size_t(launch.first_slot) * n_kv;
      const int n_heads_kv = launch.n_jobs * n_kv;
      int max_len = 0;
      for (int i = 0; i < n_heads_kv; ++i) max_len = std::max(max_len, host_lens[heads0 + i]);
      const int rows = launch.n_queries * launch.n_jobs;
      const int32_t* index = d_gather + launch.gather_offset;
      gather_rows(act.q.get(), index, rows, c.q_dim(), b.q_stage.get(), stream_);
      const size_t probs_n = launch.with_probs ? size_t(n_heads_kv) * launch.n_queries * max_len : 0;
      if (launch.with_probs) grow(b.probs, probs_n, stream_);
      AttentionCall call;
      call.kv_dtype = kv_dtype;
      call.n_q_heads = launch.n_jobs * c.n_heads;
      call.n_kv_heads = n_heads_kv;
      call.head_dim = d;
      call.n_queries = launch.n_queries;
      call.max_len = max_len;
      call.q = b.q_stage.get();
      call.keys = d_keys + heads0;
      call.values = d_values + heads0;
      call.lens = d_lens + heads0;
      call.scale = scale;
      call.out = b.out_stage.get();
      call.probs = launch.with_probs ? b.probs.get() : nullptr;
      attend(call, b.decode_ws, stream_);
      scatter_rows(b.out_stage.get(), index, rows, c.q_dim(), act.attn.get(), stream_);
      if (launch.with_probs) {
        // Job i's [n_kv][T][max_len] block is what a launch for it alone writes (batch_plan.h).
        b.probs_host.resize(probs_n);
        cuda_check(cudaMemcpyAsync(b.probs_host.data(), b.probs.get(), probs_n * sizeof(float), cudaMemcpyDeviceToHost,
                                   stream_),
                   "cudaMemcpyAsync (attention probabilities)");
        cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (attention probabilities)");
        const size_t per_job = size_t(n_kv) * launch.n_queries * max_len;
        for (int i = 0; i < launch.n_jobs; ++i)
          jobs[size_t(plan.slot_job[size_t(launch.first_slot + i)])].session->log_attention_rows(
              l, launch.n_queries, b.probs_host.data() + size_t(i) * per_job, max_len);
      }
    }
    finish_layer(cublas_, model_, l, act, R, stream_);
  }
  for (const CudaSession::ChunkJob& job : jobs) job.session->position_ += int64_t(job.tokens.size());

  // The output layer for the rows someone reads, in blocks that bound the logits buffer (a job asking
  // for every row's logits of a long chunk times a large vocabulary).
  for (int first = 0; first < n_logit_rows; first += logit_block) {
    const int rows = std::min(logit_block, n_logit_rows - first);
    grow(b.logits, size_t(rows) * vocab, stream_);
    gather_rows(act.x.get(), d_ints + off_logit_rows + first, rows, c.dim, act.xn.get(), stream_);
    output_logits(cublas_, model_, act.xn.get(), rows, act, b.logits.get(), stream_);
    cuda_check(cudaMemcpyAsync(b.logits_host.data() + size_t(first) * vocab, b.logits.get(),
                               size_t(rows) * vocab * sizeof(float), cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync (logits)");
  }
  cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (step)");
  for (int j = 0; j < n_jobs; ++j) {
    const CudaSession::ChunkJob& job = jobs[size_t(j)];
    if (!job.logits_out) continue;
    const size_t n_rows = job.logits_for_all ? job.tokens.size() : 1;
    std::memcpy(job.logits_out, b.logits_host.data() + size_t(plan.logit_offset[size_t(j)]) * vocab,
                n_rows * vocab * sizeof(float));
  }
}

LockstepCudaBackend::LockstepCudaBackend(const Model& model, const CudaModel& gpu_model, std::string parent_name,
                                         CudaLockstepOptions options)
    : model_(model),
      gpu_model_(gpu_model),
      name_(std::move(parent_name) + " (lockstep batches)"),
      group_(std::make_unique<CudaLockstepGroup>(gpu_model_, options)) {}

std::unique_ptr<InferenceSession> LockstepCudaBackend::new_session(MemoryPolicy* policy,
                                                                   const SessionOptions& options) const {
  CudaSessionOptions o;
  o.session = options;
  o.namm_on_device = true;  // NAMM updates batched over the group's sessions (kernels/namm_device.h)
  // No reserve: unlike the CPU's untouched address space, device memory is committed at cudaMalloc, and
  // a population's caches at the full context would not fit for large models. Caches grow by doubling.
  return std::make_unique<CudaSession>(gpu_model_, policy, o, group_.get());
}

}  // namespace nammkit::kernels
