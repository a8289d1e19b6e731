#include "tools/nammkit/rank_device.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace nammkit::cli {

void select_rank_gpu(DeviceChoice device, int local_rank) {
  if (device.kind == DeviceChoice::Cpu) return;
  std::vector<std::string> gpus;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string item;
    for (const char* c = visible;; ++c) {
      if (*c == ',' || *c == '\0') {
        if (!item.empty()) gpus.push_back(item);
        item.clear();
        if (*c == '\0') break;
      } else if (*c != ' ') {
        item += *c;
      }
    }
  } else {
    std::error_code ec;
    int count = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++count;
    for (int i = 0; i < count; ++i) gpus.push_back(std::to_string(i));
  }
  if (gpus.empty()) return;
  setenv("CUDA_VISIBLE_DEVICES", gpus[size_t(local_rank) % gpus.size()].c_str(), 1);
}

}  // namespace nammkit::cli
