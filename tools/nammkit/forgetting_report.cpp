#include "tools/nammkit/forgetting_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tools/nammkit/svg_chart.h"

namespace nammkit::cli {
namespace {

using nlohmann::json;

json runs_json(const std::vector<int32_t>& positions) {
  json runs = json::array();
  for (const auto& [start, end] : position_runs(positions)) runs.push_back({start, end});
  return runs;
}

// Token texts may hold a lone byte of a UTF-8 character: replace it rather than fail.
std::string line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"; }

void sample_lines(std::string& out, int index, const SampleTrace& t) {
  out += line({{"record", "sample"},
               {"sample", index},
               {"task", t.task},
               {"id", t.sample_id},
               {"tokens", t.tokens.size()},
               {"judged", t.judged()},
               {"score", t.score}});
  for (const LayerUpdate& u : t.updates)
    for (size_t h = 0; h < u.kept.size(); ++h)
      out += line({{"record", "update"},
                   {"sample", index},
                   {"step", u.step},
                   {"tokens_seen", u.tokens_seen},
                   {"layer", u.layer},
                   {"head", h},
                   {"before", u.before[h]},
                   {"kept", u.kept[h].size()},
                   {"kept_runs", runs_json(u.kept[h])}});
  for (int l = 0; l < t.n_layers; ++l)
    for (int h = 0; h < t.n_kv_heads; ++h) {
      const std::vector<int32_t> held = t.final_positions(l, h);
      out += line({{"record", "final"},
                   {"sample", index},
                   {"layer", l},
                   {"head", h},
                   {"cached", held.size()},
                   {"kept_runs", runs_json(held)}});
    }
}

void token_lines(std::string& out, int index, const SampleTrace& t) {
  const std::vector<std::vector<int64_t>> evicted = t.evicted_at();
  const size_t pairs = evicted.size(), H = size_t(t.n_kv_heads);
  for (size_t p = 0; p < t.tokens.size(); ++p) {
    json when = json::array();
    size_t held = 0;
    for (size_t l = 0; l < size_t(t.n_layers); ++l) {
      json heads = json::array();
      for (size_t h = 0; h < H; ++h) {
        const int64_t at = evicted[l * H + h][p];
        heads.push_back(at < 0 ? json(nullptr) : json(at));
        held += at < 0 ? 1 : 0;
      }
      when.push_back(heads);
    }
    out += line({{"record", "token"},
                 {"sample", index},
                 {"position", p},
                 {"id", t.tokens[p]},
                 {"text", t.texts[p]},
                 {"kind", token_kind_name(t.kinds[p])},
                 {"judged", int64_t(p) < t.judged()},
                 {"kept", pairs ? double(held) / double(pairs) : 1.0},
                 {"evicted_at", when}});
  }
}

json fractions_json(const std::vector<KeptFraction>& fractions) {
  json j = json::array();
  for (const KeptFraction& f : fractions) j.push_back({{"kept", f.kept}, {"tokens", f.tokens}});
  return j;
}

json summary_json(const ForgettingSummary& s) {
  json kinds = json::object();
  for (int k = 0; k < kTokenKindCount; ++k)
    kinds[token_kind_name(TokenKind(k))] = {{"kept", s.by_kind[size_t(k)].kept},
                                            {"from_position", s.by_kind_from_position[size_t(k)]},
                                            {"tokens", s.by_kind[size_t(k)].tokens}};
  return {{"record", "summary"},
          {"judged_tokens", s.judged_tokens},
          {"kept_by_kind", kinds},
          {"kept_by_position", fractions_json(s.by_position)},
          {"kept_by_layer", fractions_json(s.by_layer)},
          {"final_cache_per_layer", s.final_cache}};
}

// Short bar labels: the full kind names do not fit under a bar.
const char* short_kind_label(TokenKind kind) {
  static const char* const kLabels[] = {"special",    "whitespace", "punctuation", "number",
                                        "word start", "word cont.", "other"};
  return kLabels[size_t(kind)];
}

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

std::string forgetting_jsonl(const ForgettingRunInfo& info, const std::vector<SampleTrace>& traces,
                             const ForgettingSummary& summary) {
  std::string out = line({{"record", "run"},
                          {"schema", "nammkit.forgetting/1"},
                          {"model", info.model},
                          {"policy", info.policy},
                          {"tasks", info.tasks},
                          {"update_interval", info.update_interval},
                          {"n_layers", summary.n_layers},
                          {"n_kv_heads", summary.n_kv_heads},
                          {"samples", traces.size()}});
  for (size_t i = 0; i < traces.size(); ++i) {
    sample_lines(out, int(i), traces[i]);
    token_lines(out, int(i), traces[i]);
  }
  return out + line(summary_json(summary));
}

std::string cache_per_layer_svg(const ForgettingSummary& s, const std::string& title) {
  LineChart chart{title, "tokens seen", "cache size (tokens per KV head)", {}, 0, 0};
  double last = 0;
  for (int l = 0; l < s.n_layers; ++l) {
    ChartSeries layer{"layer " + std::to_string(l), series_color(size_t(l)), {{0.0, 0.0}}};
    for (const CacheAtUpdate& u : s.cache) {  // grows to `before`, then drops to `after` at the update
      layer.points.emplace_back(double(u.tokens_seen), u.before[size_t(l)]);
      layer.points.emplace_back(double(u.tokens_seen), u.after[size_t(l)]);
      last = std::max(last, double(u.tokens_seen));
    }
    chart.series.push_back(std::move(layer));
  }
  chart.series.push_back({"full cache", "#999", {{0, 0}, {last, last}}, 1.0, true});
  return render_line_chart(chart);
}

std::string kept_by_position_svg(const ForgettingSummary& s, const std::string& title) {
  LineChart chart{
      title, "relative position in the sequence (0 = first token, 1 = last judged)", "kept fraction at the end", {}, 0,
      1};
  const double bins = double(s.by_position.size());
  auto centres = [&](const std::vector<KeptFraction>& fractions) {
    std::vector<std::pair<double, double>> points;
    for (size_t b = 0; b < fractions.size(); ++b)
      if (fractions[b].tokens > 0) points.emplace_back((double(b) + 0.5) / bins, fractions[b].kept);
    return points;
  };
  for (int l = 0; l < s.n_layers; ++l)
    chart.series.push_back(
        {"layer " + std::to_string(l), series_color(size_t(l)), centres(s.by_position_layer[size_t(l)]), 1.0, true});
  chart.series.push_back({"all layers", "#000", centres(s.by_position), 2.5});
  return render_line_chart(chart);
}

std::string kept_by_kind_svg(const ForgettingSummary& s, const std::string& title) {
  BarChart chart{title, "kept fraction at the end", {}, {}, {}, 1, {}, "by position alone"};
  double highest = 0;
  for (int k = 0; k < kTokenKindCount; ++k) {
    const KeptFraction& f = s.by_kind[size_t(k)];
    if (f.tokens == 0) continue;
    chart.labels.push_back(short_kind_label(TokenKind(k)));
    chart.values.push_back(f.kept);
    chart.markers.push_back(s.by_kind_from_position[size_t(k)]);
    highest = std::max({highest, f.kept, chart.markers.back()});
    chart.notes.push_back(fixed(f.kept, 2) + " (n=" + std::to_string(f.tokens) + ")");
  }
  chart.y_hi = std::min(1.0, std::ceil(highest * 12) / 10);  // room above the tallest bar for its note
  return render_bar_chart(chart);
}

std::string forgetting_table(const ForgettingSummary& s) {
  std::ostringstream o;
  char buf[160];
  o << "kept fraction at the end (" << s.judged_tokens
    << " judged tokens; from position: expected by position alone):\n";
  for (int k = 0; k < kTokenKindCount; ++k) {
    const KeptFraction& f = s.by_kind[size_t(k)];
    if (f.tokens == 0) continue;
    std::snprintf(buf, sizeof buf, "  %-18s %6.3f  from position %6.3f  (%lld tokens)\n", token_kind_name(TokenKind(k)),
                  f.kept, s.by_kind_from_position[size_t(k)], static_cast<long long>(f.tokens));
    o << buf;
  }
  o << "by layer (kept fraction, cache at the end in tokens per KV head):\n";
  for (int l = 0; l < s.n_layers; ++l) {
    std::snprintf(buf, sizeof buf, "  layer %-3d %6.3f  %8.1f\n", l, s.by_layer[size_t(l)].kept,
                  s.final_cache[size_t(l)]);
    o << buf;
  }
  o << "by relative position (" << s.by_position.size() << " bins, first to last):\n ";
  for (const KeptFraction& f : s.by_position) o << " " << fixed(f.kept, 2);
  o << "\n";
  return o.str();
}

}  // namespace nammkit::cli
