// The memory/quality trade-off of `nammkit eval` results as one SVG: the mean normalised score (the
// score as a fraction of the full cache's) against the mean cache as a fraction of the full cache's.
// Rows come from one or more eval reports (`nammkit eval --json F`); every baseline kind ("h2o:0.25",
// "streaming:0.1234" -> "h2o", "streaming") becomes one line through its budgets, and every other row
// (the full cache, each evolved policy) a labelled point.
#pragma once
#include <string>
#include <vector>

namespace nammkit::cli {

// `report_files`: eval JSON files ({"rows": [{"policy", "mean_normalised", "cache_fraction"}, ...]}).
// Errors name the file and the row ("F: rows[2].cache_fraction: expected a number in [0, 1.5]").
std::string render_tradeoff_svg(const std::vector<std::string>& report_files, const std::string& title);

}  // namespace nammkit::cli
