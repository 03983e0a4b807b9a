// The step list of one partition of a fused (row-streaming) execution, and the line buffer each of
// its tensors needs under it.
//
// The order comes from Analysis::span_events: the depth-first row schedule whose peak live memory is
// the span's dependence closure. Steps may be coarsened to bands: op o then runs band_rows[o] of its
// events per step, as soon as the schedule has asked for that many and their input rows exist, so
// that a kernel call has more work; rows then live longer, and the line buffers are re-measured by
// simulating the banded order with the closure's rules (a row is live from its production, or its
// just-in-time load, until every reader in the span has moved past it). With one row per band the
// steps are exactly span_events and the line buffers exactly closure().buffers.
#pragma once

#include "occam/analysis.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace occam::exec {

// How a partition holds a tensor it touches.
enum class TensorRole : uint8_t {
  None,    // not touched by the partition
  Whole,   // whole image in memory (a partition boundary, or caller memory in NHWC-equal layout)
  Ring,    // circular line buffer of the rows live at once
  Loaded,  // a ring filled from caller memory by Load steps just before the rows are needed
  Stored,  // a ring whose rows Store steps copy out to caller memory as soon as they are produced
};

enum class StepKind : uint8_t { Compute, Load, Store };

struct FusedStep {
  StepKind kind = StepKind::Compute;
  OpId op = -1;          // Compute
  TensorId tensor = -1;  // Load, Store
  // Compute: first event (an output row, or an absorbed input row for reductions); Load/Store: row.
  int32_t first = 0;
  int32_t count = 0;
};

struct SpanSchedule {
  std::vector<FusedStep> steps;
  std::vector<LineBuffer> rings;  // every Ring/Loaded/Stored tensor: most rows live at once
  int64_t ring_bytes() const;
};

// `roles` is indexed by tensor; `band_rows` by op - first (each >= 1).
SpanSchedule schedule_span(const Analysis& analysis, OpId first, OpId last, std::span<const int> band_rows,
                           std::span<const TensorRole> roles);

}  // namespace occam::exec
