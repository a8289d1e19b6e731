#include "evolution/fitness_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "core/svg_text.h"

namespace nammkit::evo {

namespace {

constexpr double kWidth = 900, kLeft = 80, kRight = 160, kTop = 40;
constexpr double kPanelHeight = 260, kPanelGap = 60, kBottom = 50;

struct Series {
  std::string label;
  std::string color;
  std::function<double(const GenerationRecord&)> value;
  bool dashed = false;
};

struct Panel {
  double top = 0;  // y of the panel's top edge
  std::string y_label;
  std::vector<Series> series;
};

std::string fmt(double v) { return svg_number(v); }

bool has_values(const std::vector<GenerationRecord>& records, const Series& s) {
  return std::any_of(records.begin(), records.end(),
                     [&](const GenerationRecord& r) { return std::isfinite(s.value(r)); });
}

void draw_panel(std::ostringstream& svg, const std::vector<GenerationRecord>& records, const Panel& panel, double x_lo,
                double x_hi, bool x_label) {
  const double plot_w = kWidth - kLeft - kRight;
  double y_lo = std::numeric_limits<double>::infinity(), y_hi = -y_lo;
  for (const Series& s : panel.series)
    for (const GenerationRecord& r : records)
      if (double v = s.value(r); std::isfinite(v)) {
        y_lo = std::min(y_lo, v);
        y_hi = std::max(y_hi, v);
      }
  if (y_lo == y_hi) {  // a flat curve still gets a visible range
    const double pad = y_lo == 0 ? 1.0 : std::abs(y_lo) * 0.05;
    y_lo -= pad;
    y_hi += pad;
  }
  const std::vector<double> y_ticks = nice_ticks(y_lo, y_hi, 6);
  y_lo = std::min(y_lo, y_ticks.front());
  y_hi = std::max(y_hi, y_ticks.back());
  auto px = [&](double x) { return kLeft + (x - x_lo) / (x_hi - x_lo) * plot_w; };
  auto py = [&](double y) { return panel.top + kPanelHeight - (y - y_lo) / (y_hi - y_lo) * kPanelHeight; };

  svg << "<rect x=\"" << kLeft << "\" y=\"" << panel.top << "\" width=\"" << plot_w << "\" height=\"" << kPanelHeight
      << "\" fill=\"none\" stroke=\"#000\"/>\n";
  for (double t : y_ticks) {
    svg << "<line x1=\"" << kLeft - 5 << "\" y1=\"" << fmt(py(t)) << "\" x2=\"" << kLeft + plot_w << "\" y2=\""
        << fmt(py(t)) << "\" stroke=\"#ddd\"/>\n";
    svg << "<text x=\"" << kLeft - 8 << "\" y=\"" << fmt(py(t) + 4) << "\" text-anchor=\"end\">" << fmt(t)
        << "</text>\n";
  }
  for (double t : nice_ticks(x_lo, x_hi, 8)) {
    if (t < x_lo || t > x_hi) continue;
    svg << "<line x1=\"" << fmt(px(t)) << "\" y1=\"" << panel.top + kPanelHeight << "\" x2=\"" << fmt(px(t))
        << "\" y2=\"" << panel.top + kPanelHeight + 5 << "\" stroke=\"#000\"/>\n";
    svg << "<text x=\"" << fmt(px(t)) << "\" y=\"" << panel.top + kPanelHeight + 18 << "\" text-anchor=\"middle\">"
        << fmt(t) << "</text>\n";
  }
  // Stage boundaries.
  for (size_t i = 1; i < records.size(); ++i)
    if (records[i].stage != records[i - 1].stage) {
      const double x = px(0.5 * static_cast<double>(records[i].generation + records[i - 1].generation));
      svg << "<line x1=\"" << fmt(x) << "\" y1=\"" << panel.top << "\" x2=\"" << fmt(x) << "\" y2=\""
          << panel.top + kPanelHeight << "\" stroke=\"#888\" stroke-dasharray=\"6,4\"/>\n";
    }
  svg << "<text transform=\"translate(" << kLeft - 60 << "," << panel.top + kPanelHeight / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(panel.y_label) << "</text>\n";
  if (x_label)
    svg << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << panel.top + kPanelHeight + 38
        << "\" text-anchor=\"middle\">generation</text>\n";

  double legend_y = panel.top + 14;
  for (const Series& s : panel.series) {
    // One polyline per run of finite values, so gaps (not measured) stay gaps.
    std::string points;
    auto flush = [&]() {
      if (!points.empty())
        svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.5\""
            << (s.dashed ? " stroke-dasharray=\"4,3\"" : "") << " points=\"" << points << "\"/>\n";
      points.clear();
    };
    for (const GenerationRecord& r : records) {
      const double v = s.value(r);
      if (!std::isfinite(v)) {
        flush();
        continue;
      }
      points += fmt(px(static_cast<double>(r.generation))) + "," + fmt(py(v)) + " ";
    }
    flush();
    const double lx = kLeft + plot_w + 12;
    svg << "<line x1=\"" << lx << "\" y1=\"" << legend_y << "\" x2=\"" << lx + 24 << "\" y2=\"" << legend_y
        << "\" stroke=\"" << s.color << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"4,3\"" : "")
        << "/>\n";
    svg << "<text x=\"" << lx + 30 << "\" y=\"" << legend_y + 4 << "\">" << xml_escape(s.label) << "</text>\n";
    legend_y += 18;
  }
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::floor(lo / step) * step; t <= hi + step * 0.5 && ticks.size() < 100; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::string render_fitness_svg(const std::vector<GenerationRecord>& records, const std::string& title) {
  if (records.empty()) fail(title, "log: no generations to plot");
  Panel fitness{kTop, "fitness", {}};
  fitness.series.push_back({"best", "#d62728", [](const GenerationRecord& r) { return r.best_fitness; }});
  fitness.series.push_back({"population mean", "#1f77b4", [](const GenerationRecord& r) { return r.mean_fitness; }});
  Series mean_eval{"CMA-ES mean", "#2ca02c", [](const GenerationRecord& r) { return r.mean_eval_fitness; }, true};
  if (has_values(records, mean_eval)) fitness.series.push_back(mean_eval);
  Series cache{"mean cache size", "#9467bd", [](const GenerationRecord& r) { return r.mean_cache_size; }};
  const bool with_cache = has_values(records, cache);

  double x_lo = static_cast<double>(records.front().generation), x_hi = x_lo;
  for (const GenerationRecord& r : records) {
    x_lo = std::min(x_lo, static_cast<double>(r.generation));
    x_hi = std::max(x_hi, static_cast<double>(r.generation));
  }
  if (x_hi == x_lo) x_hi = x_lo + 1;

  const double height = kTop + kPanelHeight + (with_cache ? kPanelGap + kPanelHeight : 0) + kBottom;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  svg << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title)
      << "</text>\n";
  draw_panel(svg, records, fitness, x_lo, x_hi, !with_cache);
  if (with_cache) {
    Panel cache_panel{kTop + kPanelHeight + kPanelGap, "mean cache size (tokens)", {cache}};
    draw_panel(svg, records, cache_panel, x_lo, x_hi, true);
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace nammkit::evo
