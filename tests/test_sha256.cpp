// core/sha256.h against the FIPS 180-4 / NIST example vectors, including messages whose padding
// spills into a second block.
#include <gtest/gtest.h>

#include <string>

#include "core/sha256.h"

namespace nammkit {
namespace {

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the length no longer fits the first block.
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, BinaryBytesAndBlockBoundaries) {
  // Embedded NULs count as bytes; lengths around the 55/56/64-byte padding edges all hash differently.
  EXPECT_NE(sha256_hex(std::string("a\0b", 3)), sha256_hex("ab"));
  std::string previous;
  for (size_t n : {55u, 56u, 63u, 64u, 65u}) {
    const std::string h = sha256_hex(std::string(n, 'x'));
    EXPECT_EQ(h.size(), 64u);
    EXPECT_NE(h, previous);
    previous = h;
  }
}

}  // namespace
}  // namespace nammkit
