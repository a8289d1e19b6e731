#include "tasks/metrics.h"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <map>
#include <set>
#include <unordered_set>

#include "core/error.h"
#include "tasks/jieba.h"
#include "tasks/sequence_matcher.h"
#include "tasks/text_util.h"

namespace nammkit {

using text::decode_utf8;
using text::encode_utf8;

namespace {

const std::vector<std::pair<Metric, std::string>>& metric_names() {
  static const std::vector<std::pair<Metric, std::string>> names = {
      {Metric::QaF1, "qa_f1"},
      {Metric::QaF1Zh, "qa_f1_zh"},
      {Metric::Rouge, "rouge"},
      {Metric::RougeZh, "rouge_zh"},
      {Metric::Classification, "classification"},
      {Metric::Retrieval, "retrieval"},
      {Metric::RetrievalZh, "retrieval_zh"},
      {Metric::Count, "count"},
      {Metric::CodeSim, "code_sim"},
      {Metric::StringMatchAll, "string_match_all"},
      {Metric::SubspanEm, "subspan_em"},
      {Metric::LastNumber, "last_number"},
  };
  return names;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// The Chinese punctuation list of normalize_zh_answer, verbatim from metrics.py.
const std::unordered_set<char32_t>& zh_punctuation() {
  static const std::unordered_set<char32_t> set = [] {
    const std::u32string cn = decode_utf8(
        "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝"
        "〞〟〰〾〿–—‘’‛“”„‟…‧﹏.");
    return std::unordered_set<char32_t>(cn.begin(), cn.end());
  }();
  return set;
}

std::vector<std::string> to_utf8(const std::vector<std::u32string>& words) {
  std::vector<std::string> out;
  out.reserve(words.size());
  for (const auto& w : words) out.push_back(encode_utf8(w));
  return out;
}

// Python's round() for a non-negative value: ties to even (FE_TONEAREST is the default mode).
int python_round(double x) { return static_cast<int>(std::nearbyint(x)); }

// The rouge package's sentence split: hyp.split("."), drop empty pieces, collapse whitespace;
// then each sentence's words are sentence.split(" ") (so a blank sentence is one empty word).
std::vector<std::vector<std::string>> rouge_sentences(std::string_view s) {
  std::vector<std::vector<std::string>> out;
  for (const std::u32string& piece : text::split_on(decode_utf8(s), U'.')) {
    if (piece.empty()) continue;
    std::vector<std::string> words = to_utf8(text::split_whitespace(piece));
    if (words.empty()) words.emplace_back();
    out.push_back(std::move(words));
  }
  return out;
}

// Words of the LCS of x (reference) and y (hypothesis), reconstructed along the package's path:
// diagonal on equality, else up when table[i-1][j] > table[i][j-1], else left.
void add_lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y, std::set<std::string>& out) {
  const size_t n = x.size(), m = y.size();
  std::vector<int> table((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> int& { return table[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i;
      --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
}

double count_matching_numbers(std::string_view prediction, const std::u32string& target) {
  const std::vector<std::u32string> numbers = text::find_numbers(decode_utf8(prediction));
  if (numbers.empty()) return 0.0;
  size_t right = 0;
  for (const auto& n : numbers) right += n == target;
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

// re.findall(prefix + r"(\d+)", s)[0]; metrics.py raises IndexError when there is none.
std::u32string paragraph_id(std::string_view ground_truth, std::string_view prefix, const char* metric) {
  const std::u32string gt = decode_utf8(ground_truth), p = decode_utf8(prefix);
  for (size_t pos = gt.find(p); pos != std::u32string::npos; pos = gt.find(p, pos + 1)) {
    size_t end = pos + p.size();
    while (end < gt.size() && text::is_digit(gt[end])) ++end;
    if (end > pos + p.size()) return gt.substr(pos + p.size(), end - pos - p.size());
  }
  fail(metric, "ground truth \"" + std::string(ground_truth) + "\" has no \"" + std::string(prefix) + "<number>\"");
}

}  // namespace

Metric parse_metric(const std::string& name, const std::string& where) {
  for (const auto& [m, n] : metric_names())
    if (n == name) return m;
  std::string known;
  for (const auto& [m, n] : metric_names()) known += (known.empty() ? "" : ", ") + n;
  fail(where, "unknown metric \"" + name + "\" (known: " + known + ")");
}

std::string metric_name(Metric m) {
  for (const auto& [mm, n] : metric_names())
    if (mm == m) return n;
  return "?";
}

std::string normalize_answer(std::string_view s) {
  // lower -> remove ASCII punctuation -> replace whole words a/an/the by " " -> collapse whitespace.
  std::u32string t;
  for (char32_t c : text::lower(decode_utf8(s)))
    if (!text::is_ascii_punct(c)) t.push_back(c);
  // re.sub(r"\b(a|an|the)\b", " ", t): an article is a maximal run of word characters.
  std::u32string u;
  size_t i = 0;
  while (i < t.size()) {
    if (!text::is_word_char(t[i])) {
      u.push_back(t[i++]);
      continue;
    }
    size_t j = i;
    while (j < t.size() && text::is_word_char(t[j])) ++j;
    const std::u32string_view word(t.data() + i, j - i);
    if (word == U"a" || word == U"an" || word == U"the") u.push_back(U' ');
    else u.append(word);
    i = j;
  }
  std::u32string out;
  for (const auto& w : text::split_whitespace(u)) {
    if (!out.empty()) out.push_back(U' ');
    out += w;
  }
  return encode_utf8(out);
}

std::string normalize_zh_answer(std::string_view s) {
  const auto& zh = zh_punctuation();
  std::u32string out;
  for (char32_t c : text::lower(decode_utf8(s)))
    if (!text::is_ascii_punct(c) && !zh.count(c) && !text::is_space(c)) out.push_back(c);
  return encode_utf8(out);
}

double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& ground_truth) {
  std::map<std::string, int> pred_counts, gt_counts;
  for (const auto& t : prediction) ++pred_counts[t];
  for (const auto& t : ground_truth) ++gt_counts[t];
  int same = 0;
  for (const auto& [tok, n] : pred_counts) {
    auto it = gt_counts.find(tok);
    if (it != gt_counts.end()) same += std::min(n, it->second);
  }
  if (same == 0) return 0.0;
  const double precision = double(same) / double(prediction.size());
  const double recall = double(same) / double(ground_truth.size());
  return 2 * precision * recall / (precision + recall);
}

double qa_f1_score(std::string_view prediction, std::string_view ground_truth) {
  return token_f1(to_utf8(text::split_whitespace(decode_utf8(normalize_answer(prediction)))),
                  to_utf8(text::split_whitespace(decode_utf8(normalize_answer(ground_truth)))));
}

double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth) {
  auto tokens = [](std::string_view s) {
    std::vector<std::string> out;
    for (const auto& t : Jieba::shared().cut(s)) {
      std::string n = normalize_zh_answer(t);
      if (!n.empty()) out.push_back(std::move(n));
    }
    return out;
  };
  return token_f1(tokens(prediction), tokens(ground_truth));
}

double rouge_score(std::string_view prediction, std::string_view ground_truth) {
  const auto hyp = rouge_sentences(prediction);
  const auto ref = rouge_sentences(ground_truth);
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises ValueError; metrics.py returns 0
  std::set<std::string> ref_words, hyp_words, lcs_union;
  for (const auto& s : ref) ref_words.insert(s.begin(), s.end());
  for (const auto& s : hyp) hyp_words.insert(s.begin(), s.end());
  for (const auto& r : ref)
    for (const auto& h : hyp) add_lcs_words(r, h, lcs_union);
  const double llcs = static_cast<double>(lcs_union.size());
  const double r = llcs / double(ref_words.size()), p = llcs / double(hyp_words.size());
  return 2.0 * ((p * r) / (p + r + 1e-8));
}

double rouge_zh_score(std::string_view prediction, std::string_view ground_truth) {
  auto joined = [](std::string_view s) {
    std::string out;
    for (const auto& t : Jieba::shared().cut(s)) {
      if (!out.empty()) out.push_back(' ');
      out += t;
    }
    return out;
  };
  return rouge_score(joined(prediction), joined(ground_truth));
}

double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matched;
  for (const auto& c : all_classes)
    if (contains(prediction, c)) matched.push_back(c);
  // metrics.py removes from the list while iterating over it: after a removal the element that
  // slid into the current slot is skipped. Reproduced with an index that always advances.
  for (size_t idx = 0; idx < matched.size(); ++idx) {
    const std::string term = matched[idx];
    if (contains(ground_truth, term) && term != ground_truth)
      matched.erase(std::find(matched.begin(), matched.end(), term));
  }
  if (std::find(matched.begin(), matched.end(), ground_truth) == matched.end()) return 0.0;
  return 1.0 / static_cast<double>(matched.size());
}

double retrieval_score(std::string_view prediction, std::string_view ground_truth) {
  return count_matching_numbers(prediction, paragraph_id(ground_truth, "Paragraph ", "retrieval_score"));
}

double retrieval_zh_score(std::string_view prediction, std::string_view ground_truth) {
  return count_matching_numbers(prediction, paragraph_id(ground_truth, "段落", "retrieval_zh_score"));
}

double count_score(std::string_view prediction, std::string_view ground_truth) {
  return count_matching_numbers(prediction, decode_utf8(ground_truth));
}

int fuzz_ratio(std::string_view a, std::string_view b) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  return python_round(100.0 * difflib_ratio(decode_utf8(a), decode_utf8(b)));
}

double code_sim_score(std::string_view prediction, std::string_view ground_truth) {
  size_t start = 0;
  while (start < prediction.size() && prediction[start] == '\n') ++start;
  std::string_view rest = prediction.substr(start);
  std::string_view line;
  while (true) {
    const size_t nl = rest.find('\n');
    const std::string_view candidate = rest.substr(0, nl);
    if (!contains(candidate, "`") && !contains(candidate, "#") && !contains(candidate, "//")) {
      line = candidate;
      break;
    }
    if (nl == std::string_view::npos) break;  // no acceptable line: compare the empty string
    rest = rest.substr(nl + 1);
  }
  return fuzz_ratio(line, ground_truth) / 100.0;
}

double metric_score(Metric m, std::string_view prediction, std::string_view ground_truth,
                    const std::vector<std::string>& all_classes) {
  switch (m) {
    case Metric::QaF1: return qa_f1_score(prediction, ground_truth);
    case Metric::QaF1Zh: return qa_f1_zh_score(prediction, ground_truth);
    case Metric::Rouge: return rouge_score(prediction, ground_truth);
    case Metric::RougeZh: return rouge_zh_score(prediction, ground_truth);
    case Metric::Classification: return classification_score(prediction, ground_truth, all_classes);
    case Metric::Retrieval: return retrieval_score(prediction, ground_truth);
    case Metric::RetrievalZh: return retrieval_zh_score(prediction, ground_truth);
    case Metric::Count: return count_score(prediction, ground_truth);
    case Metric::CodeSim: return code_sim_score(prediction, ground_truth);
    case Metric::StringMatchAll:
      return contains(encode_utf8(text::lower(decode_utf8(prediction))),
                      encode_utf8(text::lower(decode_utf8(ground_truth))))
                 ? 1.0
                 : 0.0;
    case Metric::SubspanEm: return contains(normalize_answer(prediction), normalize_answer(ground_truth)) ? 1.0 : 0.0;
    case Metric::LastNumber: {
      const auto numbers = text::find_numbers(decode_utf8(prediction));
      if (numbers.empty()) return 0.0;
      // int(...) comparison: leading zeros do not matter.
      auto strip = [](std::u32string s) {
        const size_t nz = s.find_first_not_of(U'0');
        return nz == std::u32string::npos ? std::u32string(U"0") : s.substr(nz);
      };
      return strip(numbers.back()) == strip(decode_utf8(ground_truth)) ? 1.0 : 0.0;
    }
  }
  return 0.0;
}

double score_prediction(Metric m, std::string_view prediction, const std::vector<std::string>& answers,
                        const std::vector<std::string>& all_classes) {
  if (answers.empty()) return 0.0;
  if (m == Metric::StringMatchAll) {
    double found = 0;
    for (const auto& a : answers) found += metric_score(m, prediction, a);
    return found / static_cast<double>(answers.size());
  }
  double best = 0.0;
  for (const auto& a : answers) best = std::max(best, metric_score(m, prediction, a, all_classes));
  return best;
}

}  // namespace nammkit
