// Answer metrics: LongBench's metrics.py (THUDM/LongBench) ported function by function, plus the
// scoring rules of the synthetic benchmarks (RULER, lost-in-the-middle, LongEval). All scores are
// in [0, 1]; LongBench reports them x100.
//
// Fidelity notes (where the port has to decide):
//  - rouge_score is the `rouge` package (pltrdy, exclusive=True) rouge_l_summary_level: both texts
//    are split into "sentences" on '.', words on ' ', m/n are the numbers of *distinct* words, and
//    the LCS union is a set of words. F = 2PR / (P + R + 1e-8). An empty hypothesis raises in the
//    package and LongBench returns 0.
//  - code_sim_score uses fuzzywuzzy's pure-Python path (difflib.SequenceMatcher ratio, see
//    sequence_matcher.h), rounded like Python's round(); the first line *containing* none of
//    '`', '#', '//' is compared, as metrics.py does (it tests containment, not a prefix).
//  - classification_score reproduces metrics.py including its remove-while-iterating loop (a
//    match right after a removed one is not examined) and its dead fallback branch.
//  - qa_f1_zh / rouge_zh tokenise with jieba.cut(text, cut_all=False), as metrics.py does: tasks/jieba.h
//    ports jieba 0.42.1 and is checked token for token against Python jieba (tests/test_jieba.cpp),
//    so _zh scores are word-level and comparable with published LongBench numbers. They need jieba's
//    dictionary (models/jieba/, fetched by scripts/fetch_models.sh) and throw Error naming it when
//    it is missing.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace nammkit {

enum class Metric {
  QaF1,            // LongBench qa_f1_score
  QaF1Zh,          // qa_f1_zh_score (jieba words)
  Rouge,           // rouge_score (ROUGE-L F)
  RougeZh,         // rouge_zh_score (jieba words)
  Classification,  // classification_score (needs all_classes)
  Retrieval,       // retrieval_score ("Paragraph N")
  RetrievalZh,     // retrieval_zh_score ("段落N")
  Count,           // count_score
  CodeSim,         // code_sim_score
  StringMatchAll,  // RULER string_match_all: fraction of answers contained (case-insensitive)
  SubspanEm,       // lost-in-the-middle best_subspan_em: a normalised answer inside the normalised output
  LastNumber,      // LongChat LongEval lines: the last integer in the output equals the answer
};

// "qa_f1", "rouge", ... (the names accepted in task files). Throws Error naming `where` on unknown.
Metric parse_metric(const std::string& name, const std::string& where);
std::string metric_name(Metric m);

// Score of one prediction against one ground truth, as the reference function.
double metric_score(Metric m, std::string_view prediction, std::string_view ground_truth,
                    const std::vector<std::string>& all_classes = {});

// Score of one prediction against all its answers: the max over answers (LongBench's scorer,
// lost-in-the-middle, LongEval), except StringMatchAll which is the fraction of answers found.
// 0 when there are no answers.
double score_prediction(Metric m, std::string_view prediction, const std::vector<std::string>& answers,
                        const std::vector<std::string>& all_classes = {});

// The individual reference functions (exposed for tests and reuse).
std::string normalize_answer(std::string_view s);
std::string normalize_zh_answer(std::string_view s);
double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& ground_truth);
double qa_f1_score(std::string_view prediction, std::string_view ground_truth);
// jieba.cut of both texts, each token normalised by normalize_zh_answer, empty ones dropped; token F1.
double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth);
double rouge_score(std::string_view prediction, std::string_view ground_truth);
// rouge_score of the jieba tokens joined by single spaces (no normalisation, as metrics.py).
double rouge_zh_score(std::string_view prediction, std::string_view ground_truth);
double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes);
double retrieval_score(std::string_view prediction, std::string_view ground_truth);
double retrieval_zh_score(std::string_view prediction, std::string_view ground_truth);
double count_score(std::string_view prediction, std::string_view ground_truth);
double code_sim_score(std::string_view prediction, std::string_view ground_truth);
// fuzzywuzzy fuzz.ratio: 100 when equal, 0 when either is empty, else round(100 * difflib ratio).
int fuzz_ratio(std::string_view a, std::string_view b);

}  // namespace nammkit
