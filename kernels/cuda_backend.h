// The CUDA Backend (transformer/backend.h): a Model's weights uploaded once to the current device
// (CudaModel), making one CudaSession per sequence. The nammkit executable does not link it: it loads
// libnammkit_cuda.so (kernels/cuda_module.cpp), which wraps make_cuda_backend, only when asked to.
#pragma once
#include <memory>

#include "transformer/backend.h"

namespace nammkit::kernels {

// Throws Error when there is no CUDA device or the upload fails. `model` must outlive the backend.
std::unique_ptr<Backend> make_cuda_backend(const Model& model);

}  // namespace nammkit::kernels
