// File helpers: atomic writes and memory maps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"

namespace nammkit {
namespace {

std::filesystem::path temp_dir() {
  auto dir = std::filesystem::temp_directory_path() / ("nammkit_file_io_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(FileIo, AtomicWriteReplacesWholeFileAndLeavesNoTemporary) {
  const auto dir = temp_dir();
  const std::string path = (dir / "state.bin").string();
  write_file_atomic(path, "first version");
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1);
  std::filesystem::remove_all(dir);
}

TEST(FileIo, MissingFilesAreErrorsNamingThePath) {
  try {
    read_file("/no/such/file.bin");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/file.bin"), std::string::npos);
  }
  EXPECT_THROW(MappedFile("/no/such/file.bin"), Error);
  EXPECT_THROW(write_file_atomic("/no/such/dir/file.bin", "x"), Error);
}

TEST(FileIo, WritableDirectoryLockAndStaleTemporaries) {
  const auto dir = temp_dir();
  const std::string run = (dir / "run").string();
  make_writable_directory(run + "/nested");
  EXPECT_TRUE(is_directory(run + "/nested"));
  write_file_atomic(run + "/file", "x");
  try {
    make_writable_directory(run + "/file");
    ADD_FAILURE() << "a file accepted as a directory";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(run + "/file: cannot create directory: ", 0), 0u) << e.what();
  }
  {
    const FileLock lock(run + "/.lock");
    try {
      const FileLock second(run + "/.lock");  // flock locks are per open file: a second one conflicts
      ADD_FAILURE() << "second lock taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(run + "/.lock: locked by another process"), std::string::npos);
    }
  }
  const FileLock again(run + "/.lock");  // released with the first
  for (const char* name : {"latest.ckpt.tmp.4242", "log.jsonl.tmp.17"}) write_file_atomic(run + "/" + name, "partial");
  write_file_atomic(run + "/notes.tmp.txt", "kept");
  remove_stale_temporaries(run);
  EXPECT_FALSE(file_exists(run + "/latest.ckpt.tmp.4242"));
  EXPECT_FALSE(file_exists(run + "/log.jsonl.tmp.17"));
  EXPECT_TRUE(file_exists(run + "/notes.tmp.txt"));
  EXPECT_TRUE(file_exists(run + "/file"));
  std::filesystem::remove_all(dir);
}

TEST(FileIo, MappedFileSeesTheBytes) {
  const auto dir = temp_dir();
  const std::string path = (dir / "m.bin").string();
  write_file_atomic(path, std::string("abc\0def", 7));
  MappedFile m(path);
  ASSERT_EQ(m.size(), 7u);
  EXPECT_EQ(m.data()[4], 'd');
  MappedFile moved = std::move(m);
  EXPECT_EQ(moved.size(), 7u);
  EXPECT_EQ(m.data(), nullptr);
  std::filesystem::remove_all(dir);
}

TEST(Text, TrimStemAndCheckedIntegers) {
  EXPECT_EQ(trim(" \t a b \r\n"), "a b");
  EXPECT_EQ(trim(" \t\r\n"), "");
  EXPECT_EQ(file_stem("dir/sub/model.q8.gguf"), "model.q8");
  EXPECT_EQ(file_stem(".hidden"), ".hidden");
  EXPECT_EQ(base_name("dir/sub/model.q8.gguf"), "model.q8.gguf");
  EXPECT_EQ(base_name("models/SmolLM2/"), "SmolLM2");
  EXPECT_EQ(base_name("plain"), "plain");
  EXPECT_EQ(parse_int("42", "w", "f", 0, 100), 42);
  EXPECT_EQ(parse_int("-3", "w", "f", -5, 5), -3);
  for (const char* bad : {"", "4x", " 4", "101", "-1", "99999999999999999999"}) {
    try {
      parse_int(bad, "config.json", "layers", 0, 100);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()),
                std::string("config.json: layers: expected an integer in [0, 100], got '") + bad + "'");
    }
  }
  const std::string now = utc_now_iso8601();
  ASSERT_EQ(now.size(), 20u);
  EXPECT_EQ(now[10], 'T');
  EXPECT_EQ(now.back(), 'Z');
}

}  // namespace
}  // namespace nammkit
