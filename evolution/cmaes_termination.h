// Stop criteria of one CMA-ES run (Hansen's tutorial, appendix B.3; stagnation as in pycma, with its
// guards), evaluated after each tell().
// With IPOP restarts enabled a met criterion triggers a restart; otherwise it is only reported.
#pragma once
#include <string>

#include "evolution/cmaes_constants.h"
#include "evolution/cmaes_settings.h"
#include "evolution/cmaes_state.h"

namespace nammkit::evo {

// The name of the first criterion met ("tolfun", "tolx", "condition", "no_effect_axis",
// "no_effect_coord", "stagnation"), or "" when the run should go on. Fitness is maximised.
std::string check_termination(const CmaesState& state, const CmaesConstants& constants, const CmaesSettings& settings);

}  // namespace nammkit::evo
