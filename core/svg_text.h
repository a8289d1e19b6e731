// The two text pieces every hand-written SVG in nammkit needs: numbers short enough for coordinates and
// labels, and text escaped for XML (tools/nammkit/svg_chart.h, evolution/fitness_plot.cpp).
#pragma once
#include <string>

namespace nammkit {

// `v` with up to 6 significant digits ("%.6g"): 12.5, 0.333333, 1e+06.
std::string svg_number(double v);

// `s` with <, >, & and " replaced by their XML entities.
std::string xml_escape(const std::string& s);

}  // namespace nammkit
