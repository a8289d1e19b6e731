// The memory/quality trade-off of `nammkit eval` results as one SVG: the mean normalised score (the
// score as a fraction of the full cache's) against the mean cache as a fraction of the full cache's.
// Rows come from one or more eval reports (`nammkit eval --json F`); the rows of one policy, whatever
// their budgets ("h2o:0.25", "h2o:0.5" -> "h2o"; "namm(p.nammp)", "namm(p.nammp):0.25" -> "namm(p.nammp)"),
// become one line through their points, and a policy with a single point (the full cache) a dot.
#pragma once
#include <string>
#include <vector>

namespace nammkit::cli {

// `report_files`: eval JSON files ({"rows": [{"policy", "mean_normalised", "cache_fraction"}, ...]}).
// Errors name the file and the row ("F: rows[2].cache_fraction: expected a number in [0, 1.5]").
std::string render_tradeoff_svg(const std::vector<std::string>& report_files, const std::string& title);

}  // namespace nammkit::cli
