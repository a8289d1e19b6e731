// Chinese word segmentation: a port of jieba 0.42.1's default mode, jieba.cut(text, cut_all=False,
// HMM=True), the tokenizer LongBench's _zh metrics use (metrics.h). tests/test_jieba.cpp checks it
// token for token against Python jieba on Chinese LongBench text.
//
// What jieba does, step by step (all on Unicode code points, as Python's str):
//  1. Blocks. The text splits into runs of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-] ("han blocks") and the
//     rest. Outside han blocks "\r\n" is one token and every other character is a token of its own.
//  2. DAG. In a han block, DAG[k] lists each i for which block[k..i] is a dictionary word of
//     non-zero frequency, scanning i upwards while block[k..i] is a word or a prefix of one; a k
//     with no such i gets DAG[k] = {k}.
//  3. Route. Right to left, route[k] = max over i in DAG[k] of the tuple
//     (log(freq(block[k..i]) or 1) - log(total) + route[i + 1].logprob, i): ties go to the longer
//     word, as Python's tuple comparison does.
//  4. Unknown words. Walking the route from the left, single characters collect in a buffer. A
//     buffer of one character is a token; a longer one that is a dictionary word is cut into its
//     characters; otherwise it goes through finalseg: runs of U+4E00..U+9FD5 are tagged B/M/E/S by
//     the HMM's Viterbi (transitions only from PrevStatus, MIN_FLOAT = -3.14e100 for a missing
//     emission or transition, ties to the larger state letter), and the other characters split
//     into [a-zA-Z0-9]+(\.\d+)?%? runs and the pieces between them.
//
// The data come from the jieba sdist, fetched by scripts/fetch_models.sh into models/jieba/:
// dict.txt ("word freq tag" lines; a repeated word keeps its last frequency, the total counts every
// line, as jieba's gen_pfdict) and hmm.json (finalseg's prob_start/prob_trans/prob_emit tables).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nammkit {

// The folder holding dict.txt and hmm.json: $NAMMKIT_MODELS_DIR/jieba when the variable is set,
// else models/jieba in the source tree this file was compiled from.
std::string jieba_dir();

class Jieba {
 public:
  // Loads <dir>/dict.txt and <dir>/hmm.json (about 0.5 s). Throws Error naming the file and
  // scripts/fetch_models.sh when one is missing, or the file and line / field when one is malformed.
  explicit Jieba(const std::string& dir);

  // The segmenter of jieba_dir(), loaded on first use; safe to call from several threads. A failed
  // load throws, and the next call tries again.
  static const Jieba& shared();

  // jieba.cut(text): the tokens, in order; their concatenation is the text. UTF-8 in and out
  // (invalid bytes read as U+FFFD, text_util.h).
  std::vector<std::string> cut(std::string_view text) const;
  std::vector<std::u32string> cut(std::u32string_view text) const;

 private:
  // B, M, E, S: finalseg's states, indexed in this order.
  static constexpr int kStates = 4;
  struct Hmm {
    std::array<double, kStates> start{};
    std::array<std::array<double, kStates>, kStates> trans{};  // [from][to]
    std::array<std::unordered_map<char32_t, double>, kStates> emit;
  };

  // An edge of the DAG: the word block[k..end] and its dictionary frequency (0 for a single
  // character that is no word).
  struct Edge {
    size_t end;
    int64_t freq;
  };

  void load_dictionary(const std::string& path);
  void load_hmm(const std::string& path);

  void cut_han_block(std::u32string_view block, std::vector<std::u32string>& out) const;
  void flush_single_chars(std::u32string_view buf, std::vector<std::u32string>& out) const;
  void cut_unknown(std::u32string_view buf, std::vector<std::u32string>& out) const;
  void viterbi_cut(std::u32string_view run, std::vector<std::u32string>& out) const;
  std::vector<std::vector<Edge>> dag(std::u32string_view block) const;
  std::vector<size_t> route(std::u32string_view block) const;
  // FREQ.get(word): -1 when absent, 0 for a prefix that is no word itself.
  int64_t frequency(const std::u32string& word) const;

  std::unordered_map<std::u32string, int64_t> freq_;  // words and every prefix of a word
  double log_total_ = 0;
  Hmm hmm_;
};

}  // namespace nammkit
