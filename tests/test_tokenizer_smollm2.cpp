// SmolLM2-135M-Instruct's tokenizer (GGUF "gpt2" + pre "smollm", read with load_gguf_tokenizer) against
// Hugging Face `tokenizers` (tests/fixtures/smollm2_*_cases.json, written by
// tools/reference/smollm2_tokenizer_cases.py), the "smollm" pre-split, add_bos_token, and ChatML
// chat templates.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "gpt2_bytes.h"
#include "tests/shared_model.h"
#include "transformer/chat_template.h"
#include "transformer/gguf.h"
#include "transformer/loader.h"
#include "transformer/tokenizer.h"

namespace nammkit {
namespace {

using testing::smollm2_path;

const std::string kFixtures = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures";
const std::string kSmolLMSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

const Tokenizer& smollm2_tokenizer() {
  static const Tokenizer tok = load_gguf_tokenizer(smollm2_path());
  return tok;
}

nlohmann::json read_fixture(const std::string& name) {
  return nlohmann::json::parse(read_file(kFixtures + "/" + name));
}

#define REQUIRE_FIXTURE(name)                 \
  if (!file_exists(kFixtures + "/" + (name))) \
  GTEST_SKIP() << "fixture missing: " << kFixtures << "/" << (name) << " (tools/reference/smollm2_tokenizer_cases.py)"

// "" when equal, else where and how two id sequences first differ.
std::string id_difference(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  if (i == got.size() && i == want.size()) return "";
  auto at = [&](const std::vector<int32_t>& v) { return i < v.size() ? std::to_string(v[i]) : std::string("end"); };
  return "first difference at id " + std::to_string(i) + ": got " + at(got) + ", expected " + at(want) + " (got " +
         std::to_string(got.size()) + " ids, expected " + std::to_string(want.size()) + ")";
}

// ---------------------------------------------------------------------------------------------
// The "smollm" pre-split: HF's Sequence[Digits(individual_digits=true), ByteLevel(use_regex)]. The
// expected chunks were printed by tokenizers 0.23.3's pre_tokenize_str (Ġ = space, Ċ = newline).

using Chunks = std::vector<std::string_view>;

TEST(SmolLMPreSplit, DigitsAreIsolatedBeforeTheGpt2Regex) {
  // Digits run first, so the space before a number is a chunk of its own (gpt2 would give " 42").
  EXPECT_EQ(byte_level_pre_split(" 42", "smollm"), (Chunks{" ", "4", "2"}));
  EXPECT_EQ(byte_level_pre_split(" 42", "gpt2"), (Chunks{" 42"}));
  EXPECT_EQ(byte_level_pre_split("x2024!", "smollm"), (Chunks{"x", "2", "0", "2", "4", "!"}));
  // The stretch before a digit ends there, so its whitespace run keeps its last space ("\s+(?!\S)"
  // sees the end of the stretch): "a  1" -> "a" "  " "1" (gpt2: "a" " " " 1").
  EXPECT_EQ(byte_level_pre_split("a  1", "smollm"), (Chunks{"a", "  ", "1"}));
  EXPECT_EQ(byte_level_pre_split("a   b 3.14  \n 7", "smollm"),
            (Chunks{"a", "  ", " b", " ", "3", ".", "1", "4", "  \n ", "7"}));
  EXPECT_EQ(byte_level_pre_split("Hello world's 123  foo!!\n\nbar", "smollm"),
            (Chunks{"Hello", " world", "'s", " ", "1", "2", "3", " ", " foo", "!!", "\n", "\n", "bar"}));
}

TEST(SmolLMPreSplit, UnicodeNumbersAndContractions) {
  // \p{N} beyond ASCII: superscripts (No), Arabic-Indic digits (Nd), Roman numerals (Nl).
  EXPECT_EQ(byte_level_pre_split("²³ ١٢ Ⅻ", "smollm"), (Chunks{"²", "³", " ", "١", "٢", " ", "Ⅻ"}));
  // GPT-2's contractions are case-sensitive.
  EXPECT_EQ(byte_level_pre_split("HELLO'S we'll", "smollm"), (Chunks{"HELLO", "'", "S", " we", "'ll"}));
  EXPECT_EQ(byte_level_pre_split("", "smollm"), Chunks{});
  EXPECT_EQ(byte_level_pre_split("7", "smollm"), (Chunks{"7"}));
}

using testing::gpt2_char;

// ---------------------------------------------------------------------------------------------
// BOS: a model trained without it never gets one from encode(text, true).

TEST(TokenizerAddBos, EncodeHonoursTheModelsFlag) {
  TokenizerData d;
  d.kind = TokenizerKind::ByteLevelBPE;
  d.pre_tokenizer = "smollm";
  for (int b = 0; b < 256; ++b) d.pieces.push_back(gpt2_char(b));
  d.pieces.push_back("<s>");
  d.bos_id = d.eos_id = 256;
  d.special_ids = {256};
  EXPECT_EQ(Tokenizer(d).encode("", true), (std::vector<int32_t>{256}));
  d.add_bos = false;
  const Tokenizer tok(d);
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_TRUE(tok.encode("", true).empty());
  EXPECT_EQ(tok.encode("ab", true), tok.encode("ab", false));
  EXPECT_EQ(tok.piece_id("<s>"), 256);
  EXPECT_EQ(tok.piece_id("<none>"), -1);
}

TEST(TokenizerAddBos, TinyFixtureGgufsKeepTheirBos) {
  const std::string path = kFixtures + "/tiny_llama_f32.gguf";
  if (!file_exists(path)) GTEST_SKIP() << "fixture missing: " << path;
  // load_gguf_tokenizer and load_model build the same tokenizer (one implementation).
  const Tokenizer tok = load_gguf_tokenizer(path);
  const Model m = load_model(path);
  EXPECT_EQ(tok.data().pieces, m.tokenizer.data().pieces);
  EXPECT_EQ(tok.data().merges, m.tokenizer.data().merges);
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_EQ(tok.encode("Hi", true).front(), 510);
  EXPECT_EQ(tok.data().pre_tokenizer, "llama3");
}

TEST(LoadGgufTokenizer, ErrorsNameTheFile) {
  const std::string path = kFixtures + "/tokenizer_cases.json";  // not a GGUF file
  try {
    load_gguf_tokenizer(path);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// The real tokenizer

TEST(SmolLM2Tokenizer, MetadataFromGguf) {
  REQUIRE_SMOLLM2();
  const Tokenizer& tok = smollm2_tokenizer();
  const TokenizerData& d = tok.data();
  EXPECT_EQ(d.kind, TokenizerKind::ByteLevelBPE);
  EXPECT_EQ(d.pre_tokenizer, "smollm");
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(d.merges.size(), 48900u);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(d.unk_id, 0);
  EXPECT_FALSE(tok.adds_bos()) << "tokenizer.ggml.add_bos_token is false";
  EXPECT_EQ(tok.encode("Hello", true), tok.encode("Hello", false));
  std::vector<int32_t> control(17);
  for (int32_t i = 0; i < 17; ++i) control[i] = i;
  EXPECT_EQ(d.special_ids, control);  // <|endoftext|> .. <empty_output>
  EXPECT_EQ(d.pieces[0], "<|endoftext|>");
  EXPECT_EQ(tok.piece_id("<|im_start|>"), 1);
  EXPECT_EQ(tok.piece_id("<|im_end|>"), 2);
  EXPECT_NE(d.chat_template.find("<|im_start|>"), std::string::npos);
}

TEST(SmolLM2Tokenizer, MatchesHuggingFaceOnTheFixtureTexts) {
  REQUIRE_SMOLLM2();
  REQUIRE_FIXTURE("smollm2_tokenizer_cases.json");
  const Tokenizer& tok = smollm2_tokenizer();
  const nlohmann::json cases = read_fixture("smollm2_tokenizer_cases.json");
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int32_t> ids = c.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok.encode(text, false);
    EXPECT_EQ(id_difference(got, ids), "") << name;
    if (c.value("lossy", false)) {
      // Bytes the vocabulary lacks are dropped (HF's BPE without unk_token), not turned into <unk>.
      EXPECT_NE(tok.decode(ids), text) << name;
      for (int32_t id : got) EXPECT_GT(id, 16) << name << ": control token or <unk> produced";
    } else {
      EXPECT_EQ(tok.decode(ids), text) << name;
    }
  }
}

TEST(SmolLM2Tokenizer, ControlTokensAreNotParsedFromText) {
  REQUIRE_SMOLLM2();
  const Tokenizer& tok = smollm2_tokenizer();
  const std::vector<int32_t> ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false);
  for (int32_t id : ids) EXPECT_GT(id, 16) << "control token produced from text";
  EXPECT_EQ(tok.decode(ids), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(tok.decode({1, 4093, 2}), "user");  // control tokens decode to nothing
}

// ---------------------------------------------------------------------------------------------
// Chat templates

TEST(ChatTemplate, DefaultSystemMessageFromTheTemplateText) {
  // SmolLM2's template (real newlines inside the Jinja literal).
  const std::string smollm =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
      "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  EXPECT_EQ(chatml_default_system(smollm), kSmolLMSystem);
  // Qwen2-style: "\n" written as an escape, and a first system message taken from the messages.
  const std::string qwen =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
      "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
  EXPECT_EQ(chatml_default_system(qwen), "You are a helpful assistant.");
  // No literal default: the system text comes from a variable.
  EXPECT_EQ(chatml_default_system("{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}"), std::nullopt);
  EXPECT_EQ(chatml_default_system("{{'<|im_start|>' + message['role'] + '\\n' + message['content']}}"), std::nullopt);
}

// A vocabulary of the 256 byte pieces (id = byte, no merges) plus the ChatML tokens.
Tokenizer chatml_tokenizer(const std::string& chat_template) {
  TokenizerData d;
  d.kind = TokenizerKind::ByteLevelBPE;
  d.pre_tokenizer = "gpt2";
  for (int b = 0; b < 256; ++b) d.pieces.push_back(gpt2_char(b));
  d.pieces.push_back("<|im_start|>");   // 256
  d.pieces.push_back("<|im_end|>");     // 257
  d.pieces.push_back("<|endoftext|>");  // 258
  d.special_ids = {256, 257, 258};
  d.bos_id = 258;
  d.eos_id = 258;
  d.chat_template = chat_template;
  return Tokenizer(d);
}

TEST(ChatTemplate, RecognisesChatMLAndRejectsOthers) {
  const Tokenizer tok = chatml_tokenizer("{{'<|im_start|>' + message['role'] + '\\n'}}{{'<|im_end|>'}}");
  const ChatTemplate chat = chat_template_of(tok, "m.gguf");
  EXPECT_EQ(chat.start_id, 256);
  EXPECT_EQ(chat.end_id, 257);
  EXPECT_EQ(chat.stop_ids, (std::vector<int32_t>{257, 258}));
  EXPECT_EQ(chat.default_system, std::nullopt);
  // No default system message: the conversation is taken as given.
  const std::vector<int32_t> ids = apply_chat_template(chat, tok, {{"user", "hi"}}, true);
  std::vector<int32_t> want = {256, 'u', 's', 'e', 'r', '\n', 'h', 'i', 257, '\n', 256};
  for (char c : std::string("assistant\n")) want.push_back(c);
  EXPECT_EQ(ids, want);

  for (const std::string& bad : {std::string(), std::string("{{ bos_token }}<|start_header_id|>user")}) {
    try {
      chat_template_of(chatml_tokenizer(bad), "m.gguf");
      FAIL() << "expected an Error for '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("m.gguf: tokenizer.chat_template: "), std::string::npos) << e.what();
    }
  }
}

TEST(SmolLM2Chat, TemplateIsRecognised) {
  REQUIRE_SMOLLM2();
  const ChatTemplate chat = chat_template_of(smollm2_tokenizer(), smollm2_path());
  EXPECT_EQ(chat.family, ChatTemplate::Family::ChatML);
  EXPECT_EQ(chat.start_id, 1);
  EXPECT_EQ(chat.end_id, 2);
  EXPECT_EQ(chat.stop_ids, (std::vector<int32_t>{2}));  // EOS is <|im_end|> itself
  EXPECT_EQ(chat.default_system, kSmolLMSystem);
}

TEST(SmolLM2Chat, MatchesTransformersApplyChatTemplate) {
  REQUIRE_SMOLLM2();
  REQUIRE_FIXTURE("smollm2_chat_cases.json");
  const Tokenizer& tok = smollm2_tokenizer();
  const ChatTemplate chat = chat_template_of(tok, smollm2_path());
  const nlohmann::json cases = read_fixture("smollm2_chat_cases.json");
  ASSERT_GE(cases.size(), 2u);
  for (const auto& c : cases) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c.at("messages")) {
      messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    }
    const std::vector<int32_t> ids = c.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got =
        apply_chat_template(chat, tok, messages, c.at("add_generation_prompt").get<bool>());
    EXPECT_EQ(id_difference(got, ids), "") << c.at("name").get<std::string>();
  }
}

}  // namespace
}  // namespace nammkit
