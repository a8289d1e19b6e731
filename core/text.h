// Small text helpers every module shares: whitespace trimming, file-name stems, checked integer
// parsing with field-named errors, durations and UTC timestamps.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace nammkit {

// `s` without leading and trailing spaces, tabs, CR and LF.
std::string trim(std::string_view s);

// The file name without folders and without its last extension: "dir/model.q8.gguf" -> "model.q8".
std::string file_stem(const std::string& path);

// The last component of a path, trailing slashes ignored: "a/b.gguf" -> "b.gguf", "models/x/" -> "x".
std::string base_name(const std::string& path);

// The whole of `text` as an integer in [lo, hi]; otherwise throws
// Error("<where>: <field>: expected an integer in [lo, hi], got '<text>'").
int64_t parse_int(std::string_view text, const std::string& where, const std::string& field, int64_t lo, int64_t hi);

// A duration for progress lines: "45s", "3m07s", "1h02m05s"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);

// The current time as "2026-11-30T18:17:44Z".
std::string utc_now_iso8601();

}  // namespace nammkit
