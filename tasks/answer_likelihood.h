// A generated task scored by how likely the model finds the right answer, instead of by the text it
// generates: the sample becomes a LogLikelihood sample over prompt + " " + answer + ".", scored on the
// answer's tokens (the continuation a retrieval template expects: "... The pass key is 51234.").
//
// Why: exact match is binary, so a fitness made of a few prompts per generation is mostly noise, and a
// task the model rarely solves even with the full cache (multikey on a small model) gives the search no
// signal at all. The answer's likelihood moves smoothly as a policy keeps more or less of what the
// answer needs, and it costs no decoding. Two scores, both normalised by the full cache's like every
// LogLikelihood score (fitness.h); evaluate with exact match:
//  - PerToken: exp(mean log-probability of the answer's tokens). Lenient: every digit at p = 0.7
//    scores 0.7, though greedy decoding would then rarely produce the whole answer.
//  - Answer: exp(sum), the probability of the whole answer: what sampling would get right, the smooth
//    counterpart of exact match.
#pragma once
#include <string>

#include "tasks/sample.h"
#include "transformer/tokenizer.h"

namespace nammkit {

enum class AnswerScore { PerToken, Answer };

// The continuation that is scored: " " + answer + ".".
std::string answer_continuation(const std::string& answer);

// `generate` must be a Generate sample with exactly one answer (passkey, needle, multikey). The
// prompt is encoded as the runner encodes it (BOS when the model uses one) and the continuation must
// extend that encoding (true when the prompt ends a word, as every template does); otherwise Error
// naming the sample. The id gains "/likelihood" or "/probability" so the full-cache reference store
// keeps the forms apart.
Sample answer_likelihood_sample(const Sample& generate, const Tokenizer& tokenizer,
                                AnswerScore score = AnswerScore::PerToken);

}  // namespace nammkit
