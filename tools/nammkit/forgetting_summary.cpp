#include "tools/nammkit/forgetting_summary.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace nammkit::cli {
namespace {

void add(KeptFraction& f, double kept) {
  f.kept += kept;  // a sum until finish() divides it
  ++f.tokens;
}

void finish(KeptFraction& f) { f.kept = f.tokens > 0 ? f.kept / static_cast<double>(f.tokens) : 0.0; }

// The cache per layer at every update round, summed over heads and samples (divided afterwards).
void add_cache(const SampleTrace& trace, std::map<int64_t, CacheAtUpdate>& rounds) {
  for (const LayerUpdate& u : trace.updates) {
    CacheAtUpdate& r = rounds[u.tokens_seen];
    if (r.before.empty()) {
      r.tokens_seen = u.tokens_seen;
      r.before.assign(size_t(trace.n_layers), 0.0);
      r.after.assign(size_t(trace.n_layers), 0.0);
    }
    if (u.layer == 0) ++r.samples;
    for (size_t h = 0; h < u.kept.size(); ++h) {
      r.before[size_t(u.layer)] += u.before[h];
      r.after[size_t(u.layer)] += static_cast<double>(u.kept[h].size());
    }
  }
}

size_t position_bin(int64_t position, int64_t judged, size_t bins) {
  return std::min(bins - 1, size_t(position * int64_t(bins) / judged));
}

// by_kind_from_position, once by_position holds its means.
void add_position_expectation(const std::vector<SampleTrace>& traces, ForgettingSummary& s) {
  for (const SampleTrace& t : traces)
    for (int64_t p = 0; p < t.judged(); ++p)
      s.by_kind_from_position[size_t(t.kinds[size_t(p)])] +=
          s.by_position[position_bin(p, t.judged(), s.by_position.size())].kept;
  for (size_t k = 0; k < s.by_kind.size(); ++k)
    s.by_kind_from_position[k] /= double(std::max<int64_t>(1, s.by_kind[k].tokens));
}

}  // namespace

std::vector<std::vector<double>> kept_share_by_layer(const SampleTrace& trace) {
  const std::vector<std::vector<int64_t>> evicted = trace.evicted_at();
  const size_t H = size_t(trace.n_kv_heads);
  std::vector<std::vector<double>> kept(size_t(trace.n_layers), std::vector<double>(size_t(trace.judged()), 0.0));
  for (size_t i = 0; i < evicted.size(); ++i)
    for (size_t p = 0; p < kept[i / H].size(); ++p)
      if (evicted[i][p] < 0) kept[i / H][p] += 1.0 / double(H);
  return kept;
}

ForgettingSummary summarise_forgetting(const std::vector<SampleTrace>& traces, int bins) {
  if (bins < 1) fail("forgetting summary", "bins: expected >= 1, got " + std::to_string(bins));
  if (traces.empty()) fail("forgetting summary", "no samples to summarise");
  ForgettingSummary s;
  s.n_layers = traces[0].n_layers;
  s.n_kv_heads = traces[0].n_kv_heads;
  const size_t L = size_t(s.n_layers), H = size_t(s.n_kv_heads);
  s.final_cache.assign(L, 0.0);
  s.by_position.assign(size_t(bins), {});
  s.by_position_layer.assign(L, std::vector<KeptFraction>(size_t(bins)));
  s.by_layer.assign(L, {});
  std::map<int64_t, CacheAtUpdate> rounds;
  for (const SampleTrace& t : traces) {
    if (size_t(t.n_layers) != L || size_t(t.n_kv_heads) != H)
      fail(t.sample_id, "trace: layers and heads differ from the first sample's");
    add_cache(t, rounds);
    for (size_t i = 0; i < t.final_cache.size(); ++i) s.final_cache[i / H] += t.final_cache[i];
    const std::vector<std::vector<double>> kept = kept_share_by_layer(t);
    const int64_t judged = t.judged();
    s.judged_tokens += judged;
    for (int64_t p = 0; p < judged; ++p) {
      const size_t bin = position_bin(p, judged, size_t(bins));
      double all = 0;
      for (size_t l = 0; l < L; ++l) {
        add(s.by_position_layer[l][bin], kept[l][size_t(p)]);
        add(s.by_layer[l], kept[l][size_t(p)]);
        all += kept[l][size_t(p)] / double(L);
      }
      add(s.by_position[bin], all);
      add(s.by_kind[size_t(t.kinds[size_t(p)])], all);
    }
  }
  for (auto& [seen, r] : rounds) {
    for (size_t l = 0; l < L; ++l) {
      r.before[l] /= double(H) * r.samples;
      r.after[l] /= double(H) * r.samples;
    }
    s.cache.push_back(r);
  }
  for (double& c : s.final_cache) c /= double(H) * double(traces.size());
  for (KeptFraction& f : s.by_position) finish(f);
  add_position_expectation(traces, s);
  for (auto& layer : s.by_position_layer)
    for (KeptFraction& f : layer) finish(f);
  for (KeptFraction& f : s.by_kind) finish(f);
  for (KeptFraction& f : s.by_layer) finish(f);
  return s;
}

}  // namespace nammkit::cli
