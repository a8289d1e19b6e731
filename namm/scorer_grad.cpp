#include "namm/scorer_grad.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace nammkit {

namespace {
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVec = Eigen::Matrix<double, 1, Eigen::Dynamic>;
using ColVec = Eigen::VectorXd;
using FloatMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Query rows per attention block (as in bam_scorer.cpp): a block holds rows x n probabilities.
constexpr int kRowBlock = 64;

// Where each BAM parameter block starts in the flat vector (bam_scorer.h); the gradient uses the
// same offsets.
struct BamLayout {
  int F, H;
  int qkv_w, qkv_b, o_w, o_b, out_w, out_b;
  BamLayout(int f, int h) : F(f), H(h) {
    qkv_w = 0;
    qkv_b = qkv_w + F * 3 * H;
    o_w = qkv_b + 3 * H;
    o_b = o_w + H * 2 * F;
    out_w = o_b + 2 * F;
    out_b = out_w + F;
  }
};

// A rows x cols block of a flat float vector, as double.
Mat param_block(const float* p, int offset, int rows, int cols) {
  return Eigen::Map<const FloatMat>(p + offset, rows, cols).cast<double>();
}
// The matching block of the gradient, to accumulate into.
Eigen::Map<Mat> grad_block(double* g, int offset, int rows, int cols) { return {g + offset, rows, cols}; }

// Attention probabilities of query rows i0 .. i0+rows-1 over keys i0 .. n-1 (keys j < i0 are masked
// for every row of the block): P[r][c] = softmax over c >= r of q_{i0+r}.k_{i0+c} * scale, and 0 for
// c < r (the backward mask j >= i).
void attention_rows(const Mat& qkv, int H, int i0, int rows, double scale, Mat& P) {
  const int cols = static_cast<int>(qkv.rows()) - i0;
  P.noalias() = qkv.block(i0, 0, rows, H) * qkv.block(i0, H, cols, H).transpose();
  P *= scale;
  for (int r = 0; r < rows; ++r) {
    auto seen = P.row(r).tail(cols - r);
    seen = (seen.array() - seen.maxCoeff()).exp().matrix();
    seen /= seen.sum();
    P.row(r).head(r).setZero();
  }
}

void bam_backward(const ScorerShape& s, const float* p, const float* features_NxF, int n, const double* upstream_N,
                  double* grad, double* scores_N) {
  const int F = s.n_features, H = s.hidden;
  const BamLayout L(F, H);
  const Mat X = Eigen::Map<const FloatMat>(features_NxF, n, F).cast<double>();
  const Mat W_qkv = param_block(p, L.qkv_w, F, 3 * H), W_o = param_block(p, L.o_w, H, 2 * F);
  const RowVec b_qkv = param_block(p, L.qkv_b, 1, 3 * H), b_o = param_block(p, L.o_b, 1, 2 * F);
  const RowVec w = param_block(p, L.out_w, 1, F);
  const double scale = 1.0 / std::sqrt(static_cast<double>(H));

  // Forward, keeping qkv, heads, o and y (the attention itself is recomputed block by block below).
  Mat qkv = X * W_qkv;
  qkv.rowwise() += b_qkv;
  const auto Q = qkv.leftCols(H);
  const auto K = qkv.middleCols(H, H);
  const auto V = qkv.rightCols(H);
  Mat heads(n, H), P;
  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int rows = std::min(kRowBlock, n - i0);
    attention_rows(qkv, H, i0, rows, scale, P);
    heads.middleRows(i0, rows).noalias() = P * V.bottomRows(n - i0);
  }
  Mat o = heads * W_o;
  o.rowwise() += b_o;
  const Mat y = X.array() * (1.0 + o.rightCols(F).array()) + o.leftCols(F).array();
  if (scores_N) Eigen::Map<ColVec>(scores_N, n) = (y * w.transpose()).array() + double{p[L.out_b]};

  const Eigen::Map<const ColVec> g(upstream_N, n);  // g_i = d loss / d score_i

  // Read-out score_i = y_i . w + b:  dw = sum_i g_i y_i = y^T g,  db = sum_i g_i,  dy_i = g_i w.
  grad_block(grad, L.out_w, F, 1).noalias() += y.transpose() * g;
  grad[L.out_b] += g.sum();
  const Mat dy = g * w;

  // Gated residual y = x (1 + m) + r with [r | m] = o:  dr = dy,  dm = dy * x (elementwise).
  Mat d_o(n, 2 * F);
  d_o.leftCols(F) = dy;
  d_o.rightCols(F) = dy.array() * X.array();

  // o = heads W_o + b_o:  dW_o = heads^T do,  db_o = sum_i do_i,  dheads = do W_o^T.
  grad_block(grad, L.o_w, H, 2 * F).noalias() += heads.transpose() * d_o;
  grad_block(grad, L.o_b, 1, 2 * F) += d_o.colwise().sum();
  const Mat d_heads = d_o * W_o.transpose();

  // Attention heads_i = sum_j P_ij v_j with P_i = softmax_j>=i(S_i), S_ij = scale q_i.k_j:
  //   dP_ij = dheads_i . v_j,   dv_j = sum_i P_ij dheads_i,
  //   dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik) = P_ij (dP_ij - D_i),  where
  //   D_i = sum_k P_ik (dheads_i . v_k) = dheads_i . heads_i  (no need to keep P for it);
  //   dq_i = scale sum_j dS_ij k_j,   dk_j = scale sum_i dS_ij q_i.
  // Masked pairs (j < i) have P_ij = 0, hence dS_ij = 0: they contribute nothing.
  const ColVec D = (d_heads.array() * heads.array()).rowwise().sum();
  Mat d_qkv = Mat::Zero(n, 3 * H), dS;
  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int rows = std::min(kRowBlock, n - i0), cols = n - i0;
    attention_rows(qkv, H, i0, rows, scale, P);
    const auto dh = d_heads.middleRows(i0, rows);
    dS.noalias() = dh * V.bottomRows(cols).transpose();  // dP
    dS.colwise() -= D.segment(i0, rows);
    dS.array() *= P.array();
    d_qkv.block(i0, 2 * H, cols, H).noalias() += P.transpose() * dh;
    d_qkv.block(i0, 0, rows, H).noalias() += scale * (dS * K.bottomRows(cols));
    d_qkv.block(i0, H, cols, H).noalias() += scale * (dS.transpose() * Q.middleRows(i0, rows));
  }

  // qkv = X W_qkv + b_qkv:  dW_qkv = X^T dqkv,  db_qkv = sum_i dqkv_i (X is an input: no dX).
  grad_block(grad, L.qkv_w, F, 3 * H).noalias() += X.transpose() * d_qkv;
  grad_block(grad, L.qkv_b, 1, 3 * H) += d_qkv.colwise().sum();
}

// MLP score_i = x_i . w + b:  dw = X^T g,  db = sum_i g_i.
void mlp_backward(const ScorerShape& s, const float* p, const float* features_NxF, int n, const double* upstream_N,
                  double* grad, double* scores_N) {
  const int F = s.n_features;
  const Mat X = Eigen::Map<const FloatMat>(features_NxF, n, F).cast<double>();
  const Eigen::Map<const ColVec> g(upstream_N, n);
  if (scores_N) Eigen::Map<ColVec>(scores_N, n) = (X * param_block(p, 0, F, 1)).array() + double{p[F]};
  grad_block(grad, 0, F, 1).noalias() += X.transpose() * g;
  grad[F] += g.sum();
}
}  // namespace

void scorer_backward(const ScorerShape& shape, std::span<const float> params, const float* features_NxF, int n,
                     const double* upstream_N, double* grad_params, double* scores_N) {
  if (static_cast<int>(params.size()) != shape.n_params())
    fail("scorer_backward", std::string("params: expected ") + std::to_string(shape.n_params()) + " values, got " +
                                std::to_string(params.size()) + " (" + scorer_kind_name(shape.kind) + " scorer)");
  if (n <= 0) return;
  // The caller's buffers go through Eigen-allocated (maximally aligned) copies: Eigen peels vectorised
  // products and reductions to the memory alignment of Mapped data, so computing on the caller's
  // pointers would make the rounding depend on where the allocator put them, and an RL run would not
  // be a pure function of its seed.
  const Eigen::VectorXd upstream = Eigen::Map<const Eigen::VectorXd>(upstream_N, n);
  Eigen::VectorXd grad = Eigen::VectorXd::Zero(shape.n_params());
  Eigen::VectorXd scores(scores_N ? n : 0);
  double* s = scores_N ? scores.data() : nullptr;
  if (shape.kind == ScorerKind::Bam)
    bam_backward(shape, params.data(), features_NxF, n, upstream.data(), grad.data(), s);
  else mlp_backward(shape, params.data(), features_NxF, n, upstream.data(), grad.data(), s);
  for (int k = 0; k < shape.n_params(); ++k) grad_params[k] += grad[k];
  for (int i = 0; scores_N && i < n; ++i) scores_N[i] = scores[i];
}

}  // namespace nammkit
