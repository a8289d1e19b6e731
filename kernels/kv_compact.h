// Eviction on the GPU: compacts one (layer, KV head) of a device KV cache in place, keeping the rows a
// memory policy chose, as KVCache::keep does on the CPU.
//
// Device layout: keys_LxD and values_LxD are [len][head_dim] of dtype (f32, or f16 / bf16 bits),
// positions_L is [len] int32 (may be null). After the call rows 0..keep.size()-1 hold the kept rows in
// order; rows past that are left as they were. Rows are gathered into a workspace and copied back, so
// no row is overwritten before it is read whatever the keep list.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "transformer/tensor.h"

namespace nammkit::kernels {

// Bytes of device scratch kv_compact_head needs to keep `n_keep` rows.
size_t kv_compact_workspace_bytes(DType dtype, int head_dim, int n_keep);

// `keep` is host memory: ascending, unique, each in [0, len); throws Error otherwise. It is uploaded on
// `stream` (the call returns once the host copy may be reused); the gather runs asynchronously.
void kv_compact_head(DType dtype, int head_dim, int len, void* keys_LxD, void* values_LxD, int32_t* positions_L,
                     std::span<const int32_t> keep, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace nammkit::kernels
