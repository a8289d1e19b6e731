#include "tasks/jieba.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "tasks/data_paths.h"
#include "tasks/text_util.h"

namespace nammkit {

namespace {

constexpr double kMinFloat = -3.14e100;  // finalseg.MIN_FLOAT: log-probability of the impossible
enum State { B = 0, M = 1, E = 2, S = 3 };
constexpr std::array<char, 4> kStateLetter = {'B', 'M', 'E', 'S'};
// finalseg.PrevStatus: the states each state may follow (B after E or S, M after M or B, ...).
constexpr std::array<std::array<int, 2>, 4> kPrevStatus = {{{E, S}, {M, B}, {B, M}, {S, E}}};

// re_han_default's class [\u4E00-\u9FD5a-zA-Z0-9+#&\._%\-]: the characters of a han block.
bool in_han_block(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FD5) || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z') ||
         (c >= U'0' && c <= U'9') || c == U'+' || c == U'#' || c == U'&' || c == U'.' || c == U'_' || c == U'%' ||
         c == U'-';
}

// finalseg's re_han [\u4E00-\u9FD5]: what its HMM tags.
bool is_finalseg_han(char32_t c) { return c >= 0x4E00 && c <= 0x9FD5; }

bool is_ascii_alnum(char32_t c) {
  return (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z') || (c >= U'0' && c <= U'9');
}

// finalseg's re_skip ([a-zA-Z0-9]+(?:\.\d+)?%?) matched at s[i], an ASCII letter or digit: the
// end of the match. Its \d is Unicode's, but the text here comes from a han block, so only ASCII
// digits can occur.
size_t skip_match_end(std::u32string_view s, size_t i) {
  while (i < s.size() && is_ascii_alnum(s[i])) ++i;
  if (i + 1 < s.size() && s[i] == U'.' && s[i + 1] >= U'0' && s[i + 1] <= U'9') {
    i += 2;
    while (i < s.size() && s[i] >= U'0' && s[i] <= U'9') ++i;
  }
  if (i < s.size() && s[i] == U'%') ++i;
  return i;
}

void require_file(const std::string& path) {
  if (!file_exists(path)) fail(path, "missing: jieba's data are fetched by bash scripts/fetch_models.sh");
}

// gen_pfdict's int(freq), for the decimal counts dict.txt holds. A negative count, which jieba would
// fail on later (log of a negative number), is refused here.
bool parse_frequency(std::string_view s, int64_t& out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && out >= 0;
}

// bytes.strip(): ASCII whitespace at both ends.
std::string_view strip_ascii(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

double number(const nlohmann::json& obj, const std::string& key, const std::string& path, const std::string& field) {
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) fail(path, field + "." + key + ": expected a number");
  return it->get<double>();
}

const nlohmann::json& object(const nlohmann::json& obj, const std::string& key, const std::string& path,
                             const std::string& field) {
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_object()) fail(path, field + key + ": expected an object");
  return *it;
}

}  // namespace

std::string jieba_dir() { return default_models_dir() + "/jieba"; }

Jieba::Jieba(const std::string& dir) {
  load_dictionary(dir + "/dict.txt");
  load_hmm(dir + "/hmm.json");
}

const Jieba& Jieba::shared() {
  static const Jieba jieba(jieba_dir());  // C++11 statics: one thread builds, a throw retries later
  return jieba;
}

// jieba's gen_pfdict: each word's frequency (a repeated word keeps the last), the sum over all lines,
// and every prefix of a word with frequency 0 unless it is a word itself.
void Jieba::load_dictionary(const std::string& path) {
  require_file(path);
  const std::string bytes = read_file(path);
  freq_.reserve(600000);
  int64_t total = 0;
  size_t line_no = 0;
  for (size_t pos = 0; pos < bytes.size();) {
    const size_t nl = std::min(bytes.find('\n', pos), bytes.size());
    const std::string_view line = strip_ascii(std::string_view(bytes).substr(pos, nl - pos));
    pos = nl + 1;
    ++line_no;
    const size_t sp = line.find(' ');
    int64_t freq = 0;
    if (sp == std::string_view::npos || !parse_frequency(line.substr(sp + 1, line.find(' ', sp + 1) - sp - 1), freq))
      fail(path, "line " + std::to_string(line_no) + ": expected \"word frequency [tag]\"");
    const std::u32string word = text::decode_utf8(line.substr(0, sp));
    freq_[word] = freq;
    total += freq;
    for (size_t n = 1; n < word.size(); ++n) freq_.try_emplace(word.substr(0, n), 0);
  }
  if (total <= 0) fail(path, "no word with a positive frequency");
  log_total_ = std::log(static_cast<double>(total));
}

void Jieba::load_hmm(const std::string& path) {
  require_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, "expected an object with start, trans and emit");
  const auto& start = object(j, "start", path, "");
  const auto& trans = object(j, "trans", path, "");
  const auto& emit = object(j, "emit", path, "");
  for (int y = 0; y < kStates; ++y) {
    const std::string letter(1, kStateLetter[y]);
    hmm_.start[y] = number(start, letter, path, "start");
    const auto& row = object(trans, letter, path, "trans.");
    for (int to = 0; to < kStates; ++to) {
      const std::string to_letter(1, kStateLetter[to]);
      hmm_.trans[y][to] = row.contains(to_letter) ? number(row, to_letter, path, "trans." + letter) : kMinFloat;
    }
    for (const auto& [key, value] : object(emit, letter, path, "emit.").items()) {
      const std::u32string c = text::decode_utf8(key);
      if (c.size() != 1 || !value.is_number()) fail(path, "emit." + letter + "." + key + ": expected char: number");
      hmm_.emit[y][c[0]] = value.get<double>();
    }
  }
}

std::vector<std::string> Jieba::cut(std::string_view text) const {
  std::vector<std::string> out;
  for (const std::u32string& token : cut(std::u32string_view(text::decode_utf8(text))))
    out.push_back(text::encode_utf8(token));
  return out;
}

// Tokenizer.cut: han blocks go through the DAG; elsewhere re_skip_default "(\r\n|\s)" keeps each
// whitespace match whole and every other piece is yielded character by character, which together
// leave "\r\n" as the only token of two characters.
std::vector<std::u32string> Jieba::cut(std::u32string_view text) const {
  std::vector<std::u32string> out;
  size_t i = 0;
  while (i < text.size()) {
    if (in_han_block(text[i])) {
      size_t j = i;
      while (j < text.size() && in_han_block(text[j])) ++j;
      cut_han_block(text.substr(i, j - i), out);
      i = j;
    } else if (text[i] == U'\r' && i + 1 < text.size() && text[i + 1] == U'\n') {
      out.emplace_back(U"\r\n");
      i += 2;
    } else {
      out.emplace_back(1, text[i++]);
    }
  }
  return out;
}

int64_t Jieba::frequency(const std::u32string& word) const {
  const auto it = freq_.find(word);
  return it == freq_.end() ? -1 : it->second;
}

std::vector<std::vector<Jieba::Edge>> Jieba::dag(std::u32string_view block) const {
  const size_t n = block.size();
  std::vector<std::vector<Edge>> dag(n);
  std::u32string frag;
  for (size_t k = 0; k < n; ++k) {
    frag.assign(1, block[k]);
    for (size_t i = k; i < n;) {
      const int64_t f = frequency(frag);
      if (f < 0) break;  // not even a prefix of a word: no longer word can start here
      if (f > 0) dag[k].push_back({i, f});
      if (++i < n) frag.push_back(block[i]);
    }
    if (dag[k].empty()) dag[k].push_back({k, 0});
  }
  return dag;
}

// Tokenizer.calc: the best route's end index for each start, right to left; (logprob, end) tuples
// compare as in Python, so equal log-probabilities pick the larger end.
std::vector<size_t> Jieba::route(std::u32string_view block) const {
  const size_t n = block.size();
  const std::vector<std::vector<Edge>> edges = dag(block);
  std::vector<double> logprob(n + 1, 0.0);
  std::vector<size_t> end(n);
  for (size_t k = n; k-- > 0;) {
    bool first = true;
    for (const Edge& e : edges[k]) {
      // Same operations in the same order as jieba: log(freq or 1) - logtotal + route[x + 1][0].
      const double p = std::log(static_cast<double>(e.freq > 0 ? e.freq : 1)) - log_total_ + logprob[e.end + 1];
      if (first || p > logprob[k] || (p == logprob[k] && e.end > end[k])) {
        logprob[k] = p;
        end[k] = e.end;
        first = false;
      }
    }
  }
  return end;
}

// Tokenizer.__cut_DAG: the route's words; runs of single characters are buffered and resolved by
// flush_single_chars.
void Jieba::cut_han_block(std::u32string_view block, std::vector<std::u32string>& out) const {
  const std::vector<size_t> end = route(block);
  size_t buf_start = 0, buf_len = 0;
  for (size_t x = 0; x < block.size();) {
    const size_t y = end[x] + 1;
    if (y - x == 1) {
      if (buf_len == 0) buf_start = x;
      ++buf_len;
    } else {
      flush_single_chars(block.substr(buf_start, buf_len), out);
      buf_len = 0;
      out.emplace_back(block.substr(x, y - x));
    }
    x = y;
  }
  flush_single_chars(block.substr(buf_start, buf_len), out);
}

void Jieba::flush_single_chars(std::u32string_view buf, std::vector<std::u32string>& out) const {
  if (buf.empty()) return;
  if (buf.size() == 1) {
    out.emplace_back(buf);
  } else if (frequency(std::u32string(buf)) > 0) {  // a known word the route did not take: its characters
    for (char32_t c : buf) out.emplace_back(1, c);
  } else {
    cut_unknown(buf, out);
  }
}

// finalseg.cut: han runs through the HMM, the rest split around re_skip matches (empty pieces dropped).
void Jieba::cut_unknown(std::u32string_view buf, std::vector<std::u32string>& out) const {
  size_t i = 0;
  while (i < buf.size()) {
    size_t j = i;
    if (is_finalseg_han(buf[i])) {
      while (j < buf.size() && is_finalseg_han(buf[j])) ++j;
      viterbi_cut(buf.substr(i, j - i), out);
    } else if (is_ascii_alnum(buf[i])) {
      j = skip_match_end(buf, i);
      out.emplace_back(buf.substr(i, j - i));
    } else {  // a gap between matches: up to the next han character or ASCII letter/digit
      while (j < buf.size() && !is_finalseg_han(buf[j]) && !is_ascii_alnum(buf[j])) ++j;
      out.emplace_back(buf.substr(i, j - i));
    }
    i = j;
  }
}

// finalseg.viterbi and __cut: the most probable B/M/E/S tagging (ending in E or S), then words from
// B..E spans and S characters; a trailing unfinished span is one word.
void Jieba::viterbi_cut(std::u32string_view run, std::vector<std::u32string>& out) const {
  const size_t n = run.size();
  auto emit = [&](int y, char32_t c) {
    const auto it = hmm_.emit[y].find(c);
    return it == hmm_.emit[y].end() ? kMinFloat : it->second;
  };
  std::vector<std::array<double, kStates>> v(n);
  std::vector<std::array<int, kStates>> from(n);
  for (int y = 0; y < kStates; ++y) v[0][y] = hmm_.start[y] + emit(y, run[0]);
  for (size_t t = 1; t < n; ++t) {
    for (int y = 0; y < kStates; ++y) {
      const double em = emit(y, run[t]);
      double best = 0;
      int best_prev = -1;
      for (int y0 : kPrevStatus[y]) {
        const double p = v[t - 1][y0] + hmm_.trans[y0][y] + em;
        if (best_prev < 0 || p > best || (p == best && kStateLetter[y0] > kStateLetter[best_prev])) {
          best = p;
          best_prev = y0;
        }
      }
      v[t][y] = best;
      from[t][y] = best_prev;
    }
  }
  std::vector<int> tags(n);
  tags[n - 1] = v[n - 1][S] >= v[n - 1][E] ? S : E;  // max over (prob, 'E'), (prob, 'S')
  for (size_t t = n - 1; t > 0; --t) tags[t - 1] = from[t][tags[t]];

  size_t begin = 0, next = 0;
  for (size_t i = 0; i < n; ++i) {
    if (tags[i] == B) {
      begin = i;
    } else if (tags[i] == E) {
      out.emplace_back(run.substr(begin, i + 1 - begin));
      next = i + 1;
    } else if (tags[i] == S) {
      out.emplace_back(1, run[i]);
      next = i + 1;
    }
  }
  if (next < n) out.emplace_back(run.substr(next));
}

}  // namespace nammkit
