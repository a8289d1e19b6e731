// Train / held-out splits and per-sample seeding shared by every generator and loader.
//
// Disjointness is built in three independent ways, so that no held-out sample can leak into training:
//  1. text: a corpus is cut once at a fixed fraction (split_point); train samples read only the text
//     before the cut, held-out samples only the text after it;
//  2. values: every generated needle value (numbers, keys, variable names) is drawn from a range
//     that belongs to one split only (see synthetic.h: ValueRanges);
//  3. seeds: the per-sample RNG seed is derived from (seed, split, index) through different
//     streams, so the same (seed, index) yields unrelated samples in the two splits.
// Shipped data sets (JSONL files) split by line order: train = the first 80%, held-out = the rest.
#pragma once
#include <cstdint>
#include <string>

namespace nammkit {

enum class Split { Train, HeldOut, All };

// "train", "heldout" (also "held-out", "test") or "all"; Error naming `where` otherwise.
Split parse_split(const std::string& name, const std::string& where);
std::string split_name(Split s);

// The fraction of a corpus (or of a data file's records) that belongs to the train split.
inline constexpr double kTrainFraction = 0.8;

// The half-open record range [begin, end) of `n` records that belongs to `split`.
struct IndexRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};
IndexRange split_records(size_t n, Split split);

// The RNG seed of sample `index` of a generator: distinct streams per split.
uint64_t sample_seed(uint64_t seed, Split split, uint64_t index);

}  // namespace nammkit
