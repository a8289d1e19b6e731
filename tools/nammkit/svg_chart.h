// Two plain SVG charts, hand-written like evolution/fitness_plot.h (same "nice" ticks): a line chart
// (several labelled series of (x, y) points) and a bar chart (one labelled bar per category). Used by
// `nammkit analyze`; nothing here knows about policies.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace nammkit::cli {

struct ChartSeries {
  std::string label;  // in the legend; "" = no legend entry
  std::string color;  // any SVG colour; series_color(i) gives a palette
  std::vector<std::pair<double, double>> points;
  double width = 1.5;
  bool dashed = false;
  bool dots = false;  // also a dot at every point (and in the legend); width 0 with dots: points only
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
  // A fixed y range when lo < hi (e.g. 0 to 1 for fractions); else the data's, widened to whole ticks.
  double y_lo = 0, y_hi = 0;
  // A fixed x range when lo < hi; else the data's.
  double x_lo = 0, x_hi = 0;
};

struct BarChart {
  std::string title, y_label;
  std::vector<std::string> labels;  // under each bar
  std::vector<double> values;
  std::vector<std::string> notes;  // above each bar (e.g. the value and a count); may be empty
  double y_hi = 1;                 // the top of the y axis (the bottom is 0)
  // Optional: one value per bar drawn as a black tick across it (a reference level), named in the legend.
  std::vector<double> markers;
  std::string marker_label;
};

// Error ("<title>: ...") when there is nothing to draw.
std::string render_line_chart(const LineChart& chart);
std::string render_bar_chart(const BarChart& chart);

// The i-th colour of a ten-colour palette (matplotlib's tab10), cycling.
const char* series_color(size_t i);

}  // namespace nammkit::cli
