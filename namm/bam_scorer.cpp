#include "namm/bam_scorer.h"

#include <tbb/parallel_for.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace nammkit {

namespace {
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMatrixF>;
using ConstVec = Eigen::Map<const Eigen::RowVectorXf>;

// Query rows per attention block: bounds the score block to kRowBlock x n floats.
constexpr int kRowBlock = 64;

// T is the arithmetic type of the whole evaluation (inputs and parameters are float).
template <typename T>
void score_bam(const ScorerShape& s, const float* p, const float* features_NxF, int n, float* scores_N) {
  using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const int F = s.n_features, H = s.hidden;
  const RowMatrix X = ConstMap(features_NxF, n, F).cast<T>();
  const RowMatrix W_qkv = ConstMap(p, F, 3 * H).cast<T>();
  const RowVector b_qkv = ConstVec(p + F * 3 * H, 3 * H).cast<T>();
  const float* p_o = p + F * 3 * H + 3 * H;
  const RowMatrix W_o = ConstMap(p_o, H, 2 * F).cast<T>();
  const RowVector b_o = ConstVec(p_o + H * 2 * F, 2 * F).cast<T>();
  const RowVector w_out = ConstVec(p_o + H * 2 * F + 2 * F, F).cast<T>();
  const T b_out = p_o[H * 2 * F + 2 * F + F];

  RowMatrix qkv = X * W_qkv;
  qkv.rowwise() += b_qkv;
  const auto Q = qkv.leftCols(H);
  const auto K = qkv.middleCols(H, H);
  const auto V = qkv.rightCols(H);
  const T scale = T(1) / std::sqrt(static_cast<T>(H));

  RowMatrix heads(n, H);
  RowMatrix logits;
  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int rows = std::min(kRowBlock, n - i0);
    const int cols = n - i0;  // the backward mask: rows i >= i0 see only keys j >= i >= i0
    logits.noalias() = (Q.middleRows(i0, rows) * K.middleRows(i0, cols).transpose()) * scale;
    for (int r = 0; r < rows; ++r) {
      T* row = logits.row(r).data();
      // Keys j < i (columns c < r) are masked; softmax over c >= r.
      const T mx = *std::max_element(row + r, row + cols);
      T sum = 0;
      for (int c = r; c < cols; ++c) sum += (row[c] = std::exp(row[c] - mx));
      const T inv = T(1) / sum;
      for (int c = 0; c < r; ++c) row[c] = 0;
      for (int c = r; c < cols; ++c) row[c] *= inv;
    }
    heads.middleRows(i0, rows).noalias() = logits * V.middleRows(i0, cols);
  }
  RowMatrix o = heads * W_o;
  o.rowwise() += b_o;
  // y = x (1 + m) + r, then the read-out.
  const RowMatrix y = X.array() * (T(1) + o.rightCols(F).array()) + o.leftCols(F).array();
  const Eigen::Matrix<T, Eigen::Dynamic, 1> out = (y * w_out.transpose()).array() + b_out;
  for (int i = 0; i < n; ++i) scores_N[i] = static_cast<float>(out[i]);
}

void score_mlp(const ScorerShape& s, const float* p, const float* features_NxF, int n, float* scores_N) {
  // A plain loop in double, not an Eigen product over a Map: Eigen peels vectorised reductions to the
  // memory alignment of the data, so the rounding (and a sampled action near p = 1/2) would depend on
  // where the allocator put the features, and a rollout would not be a pure function of its seed.
  const int F = s.n_features;
  for (int i = 0; i < n; ++i) {
    const float* x = features_NxF + static_cast<size_t>(i) * F;
    double sum = p[F];
    for (int f = 0; f < F; ++f) sum += static_cast<double>(x[f]) * p[f];
    scores_N[i] = static_cast<float>(sum);
  }
}
}  // namespace

int ScorerShape::n_params() const {
  const int F = n_features, H = hidden;
  if (kind == ScorerKind::Mlp) return F + 1;
  return F * 3 * H + 3 * H + H * 2 * F + 2 * F + F + 1;
}

void ScorerShape::validate(const std::string& where) const {
  if (n_features < 1) fail(where, "n_features: expected >= 1, got " + std::to_string(n_features));
  if (kind == ScorerKind::Bam && hidden < 1) fail(where, "hidden: expected >= 1, got " + std::to_string(hidden));
}

const char* scorer_kind_name(ScorerKind kind) { return kind == ScorerKind::Bam ? "bam" : "mlp"; }

void score_tokens(const ScorerShape& shape, std::span<const float> params, const float* features_NxF, int n,
                  float* scores_N) {
  if (static_cast<int>(params.size()) != shape.n_params())
    fail("score_tokens", std::string("params: expected ") + std::to_string(shape.n_params()) + " values, got " +
                             std::to_string(params.size()) + " (" + scorer_kind_name(shape.kind) + " scorer)");
  if (n <= 0) return;
  if (shape.kind == ScorerKind::Bam)
    // Double precision: with evolved parameters the q.k logits and the read-out cancel terms of
    // magnitude 10-50, where float loses the 1e-5 agreement with exact arithmetic; the cost is ~1.4x.
    score_bam<double>(shape, params.data(), features_NxF, n, scores_N);
  else score_mlp(shape, params.data(), features_NxF, n, scores_N);
}

void score_population(const ScorerShape& shape, std::span<const std::span<const float>> params,
                      const float* features_NxF, int n, std::vector<std::vector<float>>& scores_PxN) {
  scores_PxN.resize(params.size());
  for (auto& s : scores_PxN) s.assign(std::max(n, 0), 0.0f);
  tbb::parallel_for(size_t{0}, params.size(),
                    [&](size_t m) { score_tokens(shape, params[m], features_NxF, n, scores_PxN[m].data()); });
}

}  // namespace nammkit
