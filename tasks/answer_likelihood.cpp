#include "tasks/answer_likelihood.h"

#include <algorithm>

#include "core/error.h"

namespace nammkit {

std::string answer_continuation(const std::string& answer) { return " " + answer + "."; }

Sample answer_likelihood_sample(const Sample& generate, const Tokenizer& tokenizer, AnswerScore score) {
  const std::string what = std::string("score: ") + (score == AnswerScore::Answer ? "probability" : "likelihood");
  if (generate.kind != SampleKind::Generate) fail(generate.id, what + " needs a generated sample");
  if (generate.answers.size() != 1)
    fail(generate.id, what + " needs exactly one answer, this sample has " + std::to_string(generate.answers.size()));
  const std::vector<int32_t> prompt = tokenizer.encode(generate.prompt, true);
  std::vector<int32_t> whole = tokenizer.encode(generate.prompt + answer_continuation(generate.answers[0]), true);
  // The scored tokens are the ones after the prompt's own encoding; a tokenizer that merges across
  // the boundary would make the model score a prompt it never sees, so that is refused.
  if (whole.size() <= prompt.size() || !std::equal(prompt.begin(), prompt.end(), whole.begin()))
    fail(generate.id, what + ": the answer's tokens do not extend the prompt's (the tokenizer merges across them)");
  Sample s;
  s.id = generate.id + (score == AnswerScore::Answer ? "/probability" : "/likelihood");
  s.sequence_probability = score == AnswerScore::Answer;
  s.whole_window = true;
  s.kind = SampleKind::LogLikelihood;
  s.answers = generate.answers;  // kept for reports; LogLikelihood scoring does not read them
  s.score_tokens = static_cast<int>(whole.size() - prompt.size());
  s.tokens = std::move(whole);
  return s;
}

}  // namespace nammkit
