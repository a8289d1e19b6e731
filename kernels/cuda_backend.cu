#include "kernels/cuda_backend.h"

#include <string>

#include "core/error.h"
#include "kernels/cuda_lockstep.h"
#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/cuda_util.h"

namespace nammkit::kernels {

namespace {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const Model& model) : model_(model), gpu_(model) {
    int device = 0;
    cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    name_ = "cuda:" + std::to_string(device) + " " + prop.name;
  }
  Device device() const override { return Device::Cuda; }
  std::string name() const override { return name_; }
  const Model& model() const override { return model_; }
  std::unique_ptr<InferenceSession> new_session(MemoryPolicy* policy, const SessionOptions& options) const override {
    CudaSessionOptions o;
    o.session = options;
    return std::make_unique<CudaSession>(gpu_, policy, o);
  }
  std::unique_ptr<Backend> new_lockstep_backend(const LockstepCapacity& capacity) const override {
    CudaLockstepOptions options;
    options.max_rows = capacity.rows;
    options.max_sequences = capacity.sequences;
    options.max_len = capacity.max_len;
    return std::make_unique<LockstepCudaBackend>(model_, gpu_, name_, options);
  }

 private:
  const Model& model_;
  CudaModel gpu_;
  std::string name_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Model& model) {
  if (!cuda_device_available()) fail("cuda backend", "no CUDA device (cudaGetDeviceCount found none)");
  return std::make_unique<CudaBackend>(model);
}

}  // namespace nammkit::kernels
