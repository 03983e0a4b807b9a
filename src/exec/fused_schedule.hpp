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

#include "exec/arena.hpp"
#include "occam/analysis.hpp"
#include "occam/plan.hpp"

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

// Zero: rows of zeros written beyond a tensor's top or bottom edge (ZeroRows), executor only.
enum class StepKind : uint8_t { Compute, Load, Store, Zero };

struct FusedStep {
  StepKind kind = StepKind::Compute;
  OpId op = -1;          // Compute
  TensorId tensor = -1;  // Load, Store, Zero
  // Compute: first event (an output row, or an absorbed input row for reductions); Load/Store/Zero: row.
  int32_t first = 0;
  int32_t count = 0;
};

struct SpanSchedule {
  std::vector<FusedStep> steps;
  std::vector<LineBuffer> rings;  // every Ring/Loaded/Stored tensor: most rows live at once
  int64_t ring_bytes() const;
  // The rings placed in one block by lifetime, as the executor places them: each lives from the
  // first to the last step touching its tensor, and rings never alive at once share bytes (a
  // tensor held whole for one squeeze-and-excitation block, say, only while that block runs).
  // Offsets per ring, each ring's bytes rounded up to `alignment`. `share_class` (indexed by
  // tensor; empty: none) lets rings of one class >= 0 share bytes also while both tensors are in
  // use, where no step falls between the production and the last read of a row of each: in row
  // streaming every tensor is in use the whole image, but a depthwise convolution's output row,
  // say, lives only from its step to the projection's next one. -1: never shared so.
  ArenaLayout packed_rings(const Graph& graph, int64_t alignment, std::span<const int> share_class = {}) const;
};

// Rows of zeros a line buffer holds beyond its tensor's top and bottom edges, where the windows of
// its readers reach into the padding: a window then is a whole kernel's rows in the buffer, read as
// one, and the padding needs no band shape of its own. The zero rows are live like produced rows:
// from the start of the partition until every reader has moved past them (above), and from the
// step whose window first reaches below the tensor until the end (below).
struct ZeroRows {
  int32_t above = 0;
  int32_t below = 0;
};

// `roles` is indexed by tensor; `band_rows` by op - first (each >= 1); `zero_rows` by tensor, or
// empty for none.
SpanSchedule schedule_span(const Analysis& analysis, OpId first, OpId last, std::span<const int> band_rows,
                           std::span<const TensorRole> roles, std::span<const ZeroRows> zero_rows = {});

// Rows of a tensor are NHWC in line buffers; where that is also NCHW order (one channel, or one
// pixel), the caller's tensors are read and written in place.
inline bool nhwc_equals_nchw(const Shape& s) { return s.c == 1 || s.h * s.w == 1; }

// Which partition of `plan` runs each op (indexed by op).
std::vector<int> partition_of_ops(const Plan& plan, size_t op_count);

// A tensor produced in one partition and read in a later one, other than the caller's (graph
// inputs and outputs): held whole in memory from its producer's partition to its last reader's.
struct BoundarySpan {
  int first = -1;  // -1: not a boundary
  int last = -1;
};
// Indexed by tensor.
std::vector<BoundarySpan> boundary_spans(const Graph& graph, std::span<const int> partition_of);
// Bytes of the boundary tensors held in memory while partition `p` runs.
int64_t live_boundary_bytes(const Analysis& analysis, std::span<const BoundarySpan> boundaries, int p);

// How partition `p` holds each tensor (indexed by tensor): caller tensors (graph inputs and
// outputs) in place where their layout allows, else loaded into (inputs, and outputs an earlier
// partition stored) or stored from (outputs produced here) line buffers; boundaries whole; every
// other tensor the partition touches as a ring.
std::vector<TensorRole> partition_roles(const Graph& graph, const Plan& plan, std::span<const BoundarySpan> boundaries,
                                        size_t p);

// A convolution whose filters are large beside its output rows re-reads them from memory at every
// step; with b output rows per step it reads them 1/b as often. The automatic bands give each
// convolution its whole tensor per step where that fits, else enough rows that its filter bytes are
// at most this many times the output bytes of a step, and row-wise ops (elementwise, Add, Concat)
// the widest band of their producers so that they do not split their producers' bands again.
constexpr int64_t kFilterBytesPerOutputByte = 8;

// Rows at most this wide (a 224x224 net's: mobilenet_v2's widest is 43 KiB) do little work per
// step, so a partition whose whole tensors do not fit its capacity still runs bands of a few hundred
// KiB where they fit. Wider rows stream one at a time: at 1024x1024 (mobilenet_v2's rows 64-192 KiB)
// bands of 128 KiB measured 0.69x the reference against 0.92x for single rows, at 1.6x the memory.
constexpr int64_t kSmallRowBytes = 64 << 10;

// Events per step of every op (indexed by op). band_bytes > 0: as many rows as fit in band_bytes.
// band_bytes == 0: automatic, within the plan's capacity. A partition whose whole tensors fit
// beside its filters (line buffers of whole tensors, packed by lifetime) runs each op's rows in one
// step: nothing then goes off chip that row streaming would keep, and both threads share every op
// instead of passing rows down a pipeline, which is what small images need (a 224x224 net of
// thousands of one-row steps spends its time between them, and a squeeze-and-excitation block's
// global pool stalls a pipeline). Otherwise, where every row is small (kSmallRowBytes), the same
// for uniform bands of 512, 256 or 128 KiB per step, the largest that fits. Otherwise the bands
// above, taken greedily, the largest filter-to-row ratio first, each convolution's whole tensor
// where it fits, else its band, as long as the line buffers (re-measured with schedule_span) and the
// filters fit the capacity (`filter_bands`; without them those convolutions run one row per step).
// Whole tensors first: densenet121 at 224 (one partition, 26.5 MiB of filters in a 32 MiB plan)
// ran 0.96x the reference with bands alone and 0.99-1.00x so, in 4.57 MiB of activations against
// 5.27; resnext50_32x4d 0.87x against 0.92x.
// A plan without spare capacity (or a partition whose line buffers do not fit) runs one row per
// step. A partition whose filters exceed the capacity (Fallback::StreamWeights: one op between
// boundaries held whole) runs each op's rows in one step, so that its filters stream from memory
// once per image as the plan counts them, not once per row (wide_resnet50_2's 3x3 convolutions of
// 1024 channels, 36 MiB of filters over 7 rows; 0.77 -> 0.80x the reference on the whole net).
std::vector<int> step_bands(const Analysis& analysis, const Plan& plan, int64_t band_bytes, bool filter_bands = true);

}  // namespace occam::exec
