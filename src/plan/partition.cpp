// Accounting of one partition: what it keeps on chip, what crosses its boundary, and the
// fallback for a single op that cannot run with full reuse on one chip.
#include "occam/error.hpp"
#include "occam/plan.hpp"
#include "occam/units.hpp"

#include <algorithm>

namespace occam {

std::string_view to_string(Fallback fallback) {
  switch (fallback) {
    case Fallback::None: return "none";
    case Fallback::StreamWeights: return "stream-weights";
    case Fallback::ColumnStrips: return "column-strips";
  }
  return "?";
}

bool fits(const Partition& partition, int64_t capacity_bytes) {
  return partition.fallback != Fallback::None || partition.on_chip_bytes() <= capacity_bytes;
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// On-chip bytes of a single op computed in `strips` column strips: every line buffer shrinks to
// the columns one strip touches (its output columns, or the input columns under them).
int64_t strip_closure(const Analysis& analysis, const SpanClosure& closure, const Op& op, int64_t strips) {
  const Graph& g = analysis.graph();
  const Shape& out = g.output_of(op).shape;
  const int64_t out_cols = ceil_div(out.w, strips);
  int64_t bytes = 0;
  for (const LineBuffer& b : closure.buffers) {
    const Shape& shape = g.tensor(b.tensor).shape;
    int64_t cols = out_cols;
    if (b.tensor != op.output) {
      const bool windowed = op.kind == OpKind::Conv || op.kind == OpKind::MaxPool || op.kind == OpKind::AvgPool;
      cols = windowed ? (out_cols - 1) * op.window.stride_w + op.window.extent_w() : out_cols;
      if (op.kind == OpKind::Gemm || op.kind == OpKind::GlobalAvgPool) cols = ceil_div(shape.w, strips);
    }
    cols = std::min(cols, shape.w);
    bytes += b.rows * (b.row_bytes / shape.w) * cols;
  }
  return bytes;
}

// Input columns read twice because neighbouring strips' windows overlap.
int64_t halo_bytes(const Analysis& analysis, const Op& op, int64_t strips) {
  if (op.kind != OpKind::Conv && op.kind != OpKind::MaxPool && op.kind != OpKind::AvgPool) return 0;
  const int64_t overlap = std::max(0, op.window.extent_w() - op.window.stride_w);
  const Tensor& in = analysis.graph().input_of(op);
  const int64_t column_bytes = analysis.tensor_bytes(op.inputs[0]) / in.shape.w;
  return (strips - 1) * std::min(overlap, in.shape.w) * column_bytes;
}

void apply_fallback(const Analysis& analysis, const PlanOptions& options, Partition& p, const SpanClosure& closure) {
  const Graph& g = analysis.graph();
  const Op& op = g.op(p.first_op);
  const int64_t capacity = options.capacity_bytes;
  const int64_t filters = p.filter_bytes;
  const auto stream_filters = [&](int64_t buffer) {
    p.filter_bytes = 0;
    p.streamed_filter_bytes = filters;
    p.stream_buffer_bytes = buffer;
    return ceil_div(filters, options.batch);
  };

  if (p.closure_bytes < capacity) {
    // Activations fit; the filters do not: keep the activations and stream filter tiles through
    // the rest of the chip, once per mini-batch.
    p.fallback = Fallback::StreamWeights;
    p.fallback_bytes = stream_filters(capacity - p.closure_bytes);
    p.note = fmt::format("filters ({}) exceed the chip: streamed once per mini-batch of {}", format_bytes(filters),
                         options.batch);
    return;
  }
  const int64_t out_w = g.output_of(op).shape.w;
  const auto strips_fit = [&](int64_t strips) { return strip_closure(analysis, closure, op, strips) < capacity; };
  if (!strips_fit(out_w)) {
    fail("{}: on-chip capacity {} is too small for any plan: node \"{}\" ({}) needs more than {} even in "
         "one-column strips",
         g.source, format_bytes(static_cast<double>(capacity)), op.name, to_string(op.kind),
         format_bytes(static_cast<double>(strip_closure(analysis, closure, op, out_w))));
  }
  // Fewest strips that fit (on-chip bytes shrink as strips narrow), so the least halo is re-read.
  int64_t too_few = 1;
  int64_t enough = out_w;
  while (enough - too_few > 1) {
    const int64_t mid = too_few + (enough - too_few) / 2;
    (strips_fit(mid) ? enough : too_few) = mid;
  }
  const int64_t on_chip = strip_closure(analysis, closure, op, enough);
  const bool filters_fit = on_chip + filters <= capacity;
  p.fallback = Fallback::ColumnStrips;
  p.column_strips = enough;
  p.closure_bytes = on_chip;
  const int64_t halo = halo_bytes(analysis, op, enough);
  p.fallback_bytes = halo + (filters_fit ? 0 : stream_filters(capacity - on_chip));
  p.note = fmt::format("line buffers ({}) exceed the chip: {} column strips re-read {} of halo per image{}",
                       format_bytes(static_cast<double>(closure.bytes)), enough, format_bytes(static_cast<double>(halo)),
                       filters_fit ? "" : "; filters streamed once per mini-batch");
}

}  // namespace

Partition make_partition(const Analysis& analysis, const PlanOptions& options, OpId first, OpId last) {
  const Graph& g = analysis.graph();
  const SpanClosure closure = analysis.closure(first, last);
  const SpanBoundary boundary = analysis.boundary(first, last);
  Partition p;
  p.first_op = first;
  p.last_op = last;
  for (OpId o = first; o <= last; ++o) p.ops.push_back(g.op(o).name);
  for (TensorId t : boundary.inputs) p.inputs.push_back(g.tensor(t).name);
  for (TensorId t : boundary.outputs) p.outputs.push_back(g.tensor(t).name);
  p.closure_bytes = closure.bytes;
  p.filter_bytes = boundary.filter_bytes;
  p.boundary_in_bytes = boundary.input_bytes;
  p.boundary_out_bytes = boundary.output_bytes;
  p.macs = boundary.macs;
  if (first == last && p.on_chip_bytes() > options.capacity_bytes) apply_fallback(analysis, options, p, closure);
  return p;
}

Plan plan_from_starts(const Analysis& analysis, const PlanOptions& options, const std::vector<OpId>& starts,
                      std::string planner) {
  const Graph& g = analysis.graph();
  if (starts.empty() || starts.front() != 0) fail("a plan's first partition must start at op 0");
  Plan plan;
  plan.model = g.name;
  plan.model_source = g.source;
  plan.input_shape = g.tensor(g.inputs.at(0)).shape.str();
  plan.planner = std::move(planner);
  plan.capacity_bytes = options.capacity_bytes;
  plan.bytes_per_elem = options.analysis.bytes_per_elem;
  plan.granularity = options.analysis.granularity;
  plan.batch = options.batch;
  for (size_t i = 0; i < starts.size(); ++i) {
    const OpId first = starts[i];
    const OpId last = i + 1 < starts.size() ? starts[i + 1] - 1 : analysis.op_count() - 1;
    if (last < first) fail("partition starts must increase: {} then {}", first, last + 1);
    Partition p = make_partition(analysis, options, first, last);
    if (!fits(p, options.capacity_bytes)) {
      fail("partition of ops {}..{} needs {} on chip, more than the capacity {}", g.op(first).name, g.op(last).name,
           format_bytes(static_cast<double>(p.on_chip_bytes())),
           format_bytes(static_cast<double>(options.capacity_bytes)));
    }
    plan.traffic_bytes += p.traffic_bytes();
    plan.filter_bytes += p.filter_bytes;
    plan.partitions.push_back(std::move(p));
  }
  plan.base_case_bytes = analysis.base_case_activation_bytes() + ceil_div(analysis.total_filter_bytes(), options.batch);
  plan.full_reuse_bytes = analysis.full_reuse_activation_bytes();
  return plan;
}

}  // namespace occam
