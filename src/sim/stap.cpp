// STAP replica assignment.
//
// The replicated pipeline's period is P(r) = max_k t_k / r_k. Greedy gives one chip at a time to
// the current bottleneck (largest t_k / r_k). It is optimal: let P* be the best period reachable
// with the budget; every assignment reaching it has r_k >= ceil(t_k / P*) =: r*_k, and sum r*_k
// <= budget. While greedy's period exceeds P*, its bottleneck k has t_k / r_k > P*, i.e.
// r_k < r*_k, so greedy never gives a stage more than r*_k chips before reaching P*, and it
// reaches P* within the budget. Chips left over after that cannot lower the period further
// (greedy's period is P*), so the result is trimmed to r_k = ceil(t_k / P*), the fewest chips.
#include "occam/error.hpp"
#include "occam/sim.hpp"

#include <algorithm>
#include <cmath>
#include <queue>

namespace occam {

double pipeline_period(std::span<const double> stage_times, std::span<const int> replicas) {
  if (stage_times.size() != replicas.size()) {
    fail("pipeline period: {} stage times but {} replica counts", stage_times.size(), replicas.size());
  }
  double period = 0.0;
  for (size_t k = 0; k < stage_times.size(); ++k) {
    if (replicas[k] < 1) fail("pipeline period: stage {} has {} replicas; every stage needs at least one chip", k, replicas[k]);
    period = std::max(period, stage_times[k] / replicas[k]);
  }
  return period;
}

std::vector<int> stap_replicas(std::span<const double> stage_times, int chip_budget) {
  const auto stages = static_cast<int>(stage_times.size());
  if (chip_budget < stages) {
    fail("STAP: a pipeline of {} stages needs at least {} chips (one per stage), but the budget is {}", stages, stages,
         chip_budget);
  }
  for (size_t k = 0; k < stage_times.size(); ++k) {
    if (!std::isfinite(stage_times[k]) || stage_times[k] < 0.0) {
      fail("STAP: stage {} has time {}; expected a non-negative number of seconds", k, stage_times[k]);
    }
  }
  std::vector<int> replicas(stage_times.size(), 1);
  // Max-heap on the effective stage time; ties go to the lower stage index so results are stable.
  const auto slower = [&](int a, int b) {
    const double ta = stage_times[static_cast<size_t>(a)] / replicas[static_cast<size_t>(a)];
    const double tb = stage_times[static_cast<size_t>(b)] / replicas[static_cast<size_t>(b)];
    return ta < tb || (ta == tb && a > b);
  };
  std::priority_queue<int, std::vector<int>, decltype(slower)> bottleneck(slower);
  for (int k = 0; k < stages; ++k) bottleneck.push(k);
  for (int spare = chip_budget - stages; spare > 0 && !bottleneck.empty(); --spare) {
    const int k = bottleneck.top();
    bottleneck.pop();
    ++replicas[static_cast<size_t>(k)];
    bottleneck.push(k);
  }
  const double period = pipeline_period(stage_times, replicas);
  if (period == 0.0) return std::vector<int>(stage_times.size(), 1);
  for (size_t k = 0; k < stage_times.size(); ++k) {
    // The smallest r with t / r <= period; the relative slack absorbs rounding in t / period.
    int fewest = std::max(1, static_cast<int>(std::ceil(stage_times[k] / period * (1.0 - 1e-12))));
    if (stage_times[k] / fewest > period) ++fewest;
    replicas[k] = std::min(replicas[k], fewest);
  }
  return replicas;
}

}  // namespace occam
