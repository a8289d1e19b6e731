// nammkit plot --evals: eval reports -> one line per baseline kind, one point per policy.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/file_io.h"
#include "tools/nammkit/tradeoff_plot.h"

namespace {

using nammkit::cli::render_tradeoff_svg;

std::string write_report(const std::string& name, const nlohmann::json& rows) {
  const std::string path = ::testing::TempDir() + name;
  nammkit::write_file_atomic(path, nlohmann::json{{"model", "m.gguf"}, {"rows", rows}}.dump());
  return path;
}

nlohmann::json row(const std::string& policy, double fraction, double normalised) {
  return {{"policy", policy}, {"cache_fraction", fraction}, {"mean_normalised", normalised}, {"mean_cache", 1.0}};
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(TradeoffPlot, OneLinePerBaselineKindAndOnePointPerPolicy) {
  const std::string a = write_report("tradeoff_a.json", {row("full", 1.0, 1.0), row("namm(policy.nammp)", 0.2, 0.9),
                                                         row("h2o:0.2000", 0.21, 0.7), row("streaming:0.2", 0.2, 0.4)});
  const std::string b = write_report("tradeoff_b.json", {row("full", 1.0, 1.0), row("namm(policy.nammp)", 0.2, 0.9),
                                                         row("h2o:0.5", 0.5, 0.95), row("streaming:0.5", 0.5, 0.6)});
  const std::string svg = render_tradeoff_svg({a, b}, "testbed");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  // Legend entries: full, the policy, and one per baseline kind (not per budget).
  for (const char* label : {">full<", ">namm(policy.nammp)<", ">h2o<", ">streaming<"})
    EXPECT_EQ(count(svg, label), 1u) << label;
  EXPECT_EQ(count(svg, "h2o:"), 0u);
  // A dot per distinct point (the repeated full and policy rows are drawn once each) and per legend entry.
  EXPECT_EQ(count(svg, "<circle"), (1u + 1u + 2u + 2u) + 4u);
  // Single points (full, the policy at one cache size) draw no line.
  EXPECT_EQ(count(svg, "stroke-width=\"0\""), 2u);
  // The policy at a fixed budget joins its own line, whichever report comes first.
  const std::string c =
      write_report("tradeoff_c.json", {row("full", 1.0, 1.0), row("namm(policy.nammp):0.5", 0.5, 0.6)});
  for (const auto& files : {std::vector<std::string>{c, a}, std::vector<std::string>{a, c}}) {
    const std::string both = render_tradeoff_svg(files, "testbed");
    EXPECT_EQ(count(both, ">namm(policy.nammp)<"), 1u);
    // Dots only: full, h2o and streaming (one budget each in these two reports); not the policy.
    EXPECT_EQ(count(both, "stroke-width=\"0\""), 3u);
  }
}

TEST(TradeoffPlot, BadReportsNameTheFileAndField) {
  const std::string missing = write_report("tradeoff_missing.json", {{{"policy", "full"}, {"cache_fraction", 1.0}}});
  try {
    render_tradeoff_svg({missing}, "t");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("tradeoff_missing.json: rows[0]: mean_normalised"), std::string::npos)
        << e.what();
  }
  const std::string nan_row = ::testing::TempDir() + "tradeoff_nan.json";
  nammkit::write_file_atomic(nan_row, R"({"rows": [{"policy": "full", "cache_fraction": 7, "mean_normalised": 1}]})");
  EXPECT_THROW(render_tradeoff_svg({nan_row}, "t"), std::exception);
  const std::string not_json = ::testing::TempDir() + "tradeoff_bad.json";
  nammkit::write_file_atomic(not_json, "{\"rows\": [");
  EXPECT_THROW(render_tradeoff_svg({not_json}, "t"), std::exception);
  EXPECT_THROW(render_tradeoff_svg({::testing::TempDir() + "no_such_report.json"}, "t"), std::exception);
}

}  // namespace
