// Plans: how a graph is cut into partitions, each of which runs with full reuse on its own chip.
//
// A Plan is a plain value: it is made by a planner from an Analysis, serialised to JSON, and read
// by the simulator and the executors, which never re-derive it. Traffic is counted per image in
// steady state: a partition's filters and closure stay resident on its chip while images stream
// through, so it only moves its boundary inputs and outputs (plus any fallback traffic). Filters
// are loaded once per stream and are reported separately.
#pragma once

#include "occam/analysis.hpp"
#include "occam/model.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace occam {

// What a partition does when even a single op does not fit on chip with full reuse.
enum class Fallback : uint8_t {
  None,
  // The op's filters do not fit: they are streamed from DRAM once per mini-batch (e.g. VGG FC6).
  StreamWeights,
  // The op's line buffers do not fit: its output is computed in column strips, re-reading the
  // strips' overlapping input columns (halo); filters stream per mini-batch if they do not fit either.
  ColumnStrips,
};
std::string_view to_string(Fallback fallback);

struct Partition {
  OpId first_op = 0;
  OpId last_op = 0;
  std::vector<std::string> ops;  // op names, so that a plan can be checked against its model
  std::vector<std::string> inputs;   // boundary tensors read from DRAM
  std::vector<std::string> outputs;  // boundary tensors written to DRAM
  int64_t closure_bytes = 0;   // on-chip bytes for activations (line buffers)
  int64_t filter_bytes = 0;    // filters resident on chip, loaded once per stream
  int64_t streamed_filter_bytes = 0;  // filters that do not fit: streamed once per mini-batch
  int64_t stream_buffer_bytes = 0;    // on-chip staging for streamed filter tiles
  int64_t boundary_in_bytes = 0;   // per image
  int64_t boundary_out_bytes = 0;  // per image
  int64_t macs = 0;                // per image
  Fallback fallback = Fallback::None;
  int64_t fallback_bytes = 0;  // extra DRAM bytes per image caused by the fallback
  int64_t column_strips = 1;   // ColumnStrips: how many strips
  std::string note;            // human-readable explanation of the fallback

  int64_t traffic_bytes() const { return boundary_in_bytes + boundary_out_bytes + fallback_bytes; }
  int64_t on_chip_bytes() const { return closure_bytes + filter_bytes + stream_buffer_bytes; }
  bool operator==(const Partition&) const = default;
};

struct PlanOptions {
  int64_t capacity_bytes = 1 << 20;  // on-chip memory per chip
  int64_t batch = 1;                 // mini-batch over which streamed filters are amortised
  AnalysisOptions analysis;
};

struct Plan {
  std::string model;        // graph name
  std::string model_source;  // zoo name or ONNX path
  std::string input_shape;   // e.g. 1x3x224x224
  std::string planner;       // "occam-dp", "greedy", ...
  int64_t capacity_bytes = 0;
  int bytes_per_elem = 0;
  Granularity granularity = Granularity::Row;
  int64_t batch = 1;
  std::vector<Partition> partitions;
  int64_t traffic_bytes = 0;          // per image: boundaries + fallbacks
  int64_t filter_bytes = 0;           // resident filters, loaded once per stream
  int64_t base_case_bytes = 0;        // per image: layer by layer, filters once per mini-batch
  int64_t full_reuse_bytes = 0;       // per image lower bound (network input + output)

  // Off-chip bytes for a stream of `images`: filters once, then per-image traffic.
  int64_t stream_bytes(int64_t images) const { return filter_bytes + images * traffic_bytes; }
  bool operator==(const Plan&) const = default;
};

// Every multi-op span that fits a capacity (closure + filters), with its on-chip bytes and
// traffic: computed once, then shared by plans at any capacity up to it (capacity sweeps).
class SpanTable {
public:
  struct Span {
    OpId last = 0;
    int64_t on_chip_bytes = 0;
    int64_t traffic_bytes = 0;
  };

  SpanTable(const Analysis& analysis, int64_t max_capacity_bytes);
  const Analysis& analysis() const { return *analysis_; }
  int64_t max_capacity_bytes() const { return max_capacity_bytes_; }
  // Spans [first, last] with last > first that fit, by increasing last.
  const std::vector<Span>& starting_at(OpId first) const { return spans_.at(static_cast<size_t>(first)); }

private:
  const Analysis* analysis_;
  int64_t max_capacity_bytes_;
  std::vector<std::vector<Span>> spans_;
};

// Least per-image traffic over all partitionings of the graph's topological order into contiguous
// spans, each fitting `capacity_bytes` (closure + filters) or being a single op with a fallback.
// Throws an Error naming the op when an op cannot run even with the fallbacks.
Plan plan_optimal(const Analysis& analysis, const PlanOptions& options);
// The same from a precomputed table; options.capacity_bytes must not exceed the table's.
Plan plan_optimal(const SpanTable& table, const PlanOptions& options);

// Fills a Plan from explicit cut points (partition i = ops [starts[i], starts[i+1]) ): the
// accounting shared by every planner and by tests that enumerate cut sets.
Plan plan_from_starts(const Analysis& analysis, const PlanOptions& options, const std::vector<OpId>& starts,
                      std::string planner);

// Accounting of one partition spanning ops [first, last]. A single op that does not fit gets a
// fallback; a longer span that does not fit is returned as is (fits() is false). Throws an Error
// naming the op when a single op cannot run even with the fallbacks.
Partition make_partition(const Analysis& analysis, const PlanOptions& options, OpId first, OpId last);
bool fits(const Partition& partition, int64_t capacity_bytes);

nlohmann::json to_json(const Plan& plan);
Plan plan_from_json(const nlohmann::json& json);  // throws an Error naming the missing/bad field
void save_plan(const Plan& plan, const std::filesystem::path& path);
Plan load_plan(const std::filesystem::path& path);
// Throws an Error if `plan` was not made for `graph` (different ops or shapes).
void check_plan_matches(const Plan& plan, const Graph& graph);

}  // namespace occam
