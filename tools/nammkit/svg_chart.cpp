#include "tools/nammkit/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "core/svg_text.h"
#include "evolution/fitness_plot.h"

namespace nammkit::cli {
namespace {

constexpr double kWidth = 900, kLeft = 80, kRight = 190, kTop = 44, kHeight = 360, kBottom = 70;
constexpr double kPlotWidth = kWidth - kLeft - kRight;

// Maps data to pixels inside the plot rectangle.
struct Axes {
  double x_lo, x_hi, y_lo, y_hi;
  double px(double x) const { return kLeft + (x - x_lo) / (x_hi - x_lo) * kPlotWidth; }
  double py(double y) const { return kTop + kHeight - (y - y_lo) / (y_hi - y_lo) * kHeight; }
};

// The document, its title, the plot frame, the y grid with its labels and the axis titles.
void open_frame(std::ostringstream& svg, const std::string& title, const std::string& x_label,
                const std::string& y_label, const Axes& axes, const std::vector<double>& y_ticks) {
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kTop + kHeight + kBottom
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  svg << "<text x=\"" << kLeft + kPlotWidth / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
      << xml_escape(title) << "</text>\n";
  for (double t : y_ticks) {
    if (t < axes.y_lo || t > axes.y_hi) continue;
    svg << "<line x1=\"" << kLeft - 5 << "\" y1=\"" << svg_number(axes.py(t)) << "\" x2=\"" << kLeft + kPlotWidth
        << "\" y2=\"" << svg_number(axes.py(t)) << "\" stroke=\"#ddd\"/>\n<text x=\"" << kLeft - 8 << "\" y=\""
        << svg_number(axes.py(t) + 4) << "\" text-anchor=\"end\">" << svg_number(t) << "</text>\n";
  }
  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kPlotWidth << "\" height=\"" << kHeight
      << "\" fill=\"none\" stroke=\"#000\"/>\n";
  svg << "<text transform=\"translate(" << kLeft - 56 << "," << kTop + kHeight / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(y_label) << "</text>\n";
  if (!x_label.empty())
    svg << "<text x=\"" << kLeft + kPlotWidth / 2 << "\" y=\"" << kTop + kHeight + 56 << "\" text-anchor=\"middle\">"
        << xml_escape(x_label) << "</text>\n";
}

std::pair<double, double> data_range(const std::vector<ChartSeries>& series, bool x) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const ChartSeries& s : series)
    for (const auto& [px, py] : s.points) {
      lo = std::min(lo, x ? px : py);
      hi = std::max(hi, x ? px : py);
    }
  if (lo == hi) hi = lo + 1;  // a flat series still gets a visible range
  return {lo, hi};
}

void draw_series(std::ostringstream& svg, const ChartSeries& s, const Axes& axes, double& legend_y) {
  std::string points;
  for (const auto& [x, y] : s.points) points += svg_number(axes.px(x)) + "," + svg_number(axes.py(y)) + " ";
  const std::string dash = s.dashed ? " stroke-dasharray=\"5,4\"" : "";
  svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << svg_number(s.width) << "\"" << dash
      << " points=\"" << points << "\"/>\n";
  if (s.dots)
    for (const auto& [x, y] : s.points)
      svg << "<circle cx=\"" << svg_number(axes.px(x)) << "\" cy=\"" << svg_number(axes.py(y)) << "\" r=\"3.5\" fill=\""
          << s.color << "\"/>\n";
  if (s.label.empty()) return;
  const double lx = kLeft + kPlotWidth + 12;
  if (s.width > 0)  // a series of width 0 is points only: its legend entry is a dot
    svg << "<line x1=\"" << lx << "\" y1=\"" << legend_y << "\" x2=\"" << lx + 24 << "\" y2=\"" << legend_y
        << "\" stroke=\"" << s.color << "\" stroke-width=\"" << svg_number(std::max(2.0, s.width)) << "\"" << dash
        << "/>\n";
  if (s.dots)
    svg << "<circle cx=\"" << lx + 12 << "\" cy=\"" << legend_y << "\" r=\"3.5\" fill=\"" << s.color << "\"/>\n";
  svg << "<text x=\"" << lx + 30 << "\" y=\"" << legend_y + 4 << "\">" << xml_escape(s.label) << "</text>\n";
  legend_y += 18;
}

void draw_marker(std::ostringstream& svg, double x, double width, double y) {
  svg << "<line x1=\"" << svg_number(x - 4) << "\" y1=\"" << svg_number(y) << "\" x2=\"" << svg_number(x + width + 4)
      << "\" y2=\"" << svg_number(y) << "\" stroke=\"#000\" stroke-width=\"2.5\"/>\n";
}

void draw_marker_legend(std::ostringstream& svg, const std::string& label) {
  const double lx = kLeft + kPlotWidth + 12, ly = kTop + 14;
  svg << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly
      << "\" stroke=\"#000\" stroke-width=\"2.5\"/>\n<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">"
      << xml_escape(label) << "</text>\n";
}

// Bar i: the bar, its marker tick, its note above both and its label below the axis.
void draw_bar(std::ostringstream& svg, const BarChart& chart, const Axes& axes, size_t i, double slot) {
  const double x = axes.px(double(i)) + slot * 0.15, top = axes.py(std::clamp(chart.values[i], 0.0, axes.y_hi));
  svg << "<rect x=\"" << svg_number(x) << "\" y=\"" << svg_number(top) << "\" width=\"" << svg_number(slot * 0.7)
      << "\" height=\"" << svg_number(kTop + kHeight - top) << "\" fill=\"" << series_color(i) << "\"/>\n";
  double highest = top;
  if (i < chart.markers.size()) {
    const double y = axes.py(std::clamp(chart.markers[i], 0.0, axes.y_hi));
    draw_marker(svg, x, slot * 0.7, y);
    highest = std::min(highest, y);
  }
  const double centre = axes.px(double(i) + 0.5);
  if (i < chart.notes.size())
    svg << "<text x=\"" << svg_number(centre) << "\" y=\"" << svg_number(highest - 6) << "\" text-anchor=\"middle\">"
        << xml_escape(chart.notes[i]) << "</text>\n";
  svg << "<text x=\"" << svg_number(centre) << "\" y=\"" << kTop + kHeight + 18 << "\" text-anchor=\"middle\">"
      << xml_escape(chart.labels[i]) << "</text>\n";
}

}  // namespace

const char* series_color(size_t i) {
  static const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kPalette[i % 10];
}

std::string render_line_chart(const LineChart& chart) {
  const bool any =
      std::any_of(chart.series.begin(), chart.series.end(), [](const ChartSeries& s) { return !s.points.empty(); });
  if (!any) fail(chart.title, "chart: no points to draw");
  auto [x_lo, x_hi] = chart.x_lo < chart.x_hi ? std::pair{chart.x_lo, chart.x_hi} : data_range(chart.series, true);
  auto [y_lo, y_hi] = chart.y_lo < chart.y_hi ? std::pair{chart.y_lo, chart.y_hi} : data_range(chart.series, false);
  const std::vector<double> y_ticks = evo::nice_ticks(y_lo, y_hi, 6);
  if (!(chart.y_lo < chart.y_hi)) {
    y_lo = std::min(y_lo, y_ticks.front());
    y_hi = std::max(y_hi, y_ticks.back());
  }
  const Axes axes{x_lo, x_hi, y_lo, y_hi};
  std::ostringstream svg;
  open_frame(svg, chart.title, chart.x_label, chart.y_label, axes, y_ticks);
  for (double t : evo::nice_ticks(x_lo, x_hi, 8)) {
    if (t < x_lo || t > x_hi) continue;
    svg << "<line x1=\"" << svg_number(axes.px(t)) << "\" y1=\"" << kTop + kHeight << "\" x2=\""
        << svg_number(axes.px(t)) << "\" y2=\"" << kTop + kHeight + 5 << "\" stroke=\"#000\"/>\n<text x=\""
        << svg_number(axes.px(t)) << "\" y=\"" << kTop + kHeight + 18 << "\" text-anchor=\"middle\">" << svg_number(t)
        << "</text>\n";
  }
  double legend_y = kTop + 14;
  for (const ChartSeries& s : chart.series) draw_series(svg, s, axes, legend_y);
  svg << "</svg>\n";
  return svg.str();
}

std::string render_bar_chart(const BarChart& chart) {
  if (chart.values.empty() || chart.labels.size() != chart.values.size())
    fail(chart.title, "chart: no bars, or labels and values differ in number");
  const Axes axes{0, double(chart.values.size()), 0, chart.y_hi > 0 ? chart.y_hi : 1};
  std::ostringstream svg;
  open_frame(svg, chart.title, "", chart.y_label, axes, evo::nice_ticks(axes.y_lo, axes.y_hi, 5));
  const double slot = kPlotWidth / double(chart.values.size());
  for (size_t i = 0; i < chart.values.size(); ++i) draw_bar(svg, chart, axes, i, slot);
  if (!chart.markers.empty() && !chart.marker_label.empty()) draw_marker_legend(svg, chart.marker_label);
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace nammkit::cli
