// The greedy baseline: extend the current partition op by op along the topological order and cut
// as soon as the next op would make it not fit. It uses the same partition accounting and the same
// single-op fallbacks as the optimal planner, so the two differ only in where they cut.
#include "occam/baselines.hpp"

namespace occam {

Plan plan_greedy(const Analysis& analysis, const PlanOptions& options) {
  std::vector<OpId> starts = {0};
  for (OpId op = 1; op < analysis.op_count(); ++op) {
    if (!fits(make_partition(analysis, options, starts.back(), op), options.capacity_bytes)) starts.push_back(op);
  }
  return plan_from_starts(analysis, options, starts, "greedy");
}

}  // namespace occam
