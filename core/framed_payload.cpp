#include "core/framed_payload.h"

#include <cstring>

#include "core/byte_io.h"
#include "core/error.h"

namespace nammkit {

std::string frame_payload(std::string_view magic, uint32_t version, std::string_view payload) {
  if (magic.size() != 8) fail("frame_payload", "magic: expected 8 characters");
  std::string out(magic);
  put_le<uint32_t>(out, version);
  put_le<uint64_t>(out, payload.size());
  put_le<uint32_t>(out, crc32(payload));
  out += payload;
  return out;
}

std::string_view unframe_payload(const std::string& bytes, std::string_view magic, uint32_t version,
                                 const std::string& kind, const std::string& where) {
  if (bytes.size() < kFrameHeaderSize)
    fail(where, "header: truncated (" + std::to_string(bytes.size()) + " bytes, the header alone is " +
                    std::to_string(kFrameHeaderSize) + ")");
  if (std::memcmp(bytes.data(), magic.data(), 8) != 0) fail(where, "header: not a nammkit " + kind + " (bad magic)");
  const uint32_t have_version = get_le<uint32_t>(bytes.data() + 8);
  if (have_version != version)
    fail(where, "format_version: " + std::to_string(have_version) + " is not supported (this build reads version " +
                    std::to_string(version) + ")");
  const uint64_t length = get_le<uint64_t>(bytes.data() + 12);
  const uint64_t have = bytes.size() - kFrameHeaderSize;
  if (have < length)
    fail(where, "payload: truncated (" + std::to_string(have) + " of " + std::to_string(length) + " bytes)");
  if (have > length) fail(where, "payload: " + std::to_string(have - length) + " unexpected trailing bytes");
  const std::string_view payload(bytes.data() + kFrameHeaderSize, length);
  if (crc32(payload) != get_le<uint32_t>(bytes.data() + 20)) fail(where, "payload: checksum mismatch (corrupted)");
  return payload;
}

}  // namespace nammkit
