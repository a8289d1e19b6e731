#include "tasks/split.h"

#include <cmath>

#include "core/byte_io.h"
#include "core/error.h"

namespace nammkit {

Split parse_split(const std::string& name, const std::string& where) {
  if (name == "train") return Split::Train;
  if (name == "heldout" || name == "held-out" || name == "test") return Split::HeldOut;
  if (name == "all") return Split::All;
  fail(where, "unknown split \"" + name + "\" (expected train, heldout or all)");
}

std::string split_name(Split s) {
  switch (s) {
    case Split::Train: return "train";
    case Split::HeldOut: return "heldout";
    case Split::All: return "all";
  }
  return "?";
}

IndexRange split_records(size_t n, Split split) {
  const size_t cut = static_cast<size_t>(std::floor(kTrainFraction * static_cast<double>(n)));
  switch (split) {
    case Split::Train: return {0, cut};
    case Split::HeldOut: return {cut, n};
    case Split::All: return {0, n};
  }
  return {0, n};
}

uint64_t sample_seed(uint64_t seed, Split split, uint64_t index) {
  const uint64_t stream = splitmix64(seed) ^ splitmix64(0x5EED0000ull + static_cast<uint64_t>(split));
  return splitmix64(stream + splitmix64(index));
}

}  // namespace nammkit
