#include "tasks/sequence_matcher.h"

#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace nammkit {
namespace {

struct Match {
  size_t i, j, size;
};

class Matcher {
 public:
  Matcher(std::u32string_view a, std::u32string_view b) : a_(a), b_(b) {
    for (size_t j = 0; j < b_.size(); ++j) b2j_[b_[j]].push_back(j);
    // difflib's autojunk: with 200+ elements, drop "popular" ones from the index.
    const size_t n = b_.size();
    if (n >= 200) {
      const size_t ntest = n / 100 + 1;
      for (auto it = b2j_.begin(); it != b2j_.end();) {
        if (it->second.size() > ntest) it = b2j_.erase(it);
        else ++it;
      }
    }
  }

  // There is no junk (isjunk=None), so difflib's junk-extension loops are no-ops and omitted.
  Match longest(size_t alo, size_t ahi, size_t blo, size_t bhi) const {
    size_t besti = alo, bestj = blo, bestsize = 0;
    std::unordered_map<size_t, size_t> j2len, next;
    for (size_t i = alo; i < ahi; ++i) {
      next.clear();
      auto found = b2j_.find(a_[i]);
      if (found != b2j_.end()) {
        for (size_t j : found->second) {
          if (j < blo) continue;
          if (j >= bhi) break;
          size_t prev = 0;
          if (j > 0) {
            auto p = j2len.find(j - 1);
            if (p != j2len.end()) prev = p->second;
          }
          const size_t k = next[j] = prev + 1;
          if (k > bestsize) {
            besti = i + 1 - k;
            bestj = j + 1 - k;
            bestsize = k;
          }
        }
      }
      std::swap(j2len, next);
    }
    while (besti > alo && bestj > blo && a_[besti - 1] == b_[bestj - 1]) {
      --besti;
      --bestj;
      ++bestsize;
    }
    while (besti + bestsize < ahi && bestj + bestsize < bhi && a_[besti + bestsize] == b_[bestj + bestsize]) ++bestsize;
    return {besti, bestj, bestsize};
  }

  size_t total_matches() const {
    size_t total = 0;
    std::vector<std::tuple<size_t, size_t, size_t, size_t>> queue = {{0, a_.size(), 0, b_.size()}};
    while (!queue.empty()) {
      auto [alo, ahi, blo, bhi] = queue.back();
      queue.pop_back();
      const Match m = longest(alo, ahi, blo, bhi);
      if (m.size == 0) continue;
      total += m.size;
      if (alo < m.i && blo < m.j) queue.emplace_back(alo, m.i, blo, m.j);
      if (m.i + m.size < ahi && m.j + m.size < bhi) queue.emplace_back(m.i + m.size, ahi, m.j + m.size, bhi);
    }
    return total;
  }

 private:
  std::u32string_view a_, b_;
  std::unordered_map<char32_t, std::vector<size_t>> b2j_;
};

}  // namespace

size_t difflib_matches(std::u32string_view a, std::u32string_view b) { return Matcher(a, b).total_matches(); }

double difflib_ratio(std::u32string_view a, std::u32string_view b) {
  const size_t total = a.size() + b.size();
  if (total == 0) return 1.0;
  return 2.0 * static_cast<double>(difflib_matches(a, b)) / static_cast<double>(total);
}

}  // namespace nammkit
