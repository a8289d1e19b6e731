// A hand-written SVG of a run's log: top panel best / mean population fitness (and the evaluation of
// the CMA-ES mean when logged) per generation, bottom panel the mean cache size (when logged), both
// with ticked, labelled axes and dashed lines at stage boundaries.
#pragma once
#include <string>
#include <vector>

#include "evolution/metrics_log.h"

namespace nammkit::evo {

// The SVG document; throws Error("<where>: ...") when there are no records.
std::string render_fitness_svg(const std::vector<GenerationRecord>& records, const std::string& title);

// "Nice" tick values covering [lo, hi] (1, 2 or 5 times a power of ten), about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target);

}  // namespace nammkit::evo
