// Errors of nammkit: one exception type whose message is the one line a user sees.
//
// Convention: "<file or object>: <field>: <problem>", e.g.
//   "models/x.gguf: tensor blk.0.attn_q.weight: unsupported type Q4_K".
// The CLI prints the message and exits non-zero; nothing in the library calls exit().
#pragma once
#include <stdexcept>
#include <string>

namespace nammkit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error("<where>: <what>").
[[noreturn]] inline void fail(const std::string& where, const std::string& what) { throw Error(where + ": " + what); }

}  // namespace nammkit
