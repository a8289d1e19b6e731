#include "evolution/interrupt.h"

#include <atomic>
#include <csignal>

namespace nammkit::evo {

namespace {

// Lock-free atomics are async-signal-safe.
std::atomic<bool> g_interrupt{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_sigint(int) {
  if (g_interrupt.exchange(true)) {  // second Ctrl-C: die the default way
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
}

}  // namespace

void install_sigint_handler() { std::signal(SIGINT, on_sigint); }
bool interrupt_requested() { return g_interrupt.load(); }
void request_interrupt() { g_interrupt = true; }
void clear_interrupt() { g_interrupt = false; }

}  // namespace nammkit::evo
