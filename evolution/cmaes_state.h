// The complete mutable state of a CMA-ES run: plain data, so it can be inspected, compared and
// checkpointed field by field. Together with the CmaesSettings it determines every future generation
// bit-for-bit (the RNG is part of it).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "evolution/rng.h"

namespace nammkit::evo {

struct CmaesState {
  int n = 0;
  int lambda = 0;  // current population size (grows with IPOP restarts)
  bool separable = false;
  int64_t generation = 0;         // completed generations (tell calls) since the last (re)start
  int64_t total_generations = 0;  // completed generations over all restarts
  int64_t evaluations = 0;        // function evaluations over all restarts
  int restarts = 0;               // IPOP restarts done

  Eigen::VectorXd mean;
  double sigma = 0;
  Eigen::VectorXd p_sigma;  // conjugate evolution path (step-size control)
  Eigen::VectorXd p_c;      // evolution path (rank-one update)
  // Full: the n x n covariance. Separable: an n x 1 column holding its diagonal.
  Eigen::MatrixXd C;
  // Full: eigenvectors of C (columns) at the last decomposition. Separable: empty.
  Eigen::MatrixXd B;
  // Standard deviations along the principal axes: sqrt(max(eigenvalue, 1e-20)) (full) or sqrt(C_ii).
  Eigen::VectorXd D;
  int64_t eigen_generation = 0;        // `generation` at which B, D were last computed
  bool decomposition_pending = false;  // C changed outside the lazy schedule (generation-0 jitter)
  int64_t eigen_count = 0;             // eigendecompositions done, all restarts

  Rng rng;

  // Best member ever evaluated (all restarts) and its fitness; has_best false before the first tell.
  bool has_best = false;
  Eigen::VectorXd best_x;
  double best_fitness = -std::numeric_limits<double>::infinity();

  // Per-generation best and median fitness since the last (re)start, the most recent at the back,
  // capped (see kMaxHistory): the tolfun and stagnation criteria read them.
  std::vector<double> best_history;
  std::vector<double> median_history;
  double last_generation_range = 0;  // max - min fitness of the last generation
  std::string stop_reason;           // the criterion met at the last tell ("" = none)

  static constexpr size_t kMaxHistory = 20000;
};

// Throws nammkit::Error("<where>: <field>: <problem>") unless the sizes agree with n, lambda and
// `separable` and every float is finite (sigma > 0).
void validate_state(const CmaesState& state, const std::string& where);

}  // namespace nammkit::evo
