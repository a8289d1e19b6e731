#include "tools/nammkit/tradeoff_plot.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "tools/nammkit/svg_chart.h"

namespace nammkit::cli {
namespace {

struct TradeoffPoint {
  std::string label;  // the eval row's policy ("full", "namm(policy.nammp)", "h2o:0.2500")
  double cache_fraction, normalised;
};

double number_field(const nlohmann::json& row, const std::string& where, const char* key, double lo, double hi) {
  if (!row.contains(key) || !row[key].is_number()) fail(where, std::string(key) + ": expected a number");
  const double v = row[key].get<double>();
  // The fraction can pass 1 a little (a policy that keeps what a full cache would also hold plus
  // what arrived since its last update is still full); more means the file is not an eval report.
  if (!std::isfinite(v) || v < lo || v > hi)
    fail(where, std::string(key) + ": expected a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

std::vector<TradeoffPoint> read_report(const std::string& file) {
  const nlohmann::json j = nlohmann::json::parse(read_file(file), nullptr, false);
  if (j.is_discarded()) fail(file, "not valid JSON (expected a `nammkit eval --json` report)");
  if (!j.is_object() || !j.contains("rows") || !j["rows"].is_array() || j["rows"].empty())
    fail(file, "rows: expected a non-empty array (a `nammkit eval --json` report)");
  std::vector<TradeoffPoint> points;
  for (size_t i = 0; i < j["rows"].size(); ++i) {
    const nlohmann::json& row = j["rows"][i];
    const std::string where = file + ": rows[" + std::to_string(i) + "]";
    if (!row.is_object() || !row.contains("policy") || !row["policy"].is_string())
      fail(where, "policy: expected a string");
    points.push_back({row["policy"].get<std::string>(), number_field(row, where, "cache_fraction", 0, 1.5),
                      number_field(row, where, "mean_normalised", -10, 10)});
  }
  return points;
}

// The line a row belongs to: the part before the budget ("h2o:0.25" -> "h2o",
// "namm(policy.nammp):0.25" -> "namm(policy.nammp)"); a row without one ("full") is its own.
std::string series_name(const std::string& label) { return label.substr(0, label.find(':')); }

}  // namespace

std::string render_tradeoff_svg(const std::vector<std::string>& report_files, const std::string& title) {
  if (report_files.empty()) fail("nammkit plot --evals", "no eval report given");
  // Series in order of first appearance; within one, points sorted by cache with repeats (the same
  // policy in several reports) dropped.
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::pair<double, double>>> by_series;
  for (const std::string& file : report_files)
    for (const TradeoffPoint& p : read_report(file)) {
      const std::string name = series_name(p.label);
      if (!by_series.count(name)) order.push_back(name);
      by_series[name].emplace_back(p.cache_fraction, p.normalised);
    }
  LineChart chart;
  chart.title = title;
  chart.x_label = "mean cache (fraction of the full cache)";
  chart.y_label = "score / full-cache score";
  chart.x_lo = 0;
  chart.x_hi = 1.05;
  double y_hi = 1.05, y_lo = 0;
  for (const std::string& name : order) {
    auto& pts = by_series[name];
    std::sort(pts.begin(), pts.end());
    pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
    for (const auto& [x, y] : pts) {
      y_hi = std::max(y_hi, std::ceil(y * 10) / 10);
      y_lo = std::min(y_lo, std::floor(y * 10) / 10);
    }
    ChartSeries s{name, series_color(chart.series.size()), pts};
    s.dots = true;
    if (pts.size() == 1) s.width = 0;  // one point (the full cache, a policy at one budget): a dot only
    chart.series.push_back(std::move(s));
  }
  chart.y_lo = y_lo;
  chart.y_hi = y_hi;
  return render_line_chart(chart);
}

}  // namespace nammkit::cli
