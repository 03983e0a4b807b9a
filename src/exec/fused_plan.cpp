// Plans for execution on this CPU, what they say a fused execution holds, and the search for a plan
// whose measured fused peak fits a memory limit.
#include "exec/fused_schedule.hpp"
#include "exec/ring.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/units.hpp"

#include <algorithm>
#include <limits>

namespace occam {

AnalysisOptions execution_analysis_options() { return {4, Granularity::Row}; }

Plan plan_for_execution(const Graph& graph, int64_t capacity_bytes, int64_t batch) {
  const Analysis analysis(graph, execution_analysis_options());
  return plan_optimal(analysis, {capacity_bytes, batch, execution_analysis_options()});
}

Plan single_partition_plan(const Graph& graph) {
  const Analysis analysis(graph, execution_analysis_options());
  const SpanClosure closure = analysis.closure(0, analysis.op_count() - 1);
  const int64_t capacity = closure.bytes + analysis.total_filter_bytes();
  return plan_from_starts(analysis, {capacity, 1, execution_analysis_options()}, {0}, "single-partition");
}

PlanMemory plan_memory(const Graph& graph, const Plan& plan, const FusedOptions& options) {
  check_plan_matches(plan, graph);
  const Analysis analysis(graph, execution_analysis_options());
  const std::vector<exec::BoundarySpan> boundaries = exec::boundary_spans(graph, exec::partition_of_ops(plan, graph.ops.size()));
  const std::vector<int> bands = exec::step_bands(analysis, plan, options.band_bytes, options.filter_bands != FilterBands::Off);
  PlanMemory memory;
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    const OpId first = plan.partitions[p].first_op, last = plan.partitions[p].last_op;
    const SpanClosure closure = analysis.closure(first, last);
    const std::span<const int> span(bands.data() + first, static_cast<size_t>(last - first + 1));
    const exec::SpanSchedule schedule =
        exec::schedule_span(analysis, first, last, span, exec::partition_roles(graph, plan, boundaries, p));
    const int64_t buffers = schedule.packed_rings(graph, 64).bytes;
    const int64_t pages = schedule.packed_rings(graph, exec::page_bytes()).bytes;
    // Boundary tensors held in memory while the partition runs (the caller's are not counted).
    const int64_t live = exec::live_boundary_bytes(analysis, boundaries, static_cast<int>(p));
    memory.line_buffer_bytes = std::max(memory.line_buffer_bytes, buffers);
    memory.closure_bytes = std::max(memory.closure_bytes, closure.bytes);
    memory.boundary_bytes = std::max(memory.boundary_bytes, live);
    memory.peak_bytes = std::max(memory.peak_bytes, buffers + live);
    memory.page_peak_bytes = std::max(memory.page_peak_bytes, pages + live);
    memory.closure_peak_bytes = std::max(memory.closure_peak_bytes, closure.bytes + live);
  }
  return memory;
}

MemoryLimitedPlan plan_under_memory_limit(const Graph& graph, int64_t limit_bytes, const FusedOptions& options) {
  if (limit_bytes <= 0) fail("{}: a memory limit must be positive, got {} bytes", graph.source, limit_bytes);
  const Analysis analysis(graph, execution_analysis_options());
  // Capacities from one that holds the whole network down to a few KiB, by factors of sqrt(2);
  // many give the same partitioning, which is compiled once.
  const int64_t whole = analysis.closure(0, analysis.op_count() - 1).bytes + analysis.total_filter_bytes();
  std::vector<Plan> plans;
  for (double capacity = static_cast<double>(whole) * 1.01; capacity >= 4096; capacity /= std::sqrt(2.0)) {
    Plan plan;
    try {
      plan = plan_optimal(analysis, {static_cast<int64_t>(capacity), 1, execution_analysis_options()});
    } catch (const Error&) {
      break;  // an op cannot run at all below this capacity
    }
    const auto same = [&](const Plan& other) {
      if (other.partitions.size() != plan.partitions.size()) return false;
      for (size_t i = 0; i < plan.partitions.size(); ++i) {
        if (other.partitions[i].first_op != plan.partitions[i].first_op) return false;
      }
      return true;
    };
    if (std::none_of(plans.begin(), plans.end(), same)) plans.push_back(std::move(plan));
  }
  if (plans.empty()) fail("{}: no plan can be made for it at all", graph.source);
  // Least traffic first; fewer partitions break ties.
  std::stable_sort(plans.begin(), plans.end(), [](const Plan& a, const Plan& b) {
    if (a.traffic_bytes != b.traffic_bytes) return a.traffic_bytes < b.traffic_bytes;
    return a.partitions.size() < b.partitions.size();
  });
  // Automatic bands may spend a plan's capacity on whole tensors; one row per step is the least a
  // plan can hold, so a plan whose automatic peak is over the limit is tried that way too.
  std::vector<int64_t> bands = {options.band_bytes};
  if (options.band_bytes == 0) bands.push_back(1);
  const auto peak_of = [&](const Plan& plan, int64_t band_bytes) {
    FusedOptions banded = options;
    banded.band_bytes = band_bytes;
    // A pipeline's peak bounds what compile_fused keeps when it measures (ThreadSharing::Measure),
    // and so do oneDNN's row kernels (own ones need no scratchpad), the blocked layout (NHWC is
    // kept only where it holds no more) and the filter bands (rows without them hold fewer rows),
    // without the timing.
    if (banded.sharing == ThreadSharing::Measure) banded.sharing = ThreadSharing::Pipeline;
    if (banded.row_kernels == RowKernels::Measure) banded.row_kernels = RowKernels::OneDnn;
    if (banded.layout == FusedLayout::Measure) banded.layout = FusedLayout::Blocked;
    if (banded.filter_bands == FilterBands::Measure) banded.filter_bands = FilterBands::On;
    return compile_fused(graph, plan, banded)->memory().activation_peak_bytes();
  };
  MemoryLimitedPlan result;
  int64_t smallest = std::numeric_limits<int64_t>::max();
  const Plan* smallest_plan = nullptr;
  for (const Plan& plan : plans) {
    ++result.candidates;
    // Boundaries alone are a lower bound of the arena: skip compiling plans they already rule out.
    if (plan_memory(graph, plan).boundary_bytes > limit_bytes && smallest_plan != nullptr) continue;
    for (const int64_t band_bytes : bands) {
      const int64_t peak = peak_of(plan, band_bytes);
      if (peak <= limit_bytes) {
        result.plan = plan;
        result.peak_bytes = peak;
        result.band_bytes = band_bytes;
        return result;
      }
      if (peak < smallest) {
        smallest = peak;
        smallest_plan = &plan;
      }
    }
  }
  // None fits: make sure the smallest peak reported is the smallest of all candidates.
  for (const Plan& plan : plans) {
    const int64_t peak = peak_of(plan, bands.back());
    if (peak < smallest) {
      smallest = peak;
      smallest_plan = &plan;
    }
  }
  fail("{}: no plan runs fused within a memory limit of {}: the smallest measured peak of activation memory is {} "
       "({} partition{}, planned at {} per partition)",
       graph.source, format_bytes(static_cast<double>(limit_bytes)), format_bytes(static_cast<double>(smallest)),
       smallest_plan->partitions.size(), smallest_plan->partitions.size() == 1 ? "" : "s",
       format_bytes(static_cast<double>(smallest_plan->capacity_bytes)));
}

}  // namespace occam
