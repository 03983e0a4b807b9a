// The optimal partitioner: dynamic programming over cut points of the topological order.
//
// best[j] = least per-image traffic of ops [0, j); best[j] = min over spans [i, j) that fit of
// best[i] + traffic(span). A span's traffic (its boundary reads and writes) depends only on the
// span, so the recurrence is exact over all partitionings into contiguous spans, in O(L^2) span
// evaluations. Closure and filter bytes only grow as a span extends, so each start's extension
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

SpanTable::SpanTable(const Analysis& analysis, int64_t max_capacity_bytes)
    : analysis_(&analysis), max_capacity_bytes_(max_capacity_bytes), spans_(static_cast<size_t>(analysis.op_count())) {
  for (OpId first = 0; first < analysis.op_count(); ++first) {
    // Spans only grow from their first op: if it does not fit alone, no span starting there does.
    int64_t filters = analysis.op(first).filter_bytes;
    if (filters > max_capacity_bytes_ || analysis.closure(first, first).bytes + filters > max_capacity_bytes_) continue;
    filters = 0;
    auto& spans = spans_[static_cast<size_t>(first)];
    analysis.closures_from(first, [&](OpId last, int64_t closure) {
      filters += analysis.op(last).filter_bytes;
      if (closure + filters > max_capacity_bytes_) return false;
      if (last > first) {
        const SpanBoundary boundary = analysis.boundary(first, last);
        spans.push_back({last, closure + filters, boundary.input_bytes + boundary.output_bytes});
      }
      return true;
    });
  }
}

Plan plan_optimal(const Analysis& analysis, const PlanOptions& options) {
  check_options(options);
  return plan_optimal(SpanTable(analysis, options.capacity_bytes), options);
}

Plan plan_optimal(const SpanTable& table, const PlanOptions& options) {
  check_options(options);
  if (options.capacity_bytes > table.max_capacity_bytes()) {
    fail("capacity {} exceeds the span table's {}", options.capacity_bytes, table.max_capacity_bytes());
  }
  const Analysis& analysis = table.analysis();
  const int ops = analysis.op_count();
  constexpr int64_t unreachable = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> best(static_cast<size_t>(ops) + 1, unreachable);
  std::vector<int> partitions(static_cast<size_t>(ops) + 1, 0);
  std::vector<OpId> start_of(static_cast<size_t>(ops) + 1, 0);
  best[0] = 0;
  const auto relax = [&](OpId first, OpId last, int64_t traffic) {
    const int64_t cost = best[static_cast<size_t>(first)] + traffic;
    const int count = partitions[static_cast<size_t>(first)] + 1;
    const auto end = static_cast<size_t>(last) + 1;
    if (cost < best[end] || (cost == best[end] && count < partitions[end])) {
      best[end] = cost;
      partitions[end] = count;
      start_of[end] = first;
    }
  };
  for (OpId first = 0; first < ops; ++first) {
    // Every op alone is feasible (with a fallback if need be), so best[first] is reachable.
    relax(first, first, make_partition(analysis, options, first, first).traffic_bytes());
    for (const SpanTable::Span& span : table.starting_at(first)) {
      if (span.on_chip_bytes > options.capacity_bytes) break;
      relax(first, span.last, span.traffic_bytes);
    }
  }
  std::vector<OpId> starts;
  for (int j = ops; j > 0; j = start_of[static_cast<size_t>(j)]) starts.push_back(start_of[static_cast<size_t>(j)]);
  std::reverse(starts.begin(), starts.end());
  return plan_from_starts(analysis, options, starts, "occam-dp");
}

}  // namespace occam
