// `nammkit bank`: inspect and check Memory3 memory-bank files (namm/memory_bank.h).
//
//   nammkit bank show BANK      the index: model, selector, k, layers, prefix, chunks
//   nammkit bank verify BANK    every check of the reader plus every chunk's tensor CRC-32
//                               (opening a bank checks only the index's); "ok" or a one-line error
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "namm/memory_bank.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"

namespace nammkit::cli {
namespace {

constexpr const char* kUsage =
    "usage: nammkit bank show BANK\n"
    "       nammkit bank verify BANK\n";

std::string join_ints(const google::protobuf::RepeatedField<int32_t>& v) {
  std::string s;
  for (int x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);  // appended piecewise: GCC 12 warns (-Wrestrict) on "," + std::to_string(...)
  }
  return s;
}

void show(const MemoryBank& b, const std::string& path) {
  const bank::BankIndex& x = b.index();
  const bank::BankModel& m = x.model();
  std::printf("file:            %s\n", path.c_str());
  std::printf("model:           %s (%d layers, %d heads, %d KV heads, head_dim %d, vocab %d)\n", m.name().c_str(),
              m.n_layers(), m.n_heads(), m.n_kv_heads(), m.head_dim(), m.vocab_size());
  std::printf("selector:        %s (attention %s, GQA %s, seed %llu)\n", x.selector().c_str(), x.attn_mode().c_str(),
              x.gqa_aggregation().c_str(), static_cast<unsigned long long>(x.seed()));
  std::printf("policy sha256:   %s\n", x.policy_sha256().empty() ? "(none)" : x.policy_sha256().c_str());
  std::printf("k:               %d of at most %d chunk tokens\n", x.k(), x.max_chunk_tokens());
  std::printf("memory layers:   %s\n", join_ints(x.layers()).c_str());
  std::printf("prefix:          \"%s\" (%d tokens)\n", x.prefix_text().c_str(), x.prefix_tokens_size());
  std::printf("chunks:          %d, %llu bytes each\n", b.n_chunks(), static_cast<unsigned long long>(x.chunk_bytes()));
  for (int c = 0; c < b.n_chunks(); ++c)
    std::printf("  %-20s %3d tokens  offset %llu\n", x.chunks(c).id().c_str(), x.chunks(c).n_tokens(),
                static_cast<unsigned long long>(x.chunks(c).offset()));
}

int cmd_bank(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::fputs(kUsage, argv.empty() ? stderr : stdout);
    return argv.empty() ? 2 : 0;
  }
  const std::string sub = argv[0];
  if (sub != "show" && sub != "verify") fail("nammkit bank", "unknown sub-command '" + sub + "' (show, verify)");
  const Args args("bank " + sub, std::vector<std::string>(argv.begin() + 1, argv.end()), {});
  if (args.positional().size() != 1) fail("nammkit bank " + sub, "expected one bank file");
  const std::string path = args.positional()[0];
  const MemoryBank bank = MemoryBank::open(path);  // header, index CRC, every field and offset
  if (sub == "show") {
    show(bank, path);
    return 0;
  }
  for (int c = 0; c < bank.n_chunks(); ++c) bank.verify_chunk(c);
  std::printf("%s: ok (%d chunks, every tensor block matches its CRC-32)\n", path.c_str(), bank.n_chunks());
  return 0;
}

}  // namespace

NAMMKIT_COMMAND("bank", "show or verify a Memory3 memory bank (nammkit bank show|verify BANK)", cmd_bank);

}  // namespace nammkit::cli
