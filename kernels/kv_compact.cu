#include "kernels/kv_compact.h"

#include <algorithm>
#include <string>

#include "kernels/cuda_util.h"

namespace nammkit::kernels {

namespace {
size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// dst[r][c] = src[keep[r]][c] for r < n_keep, c < cols: W is a word of the element's size.
template <typename W>
__global__ void gather_rows_kernel(const W* __restrict__ src, const int32_t* __restrict__ keep, int n_keep, int cols,
                                   W* __restrict__ dst) {
  const size_t total = static_cast<size_t>(n_keep) * cols;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / cols, c = i % cols;
    dst[i] = src[static_cast<size_t>(keep[r]) * cols + c];
  }
}

template <typename W>
void gather(const void* src, const int32_t* keep, int n_keep, int cols, void* dst, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(n_keep) * cols;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + threads - 1) / threads, 65535));
  gather_rows_kernel<W>
      <<<blocks, threads, 0, stream>>>(static_cast<const W*>(src), keep, n_keep, cols, static_cast<W*>(dst));
  cuda_check_launch("gather_rows_kernel");
}

void gather_any(size_t elem, const void* src, const int32_t* keep, int n_keep, int cols, void* dst,
                cudaStream_t stream) {
  if (elem == 4) gather<uint32_t>(src, keep, n_keep, cols, dst, stream);
  else gather<uint16_t>(src, keep, n_keep, cols, dst, stream);
}
}  // namespace

size_t kv_compact_workspace_bytes(DType dtype, int head_dim, int n_keep) {
  const size_t rows =
      align256(static_cast<size_t>(n_keep) * head_dim * kv_element_bytes(dtype, "kv_compact_workspace_bytes"));
  return align256(sizeof(int32_t) * n_keep) * 2 + rows * 2;  // keep list, positions, keys, values
}

void kv_compact_head(DType dtype, int head_dim, int len, void* keys_LxD, void* values_LxD, int32_t* positions_L,
                     std::span<const int32_t> keep, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* where = "kv_compact_head";
  const size_t elem = kv_element_bytes(dtype, where);
  if (head_dim < 1) fail(where, "head_dim: expected >= 1, got " + std::to_string(head_dim));
  int32_t prev = -1;
  for (const int32_t k : keep) {
    if (k <= prev || k >= len)
      fail(where, "keep list not ascending or out of range (index " + std::to_string(k) + ", len " +
                      std::to_string(len) + ")");
    prev = k;
  }
  const int n_keep = static_cast<int>(keep.size());
  if (n_keep == 0) return;
  if (!keys_LxD || !values_LxD) fail(where, "keys and values must be non-null");
  const size_t needed = kv_compact_workspace_bytes(dtype, head_dim, n_keep);
  if (!workspace || workspace_bytes < needed)
    fail(where, "workspace: expected " + std::to_string(needed) + " bytes, got " + std::to_string(workspace_bytes));

  char* w = static_cast<char*>(workspace);
  auto* keep_dev = reinterpret_cast<int32_t*>(w);
  auto* pos_tmp = reinterpret_cast<int32_t*>(w + align256(sizeof(int32_t) * n_keep));
  char* keys_tmp = w + 2 * align256(sizeof(int32_t) * n_keep);
  const size_t row_bytes = static_cast<size_t>(n_keep) * head_dim * elem;
  char* values_tmp = keys_tmp + align256(row_bytes);

  cuda_check(cudaMemcpyAsync(keep_dev, keep.data(), sizeof(int32_t) * n_keep, cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync(keep)");
  gather_any(elem, keys_LxD, keep_dev, n_keep, head_dim, keys_tmp, stream);
  gather_any(elem, values_LxD, keep_dev, n_keep, head_dim, values_tmp, stream);
  cuda_check(cudaMemcpyAsync(keys_LxD, keys_tmp, row_bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync(keys)");
  cuda_check(cudaMemcpyAsync(values_LxD, values_tmp, row_bytes, cudaMemcpyDeviceToDevice, stream),
             "cudaMemcpyAsync(values)");
  if (positions_L) {
    gather<uint32_t>(positions_L, keep_dev, n_keep, 1, pos_tmp, stream);
    cuda_check(cudaMemcpyAsync(positions_L, pos_tmp, sizeof(int32_t) * n_keep, cudaMemcpyDeviceToDevice, stream),
               "cudaMemcpyAsync(positions)");
  }
}

}  // namespace nammkit::kernels
