// File helpers shared by every module: whole-file reads, read-only memory maps and atomic writes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nammkit {

// Reads a whole file; throws Error("<path>: cannot open ...") when it is missing or unreadable.
std::string read_file(const std::string& path);

// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename over the target,
// fsync of the directory. A kill at any point leaves either the old file or the new one, never a mix.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Appends `line` and a newline to `path` (created if missing) and flushes; for JSONL logs.
void append_line(const std::string& path, std::string_view line);

bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

// Creates directory `path` and its parents and checks that files can be made in it; throws
// Error("<path>: cannot create directory: ...") when it is a file or cannot be created or written.
void make_writable_directory(const std::string& path);

// Deletes the temporaries write_file_atomic leaves ("<name>.tmp.<pid>") in `dir` when a process is
// killed mid-write. Only for a directory this process holds the FileLock of (nobody else writes there).
void remove_stale_temporaries(const std::string& dir);

// An exclusive advisory lock (flock) on the file `path`, created if missing, held until destruction.
// Throws Error("<path>: locked by another process ...") when another process holds it.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// A read-only memory map of a whole file. Owns the mapping; movable, not copyable.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws Error naming the path
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace nammkit
