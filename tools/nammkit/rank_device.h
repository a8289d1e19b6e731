// Which GPU a rank of a distributed run uses: ranks on the same node take different GPUs.
#pragma once
#include "transformer/backend.h"

namespace nammkit::cli {

// Narrows CUDA_VISIBLE_DEVICES, before CUDA starts, to the (local_rank mod count)-th of the GPUs this
// process may use: those CUDA_VISIBLE_DEVICES lists, else every GPU of the node (/proc/driver/nvidia).
// Nothing happens for --device cpu or on a node without GPUs.
void select_rank_gpu(DeviceChoice device, int local_rank);

}  // namespace nammkit::cli
