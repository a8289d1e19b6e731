#include "tasks/corpus.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"

namespace nammkit {
namespace {

std::string strip_endoftext(const std::string& text) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    if (line.find("<|endoftext|>") != std::string_view::npos) continue;
    out.append(line);
    out.push_back('\n');
  }
  return out;
}

// The book between the Gutenberg header and footer lines (the whole file when they are missing).
std::string gutenberg_body(const std::string& text) {
  size_t begin = 0, end = text.size();
  const size_t start = text.find("*** START OF");
  if (start != std::string::npos) {
    const size_t nl = text.find('\n', start);
    begin = nl == std::string::npos ? text.size() : nl + 1;
  }
  const size_t stop = text.find("*** END OF", begin);
  if (stop != std::string::npos) end = stop;
  return text.substr(begin, end - begin);
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += "\n\n";
    out += p;
  }
  return out;
}

}  // namespace

std::vector<std::string> corpus_names() { return {"tinystories", "pg_essays", "books", "shakespeare"}; }

std::string load_corpus(const std::string& name, const std::string& shared_dir) {
  const std::string data = shared_dir + "/data";
  if (name == "tinystories") return strip_endoftext(read_file(data + "/tinystories/tinystories_sample.txt"));
  if (name == "shakespeare") return read_file(data + "/books/tinyshakespeare.txt");
  if (name == "books") {
    std::vector<std::string> parts;
    for (const char* book : {"pg1342", "pg2701", "pg84"})
      parts.push_back(gutenberg_body(read_file(data + "/books/" + book + ".txt")));
    return join(parts);
  }
  if (name == "pg_essays") {
    const std::string dir = data + "/pg_essays";
    if (!is_directory(dir)) fail(dir, "cannot open directory: missing");
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    std::vector<std::string> parts;
    for (const auto& f : files) parts.push_back(read_file(f));
    return join(parts);
  }
  check_corpus_name(name, "corpus");
  fail("corpus", name + ": no loader");  // unreachable while corpus_names() lists only loaded names
}

void check_corpus_name(const std::string& name, const std::string& where) {
  const std::vector<std::string> names = corpus_names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
  fail(where, name + ": unknown text (known: " + known + ")");
}

size_t split_offset(std::string_view text) {
  size_t cut = static_cast<size_t>(std::floor(kTrainFraction * static_cast<double>(text.size())));
  const size_t nl = text.find('\n', cut);
  return nl == std::string_view::npos ? text.size() : nl + 1;
}

std::string_view split_text(std::string_view text, Split split) {
  const size_t cut = split_offset(text);
  switch (split) {
    case Split::Train: return text.substr(0, cut);
    case Split::HeldOut: return text.substr(cut);
    case Split::All: return text;
  }
  return text;
}

}  // namespace nammkit
