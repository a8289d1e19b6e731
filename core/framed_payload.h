// The envelope of nammkit's checkpoint files: a fixed header in front of a serialised message.
//
//   bytes 0..7   magic (8 bytes, one per file kind, e.g. "NAMMCKPT")
//   bytes 8..11  format version, uint32 little-endian
//   bytes 12..19 payload length, uint64 little-endian
//   bytes 20..23 CRC-32 (zlib's) of the payload, uint32 little-endian
//   bytes 24..   the payload
//
// The frame turns a truncated or corrupted file into a precise error instead of a silently shorter
// message (Protobuf happily parses a prefix that ends on a field boundary).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace nammkit {

inline constexpr size_t kFrameHeaderSize = 24;  // magic 8 + version 4 + payload length 8 + CRC-32 4

// header + payload. `magic` must be exactly 8 characters.
std::string frame_payload(std::string_view magic, uint32_t version, std::string_view payload);

// The payload of a framed file, after checking the magic (`kind` names the file kind in the error:
// "not a nammkit <kind> (bad magic)"), the version, the length and the checksum. Errors are
// nammkit::Error "<where>: header|format_version|payload: <problem>". The view points into `bytes`.
std::string_view unframe_payload(const std::string& bytes, std::string_view magic, uint32_t version,
                                 const std::string& kind, const std::string& where);

}  // namespace nammkit
