// Ctrl-C for long runs: the first SIGINT only sets a flag that the trainer (between generations) and
// the population evaluator (between evaluations) poll, so the run ends with a consistent checkpoint.
// A second SIGINT restores the default action, so pressing Ctrl-C twice still kills a stuck process.
#pragma once

namespace nammkit::evo {

void install_sigint_handler();  // idempotent
bool interrupt_requested();
void request_interrupt();  // what the handler does; also for tests
void clear_interrupt();

}  // namespace nammkit::evo
