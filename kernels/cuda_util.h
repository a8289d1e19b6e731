// Host-side helpers shared by the CUDA kernels, their tests and the benchmark: status checks that turn
// CUDA failures into nammkit::Error, an owning device buffer, and the element types of a KV cache.
//
// Everything here is plain C++ over the CUDA runtime API, so .cpp files can include it too.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "transformer/tensor.h"

namespace nammkit::kernels {

// Throws Error("<call>: <cudaErrorName>: <description>") unless `status` is cudaSuccess.
inline void cuda_check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) fail(call, std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status));
}

// Checks the launch just issued (a bad configuration shows up here, an execution fault later).
inline void cuda_check_launch(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

// Whether a CUDA device can be used: cudaGetDeviceCount succeeds and reports at least one. Clears
// the sticky error a failed query leaves, so a machine without a GPU can still run host code.
inline bool cuda_device_available() {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

// KV element types the attention and compaction kernels read: F32, F16 or BF16 (16-bit values are
// stored as their raw bits). Throws Error naming `where` for any other type.
inline size_t kv_element_bytes(DType t, const char* where) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    default: fail(where, std::string("KV dtype: expected f32, f16 or bf16, got ") + dtype_name(t));
  }
}

// An owning, uninitialised device allocation of `n` elements of T. Move-only.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  // Reallocates (contents are lost) unless the buffer already holds exactly `n` elements.
  void resize(size_t n) {
    if (n == n_ && ptr_) return;
    release();
    if (n == 0) return;
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
    ptr_ = static_cast<T*>(p);
    n_ = n;
  }
  // Grows (contents are lost) only when fewer than `n` elements are held.
  void reserve(size_t n) {
    if (n > n_) resize(n);
  }

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);  // nothing to report from a destructor; a sticky error shows up at the next check
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// Grows a scratch buffer to hold at least n elements (at least doubling; contents lost), after `stream`
// has finished with the old allocation.
template <typename T>
void grow(DeviceBuffer<T>& b, size_t n, cudaStream_t stream) {
  if (n <= b.size()) return;
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (grow)");
  b.resize(std::max(n, b.size() * 2));
}

// Copies `host` into `device` (grown as by grow(), after `stream` is done with the old allocation) on
// `stream`. Pageable host memory: the copy is staged before the call returns, so `host` may change then.
template <typename T>
void upload(DeviceBuffer<T>& device, const std::vector<T>& host, cudaStream_t stream, const char* what) {
  grow(device, host.size(), stream);
  if (!host.empty())
    cuda_check(cudaMemcpyAsync(device.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream),
               what);
}

}  // namespace nammkit::kernels
