// SHA-256 (FIPS 180-4): a content identity that, unlike CRC-32 or FNV-1a (core/byte_io.h), is meant
// to be compared with hashes made elsewhere (e.g. `sha256sum` of a policy file named in a memory bank).
//
// nammkit's own small implementation: none of its dependencies offers SHA-256 (zlib has only CRC-32
// and Adler-32; OpenSSL is not a dependency), and hashing a policy file is not on any hot path.
#pragma once
#include <string>
#include <string_view>

namespace nammkit {

// SHA-256 of `bytes`, 64 lower-case hex digits (what `sha256sum` prints).
std::string sha256_hex(std::string_view bytes);

}  // namespace nammkit
