// libnammkit_cuda.so: the CUDA backend as a module the nammkit executable loads with dlopen
// (transformer/backend.cpp, make_backend), so that a CPU run maps no CUDA library.
#include <exception>
#include <string>

#include "kernels/cuda_backend.h"

// The module's one entry point: a new backend owned by the caller, or nullptr with the reason.
extern "C" __attribute__((visibility("default"))) nammkit::Backend* nammkit_cuda_backend_v1(const nammkit::Model* model,
                                                                                            std::string* error) {
  try {
    return nammkit::kernels::make_cuda_backend(*model).release();
  } catch (const std::exception& e) {
    *error = e.what();
    return nullptr;
  }
}
