#include "tasks/split.h"

#include <cmath>

#include "transformer/error.h"

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

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t sample_seed(uint64_t seed, Split split, uint64_t index) {
  const uint64_t stream = mix64(seed) ^ mix64(0x5EED0000ull + static_cast<uint64_t>(split));
  return mix64(stream + mix64(index));
}

}  // namespace nammkit
