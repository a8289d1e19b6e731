// libFuzzer target: the task-file formats of tasks/. The first input byte chooses what the rest is:
//   0: a LongBench JSONL file (load_longbench_records);
//   1: a bAbI text file (parse_babi);
//   2, 3, 4: a RULER niah / lost-in-the-middle kv retrieval / LongEval lines JSONL file
//      (make_shipped_task);
//   5: a task-set JSON file (load_task_set; no tokenizer, so generated tasks must fail cleanly).
#include "tasks/longbench.h"
#include "tasks/registry.h"
#include "tasks/shipped_sets.h"
#include "tests/fuzz/fuzz_common.h"

using namespace nammkit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::Split input = fuzz::split_selector(data, size);
  const uint8_t selector = input.selector;
  const std::string_view rest = input.rest;  // not a structured binding: clang 14 cannot capture those
  switch (selector % 6) {
    case 0: {
      const std::string path = fuzz::write_scratch("records.jsonl", rest);
      fuzz::expect_ok_or_error([&] { (void)load_longbench_records(path); });
      break;
    }
    case 1: fuzz::expect_ok_or_error([&] { (void)parse_babi(std::string(rest), "fuzz.txt"); }); break;
    case 2:
    case 3:
    case 4: {
      const ShippedSet sets[] = {ShippedSet::RulerNiah, ShippedSet::KvRetrieval, ShippedSet::LongEvalLines};
      ShippedSetOptions options;
      options.set = sets[selector % 6 - 2];
      options.file = fuzz::write_scratch("set.jsonl", rest);
      options.samples = 2;
      fuzz::expect_ok_or_error([&] { (void)make_shipped_task(options); });
      break;
    }
    default: {
      const std::string path = fuzz::write_scratch("tasks.json", rest);
      TaskContext context;
      context.base_dir = fuzz::scratch_dir();
      context.shared_dir = fuzz::scratch_dir();  // no corpora, no LongBench config: those fail cleanly
      fuzz::expect_ok_or_error([&] { (void)load_task_set(path, context); });
      break;
    }
  }
  return 0;
}
