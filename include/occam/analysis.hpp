// Analyses of a Graph, computed once into a value that the planner, simulator and executors read.
//
// The central one is the dependence closure of a span of ops (a contiguous range of the graph's
// topological order): the least on-chip memory that lets the span run with full reuse, i.e. every
// element of the span's input read once, every intermediate element produced once and kept on chip
// from its production until its last consumer in the span has used it.
//
// It is computed by simulating one symbolic row schedule of the whole graph: the network input
// arrives row by row and, after each row, the deepest op that can produce an output row does so
// (depth first), so rows are consumed as early as possible. A span's schedule is this schedule
// restricted to the span's ops; external input rows are loaded just before their first use and rows
// leaving the span are written out as soon as they are produced. The same mechanism handles chains,
// residual skips (rows of the short path wait for the long path), inception branches, pooling and
// reductions. See docs/closure.md for the model and its closed form on chains.
#pragma once

#include "occam/model.hpp"

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace occam {

enum class Granularity : uint8_t {
  Row,      // a row (W x C elements) is the unit of production and of freeing
  Element,  // a row is produced and consumed column by column: only a kernel-wide strip is transient
};
std::string_view to_string(Granularity granularity);
Granularity parse_granularity(std::string_view text);

struct AnalysisOptions {
  int bytes_per_elem = 0;  // 0: each tensor's own element size
  Granularity granularity = Granularity::Row;
};

// Receptive field of a tensor's element with respect to the graph input, along H and W.
struct ReceptiveField {
  int64_t size_h = 1, size_w = 1;
  int64_t jump_h = 1, jump_w = 1;  // input rows/columns between neighbouring elements
};

struct OpStats {
  int64_t macs = 0;
  int64_t filter_bytes = 0;
  int64_t input_bytes = 0;   // all activation inputs, per image
  int64_t output_bytes = 0;  // per image
  ReceptiveField receptive_field;
};

// One event of the symbolic schedule: `op` produces output row `row`.
struct RowEvent {
  OpId op = -1;
  int32_t row = 0;
};

// How many rows of one tensor a span holds at most at once: the size of its line buffer.
struct LineBuffer {
  TensorId tensor = -1;
  int64_t rows = 0;
  int64_t row_bytes = 0;
};

struct SpanClosure {
  int64_t bytes = 0;  // peak of simultaneously live bytes: the dependence closure
  // Per-tensor maxima (internal tensors and external inputs); their sum is what an executor with one
  // circular buffer per tensor allocates, >= bytes.
  std::vector<LineBuffer> buffers;
  int64_t buffer_bytes() const;
};

struct SpanBoundary {
  std::vector<TensorId> inputs;   // produced outside the span (or graph inputs), read inside
  std::vector<TensorId> outputs;  // produced inside, read outside (or graph outputs)
  int64_t input_bytes = 0;        // per image
  int64_t output_bytes = 0;       // per image
  int64_t filter_bytes = 0;
  int64_t macs = 0;
};

class Analysis {
public:
  Analysis(const Graph& graph, AnalysisOptions options = {});

  const Graph& graph() const { return *graph_; }
  const AnalysisOptions& options() const { return options_; }
  int op_count() const { return static_cast<int>(graph_->ops.size()); }
  const OpStats& op(OpId id) const { return stats_.at(static_cast<size_t>(id)); }
  int64_t tensor_bytes(TensorId id) const;  // per image, under the analysis' element size
  const std::vector<RowEvent>& schedule() const { return schedule_; }

  // Dependence closure of ops [first, last] (inclusive, topological indices).
  SpanClosure closure(OpId first, OpId last) const;
  // closure(first, last).bytes for last = first, first + 1, ... in one incremental pass (each
  // extension only lengthens row lifetimes, kept as range additions over the schedule); calls
  // visit(last, bytes) and stops when it returns false. O(rows + events) per extension instead of
  // a fresh simulation per span: this is what makes the DP and capacity sweeps fast.
  void closures_from(OpId first, const std::function<bool(OpId last, int64_t bytes)>& visit) const;
  SpanBoundary boundary(OpId first, OpId last) const;
  // The span's row events in schedule order: the order in which a row-streaming executor runs
  // the span with exactly closure(first, last)'s line buffers.
  std::vector<RowEvent> span_events(OpId first, OpId last) const;

  // Per image: network inputs read once, network outputs written once (filters not included).
  int64_t full_reuse_activation_bytes() const;
  int64_t total_filter_bytes() const;
  // Layer by layer, per image: every op reads its inputs and writes its output; filters are read
  // once per mini-batch of `batch` images. Concat and Flatten are views and move nothing.
  int64_t base_case_activation_bytes() const;

private:
  std::vector<int32_t> span_positions(OpId first, OpId last) const;

  const Graph* graph_;
  AnalysisOptions options_;
  std::vector<OpStats> stats_;
  std::vector<RowEvent> schedule_;
  std::vector<std::vector<int32_t>> op_events_;  // per op: positions of its events in schedule_
};

}  // namespace occam
