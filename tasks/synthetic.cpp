#include "tasks/synthetic.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "tasks/corpus.h"
#include "tasks/data_paths.h"

namespace nammkit {
namespace {

// Keys are "<adjective>-<noun>" as RULER's word keys; the adjective list is cut in two halves, one
// per split, so a key can never occur in both.
const char* const kAdjectives[] = {"ancient", "bitter", "brave",  "calm",   "clever", "crisp", "dusty", "eager",
                                   "fierce",  "gentle", "glossy", "hollow", "humble", "icy",   "jolly", "keen",
                                   "lively",  "mellow", "misty",  "noble",  "odd",    "proud", "quiet", "rapid",
                                   "rusty",   "shy",    "silent", "sturdy", "tender", "vivid", "wild",  "zealous"};
const char* const kNouns[] = {"anchor", "badger", "canyon", "dagger",  "ember",    "falcon",  "garden", "harbor",
                              "island", "jungle", "kettle", "lantern", "meadow",   "needle",  "orchid", "pepper",
                              "quarry", "raven",  "saddle", "tunnel",  "umbrella", "valley",  "walnut", "yarrow",
                              "zephyr", "beacon", "cobalt", "drum",    "feather",  "glacier", "hammer", "ivory"};
constexpr int kWords = 32;

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
uint64_t below(std::mt19937_64& rng, uint64_t n) { return rng() % n; }

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// Index just after the sentence end at or before `pos` (0 when there is none).
size_t sentence_start_before(std::string_view s, size_t pos) {
  pos = std::min(pos, s.size());
  for (size_t i = pos; i > 0; --i) {
    const char prev = s[i - 1];
    if (prev == '\n') return i;
    if ((prev == '.' || prev == '!' || prev == '?') && i < s.size() && is_space(s[i])) return i + 1;
  }
  return 0;
}

// The first sentence start at or after `pos` (within 2,000 bytes; else pos itself).
size_t sentence_start_after(std::string_view s, size_t pos) {
  if (pos == 0) return 0;
  for (size_t i = pos; i < s.size() && i < pos + 2000; ++i) {
    if (s[i - 1] == '\n') return i;
    if ((s[i - 1] == '.' || s[i - 1] == '!' || s[i - 1] == '?') && is_space(s[i])) return i + 1;
  }
  return pos;
}

// `len` bytes from `start`, shortened to end before a whitespace so no word is cut.
std::string_view word_prefix(std::string_view s, size_t start, size_t len) {
  std::string_view piece = s.substr(start, len);
  if (start + piece.size() >= s.size()) return piece;
  size_t end = piece.size();
  while (end > 0 && !is_space(piece[end - 1]) && !is_space(s[start + end])) --end;
  return piece.substr(0, end);
}

std::string join_keys(const std::vector<std::string>& keys) {
  if (keys.size() == 1) return keys[0];
  std::string out;
  for (size_t i = 0; i + 1 < keys.size(); ++i) out += (i ? ", " : "") + keys[i];
  return out + ", and " + keys.back();
}

}  // namespace

SyntheticKind parse_synthetic_kind(const std::string& name, const std::string& where) {
  if (name == "passkey") return SyntheticKind::Passkey;
  if (name == "needle") return SyntheticKind::Needle;
  if (name == "multikey") return SyntheticKind::MultiKey;
  if (name == "multiquery") return SyntheticKind::MultiQuery;
  if (name == "vartrack") return SyntheticKind::VariableTracking;
  fail(where, "unknown synthetic task \"" + name + "\" (known: passkey, needle, multikey, multiquery, vartrack)");
}

std::string synthetic_kind_name(SyntheticKind kind) {
  switch (kind) {
    case SyntheticKind::Passkey: return "passkey";
    case SyntheticKind::Needle: return "needle";
    case SyntheticKind::MultiKey: return "multikey";
    case SyntheticKind::MultiQuery: return "multiquery";
    case SyntheticKind::VariableTracking: return "vartrack";
  }
  return "?";
}

void SyntheticOptions::validate(const std::string& where) const {
  if (context_tokens < 64) fail(where, "context_tokens: " + std::to_string(context_tokens) + " is too small (>= 64)");
  if (depth_percent > 100) fail(where, "depth: must be within 0..100");
  if (pairs < 1 || pairs > kWords * kWords / 2)
    fail(where, "pairs: must be within 1.." + std::to_string(kWords * kWords / 2));
  if (queries < 1 || queries > pairs) fail(where, "queries: must be within 1..pairs");
  if (hops < 1 || hops > 64) fail(where, "hops: must be within 1..64");
  if (max_new_tokens < 0) fail(where, "max_new_tokens: must be >= 0");
}

std::string ValueRanges::number(std::mt19937_64& rng, int digits, Split split) {
  // The leading digit owns the split: 1-4 train, 5-9 held-out, 1-9 all.
  const int lo = split == Split::HeldOut ? 5 : 1, hi = split == Split::Train ? 4 : 9;
  std::string out(1, static_cast<char>('0' + lo + static_cast<int>(below(rng, hi - lo + 1))));
  for (int i = 1; i < digits; ++i) out.push_back(static_cast<char>('0' + below(rng, 10)));
  return out;
}

std::string ValueRanges::key(std::mt19937_64& rng, Split split) {
  const int half = kWords / 2;
  const int lo = split == Split::HeldOut ? half : 0, n = split == Split::All ? kWords : half;
  return std::string(kAdjectives[lo + below(rng, n)]) + "-" + kNouns[below(rng, kWords)];
}

std::string ValueRanges::variable(std::mt19937_64& rng, Split split) {
  // First letter A-M (train) or N-Z (held-out), then four more capitals.
  const int lo = split == Split::HeldOut ? 13 : 0, n = split == Split::All ? 26 : 13;
  std::string out(1, static_cast<char>('A' + lo + below(rng, n)));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>('A' + below(rng, 26)));
  return out;
}

std::string insert_needles(std::string_view haystack, std::vector<std::pair<std::string, double>> needles) {
  std::stable_sort(needles.begin(), needles.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  std::string out(haystack);
  // Last needle first, so earlier insertion points stay valid; at a shared boundary the earlier
  // needle ends up first.
  for (auto it = needles.rbegin(); it != needles.rend(); ++it) {
    const double depth = std::clamp(it->second, 0.0, 1.0);
    const size_t pos = static_cast<size_t>(std::floor(depth * static_cast<double>(haystack.size())));
    if (pos >= haystack.size() && !haystack.empty()) {
      out.insert(haystack.size(), (is_space(haystack.back()) ? "" : " ") + it->first);
      continue;
    }
    out.insert(sentence_start_before(haystack, pos), it->first + " ");
  }
  return out;
}

SyntheticGenerator::SyntheticGenerator(SyntheticOptions options, const Tokenizer& tokenizer)
    : options_(std::move(options)), tokenizer_(tokenizer) {
  const std::string where = synthetic_kind_name(options_.kind);
  options_.validate(where);
  if (tokenizer_.empty()) fail(where, "tokenizer: the model has no tokenizer");
  corpus_ = load_corpus(options_.haystack, options_.shared_dir.empty() ? default_shared_dir() : options_.shared_dir);
  text_ = split_text(corpus_, options_.split);
  const std::string_view probe = word_prefix(text_, 0, std::min<size_t>(text_.size(), 8000));
  const size_t probe_tokens = tokenizer_.encode(probe, false).size();
  if (probe_tokens == 0) fail(where, "haystack: \"" + options_.haystack + "\" has no text in this split");
  chars_per_token_ = static_cast<double>(probe.size()) / static_cast<double>(probe_tokens);
}

std::string SyntheticGenerator::build_prompt(std::mt19937_64& rng, const std::string& prefix,
                                             std::vector<Needle> needles, const std::string& suffix) const {
  const std::string where =
      synthetic_kind_name(options_.kind) + ": " + options_.haystack + " (" + split_name(options_.split) + ")";
  const int target = options_.context_tokens;
  std::vector<std::pair<std::string, double>> placed;
  for (auto& n : needles) placed.emplace_back(std::move(n.text), n.depth);

  auto prompt_for = [&](std::string_view hay) { return prefix + insert_needles(hay, placed) + suffix; };
  auto tokens_for = [&](std::string_view hay) {
    return static_cast<int>(tokenizer_.encode(prompt_for(hay), true).size());
  };

  const int base = tokens_for({});
  if (base > target)
    fail(where, "context_tokens: " + std::to_string(target) + " is below the template's own " + std::to_string(base) +
                    " tokens");

  // A random sentence start with enough text after it (1.5x the estimate), when the split allows.
  const double estimate = (target - base) * chars_per_token_;
  const size_t needed = static_cast<size_t>(1.5 * estimate) + 64;
  size_t start = 0;
  if (text_.size() > needed)
    start = sentence_start_after(text_, static_cast<size_t>(below(rng, text_.size() - needed)));

  // Largest word-aligned length with tokens <= target. Bracket [lo, hi] with tokens(lo) <= target
  // < tokens(hi) (hi grows from a multiple of the estimate, so the whole split is never encoded),
  // then secant steps, falling back to bisection, inside the shrinking bracket.
  const size_t avail = text_.size() - start;
  size_t lo = 0, hi = std::min(avail, static_cast<size_t>(3 * estimate) + 4096);
  while (true) {
    const int t = tokens_for(word_prefix(text_, start, hi));
    if (t > target) break;
    if (hi == avail) {
      if (target - t > std::max(4, target / 100))
        fail(where, "context_tokens: the split's text after the sample's start gives only " + std::to_string(t) +
                        " tokens, fewer than " + std::to_string(target));
      return prompt_for(word_prefix(text_, start, hi));
    }
    lo = hi;
    hi = std::min(avail, 2 * hi);
  }
  size_t guess = hi - lo > 1 ? std::clamp(static_cast<size_t>(estimate), lo + 1, hi - 1) : lo;
  for (int iter = 0; iter < 64 && hi - lo > 1; ++iter) {
    const int t = tokens_for(word_prefix(text_, start, guess));
    if (t <= target) {
      lo = guess;
      if (target - t <= 1) break;
    } else {
      hi = guess;
    }
    double next = static_cast<double>(guess) + (target - t) * chars_per_token_;
    if (!(next > static_cast<double>(lo) && next < static_cast<double>(hi)) ||
        std::abs(next - static_cast<double>(guess)) < 1)
      next = static_cast<double>(lo + (hi - lo) / 2);
    guess = static_cast<size_t>(next);
  }
  return prompt_for(word_prefix(text_, start, lo));
}

Sample SyntheticGenerator::sample(uint64_t index) const {
  std::mt19937_64 rng(sample_seed(options_.seed, options_.split, index));
  const Split split = options_.split;
  auto depth = [&] { return options_.depth_percent >= 0 ? options_.depth_percent / 100.0 : uniform01(rng); };
  auto distinct_keys = [&](int n) {
    std::vector<std::string> keys;
    while (static_cast<int>(keys.size()) < n) {
      std::string k = ValueRanges::key(rng, split);
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(std::move(k));
    }
    return keys;
  };
  const std::string niah_prefix =
      "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
      "I will quiz you about the numbers afterwards.\n";

  Sample s;
  s.id = synthetic_kind_name(options_.kind) + "/" + split_name(split) + "/" + std::to_string(options_.seed) + "/" +
         std::to_string(index);
  s.metric = Metric::StringMatchAll;
  int default_new_tokens = 16;
  switch (options_.kind) {
    case SyntheticKind::Passkey: {
      const std::string key = ValueRanges::number(rng, 5, split);
      s.prompt = build_prompt(rng,
                              "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                              "it. I will quiz you about the important information there.\n\n",
                              {{"The pass key is " + key + ". Remember it. " + key + " is the pass key.", depth()}},
                              "\n\nWhat is the pass key? The pass key is");
      s.answers = {key};
      default_new_tokens = 8;
      break;
    }
    case SyntheticKind::Needle: {
      const std::string key = ValueRanges::key(rng, split), value = ValueRanges::number(rng, 7, split);
      s.prompt = build_prompt(rng, niah_prefix,
                              {{"One of the special magic numbers for " + key + " is: " + value + ".", depth()}},
                              "\nWhat is the special magic number for " + key +
                                  " mentioned in the provided text? The special magic number for " + key +
                                  " mentioned in the provided text is");
      s.answers = {value};
      break;
    }
    case SyntheticKind::MultiKey:
    case SyntheticKind::MultiQuery: {
      const std::vector<std::string> keys = distinct_keys(options_.pairs);
      std::vector<std::string> values;
      std::vector<Needle> needles;
      for (const auto& k : keys) {
        values.push_back(ValueRanges::number(rng, 7, split));
        needles.push_back(
            {"One of the special magic numbers for " + k + " is: " + values.back() + ".", uniform01(rng)});
      }
      const int asked = options_.kind == SyntheticKind::MultiKey ? 1 : options_.queries;
      // The asked keys: a seeded choice without replacement, in needle order.
      std::vector<size_t> order(keys.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      for (int i = 0; i < asked; ++i) std::swap(order[i], order[i + below(rng, order.size() - i)]);
      order.resize(asked);
      std::sort(order.begin(), order.end());
      std::vector<std::string> asked_keys;
      for (size_t i : order) {
        asked_keys.push_back(keys[i]);
        s.answers.push_back(values[i]);
      }
      const std::string query = join_keys(asked_keys);
      const std::string suffix = asked == 1 ? "\nWhat is the special magic number for " + query +
                                                  " mentioned in the provided text? The special magic number for " +
                                                  query + " mentioned in the provided text is"
                                            : "\nWhat are all the special magic numbers for " + query +
                                                  " mentioned in the provided text? The special magic numbers for " +
                                                  query + " mentioned in the provided text are";
      s.prompt = build_prompt(rng, niah_prefix, std::move(needles), suffix);
      default_new_tokens = 16 * asked;
      break;
    }
    case SyntheticKind::VariableTracking: {
      std::vector<std::string> vars;
      while (static_cast<int>(vars.size()) < options_.hops + 1) {
        std::string v = ValueRanges::variable(rng, split);
        if (std::find(vars.begin(), vars.end(), v) == vars.end()) vars.push_back(std::move(v));
      }
      const std::string value = ValueRanges::number(rng, 5, split);
      std::vector<double> depths;
      for (size_t i = 0; i < vars.size(); ++i) depths.push_back(uniform01(rng));
      std::sort(depths.begin(), depths.end());  // the chain reads in order
      std::vector<Needle> needles;
      needles.push_back({"VAR " + vars[0] + " = " + value + ".", depths[0]});
      for (size_t i = 1; i < vars.size(); ++i)
        needles.push_back({"VAR " + vars[i] + " = VAR " + vars[i - 1] + ".", depths[i]});
      // RULER's template, its "assgined" typo included.
      s.prompt =
          build_prompt(rng, "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n",
                       std::move(needles),
                       "\nQuestion: Find all variables that are assigned the value " + value +
                           " in the text above. Answer: According to the chain(s) of variable assignment in "
                           "the text above, " +
                           std::to_string(vars.size()) + " variables are assgined the value " + value + ", they are: ");
      s.answers = vars;
      default_new_tokens = 30;
      break;
    }
  }
  s.max_new_tokens = options_.max_new_tokens > 0 ? options_.max_new_tokens : default_new_tokens;
  return s;
}

Task SyntheticGenerator::task(int samples) const {
  Task t;
  t.name = synthetic_kind_name(options_.kind);
  for (int i = 0; i < samples; ++i) t.samples.push_back(sample(static_cast<uint64_t>(i)));
  return t;
}

}  // namespace nammkit
