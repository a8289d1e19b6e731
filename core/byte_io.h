// Little-endian field encoding and checksums for nammkit's binary file envelopes (policy files,
// checkpoints, memory banks) and content hashes (cache keys, token hashes, config hashes).
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace nammkit {

static_assert(std::endian::native == std::endian::little, "nammkit's file formats are little-endian");

// Appends the bytes of an arithmetic value.
template <typename T>
void put_le(std::string& out, T value) {
  static_assert(std::is_arithmetic_v<T>);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

// Reads an arithmetic value from `p` (no alignment needed; the caller checks the bounds).
template <typename T>
T get_le(const void* p) {
  static_assert(std::is_arithmetic_v<T>);
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// CRC-32 (zlib's, the IEEE polynomial): detects truncation and corruption of file payloads.
uint32_t crc32(std::string_view bytes);

// FNV-1a 64: a fast, stable content hash for identities (not for integrity against tampering).
inline constexpr uint64_t kFnvOffset = 14695981039346656037ull;
uint64_t fnv1a64(std::string_view bytes, uint64_t hash = kFnvOffset);
// 16 lower-case hex digits.
std::string hex64(uint64_t value);

// splitmix64's output function: a well-mixed 64-bit hash of a counter or seed, for seed derivation
// and counter-based random numbers. Values are part of reproducible outputs: never change it.
inline constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace nammkit
