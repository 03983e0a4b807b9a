// The optimal partitioner: dynamic programming over cut points of the topological order.
//
// best[j] = least per-image traffic of ops [0, j); best[j] = min over spans [i, j) that fit of
// best[i] + traffic(span). A span's traffic (its boundary reads and writes) depends only on the
// span, so the recurrence is exact over all partitionings into contiguous spans, in O(L^2) span
// evaluations. Closure and filter bytes only grow as a span extends to the left, so the inner loop
// stops at the first span that does not fit.
#include "occam/error.hpp"
#include "occam/plan.hpp"

#include <algorithm>
#include <limits>

namespace occam {

namespace {

void check_options(const PlanOptions& options) {
  if (options.capacity_bytes < 1) fail("on-chip capacity must be at least 1 byte, got {}", options.capacity_bytes);
  if (options.batch < 1) fail("mini-batch must be at least 1, got {}", options.batch);
}

}  // namespace

Plan plan_optimal(const Analysis& analysis, const PlanOptions& options) {
  check_options(options);
  const int ops = analysis.op_count();
  constexpr int64_t unreachable = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> best(static_cast<size_t>(ops) + 1, unreachable);
  std::vector<int> partitions(static_cast<size_t>(ops) + 1, 0);
  std::vector<OpId> start_of(static_cast<size_t>(ops) + 1, 0);
  best[0] = 0;
  for (int j = 1; j <= ops; ++j) {
    for (int i = j - 1; i >= 0; --i) {
      int64_t traffic = 0;
      if (i == j - 1) {
        traffic = make_partition(analysis, options, i, j - 1).traffic_bytes();
      } else {
        const SpanBoundary boundary = analysis.boundary(i, j - 1);
        if (boundary.filter_bytes > options.capacity_bytes) break;
        if (analysis.closure(i, j - 1).bytes + boundary.filter_bytes > options.capacity_bytes) break;
        traffic = boundary.input_bytes + boundary.output_bytes;
      }
      const int64_t cost = best[static_cast<size_t>(i)] + traffic;
      const int count = partitions[static_cast<size_t>(i)] + 1;
      auto& here = best[static_cast<size_t>(j)];
      if (cost < here || (cost == here && count < partitions[static_cast<size_t>(j)])) {
        here = cost;
        partitions[static_cast<size_t>(j)] = count;
        start_of[static_cast<size_t>(j)] = i;
      }
    }
  }
  std::vector<OpId> starts;
  for (int j = ops; j > 0; j = start_of[static_cast<size_t>(j)]) starts.push_back(start_of[static_cast<size_t>(j)]);
  std::reverse(starts.begin(), starts.end());
  return plan_from_starts(analysis, options, starts, "occam-dp");
}

}  // namespace occam
