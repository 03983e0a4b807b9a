// Planners that Occam is compared against, under the same accounting as Occam's own plans.
//
// - Greedy: grow a span until the next op no longer fits, then cut (a Plan, like Occam's).
// - Layer Fusion (Alwani, Chen, Ferdman, Milder: "Fused-Layer CNN Accelerators", MICRO 2016):
//   consecutive layers are fused into pyramids. The last layer's output is computed tile by tile
//   (row-major over the tile grid); each tile's pyramid is back-propagated through the group. The
//   overlaps between neighbouring pyramids are either recomputed (every pyramid computes its whole
//   region and reads its whole input region from DRAM) or reused (each layer computes only the
//   rows and columns that are new for this tile, and keeps the overlap its consumer still needs
//   in a "top" buffer of full width and a "left" buffer of the tile's height). A group runs on one
//   chip for a whole mini-batch, so its filters are loaded once per mini-batch and must fit on chip
//   beside the fused buffers. The original handles chains of convolution and pooling layers; we
//   also allow residual and inception structure inside a group (every op back-propagates its
//   region to all its inputs), as long as the group has a single output tensor.
//   Storage per tensor of a reuse group: C x (overlap_rows x W + new_rows x overlap_cols +
//   new_rows x new_cols); with a 1x1 output tile over VGG's conv1_1..conv3_1 at 4 bytes per
//   element this is 370,720 bytes = 362 KiB, the paper's 362 KB.
#pragma once

#include "occam/analysis.hpp"
#include "occam/plan.hpp"

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace occam {

// Occam's cost accounting with a greedy cut rule instead of the dynamic programme.
Plan plan_greedy(const Analysis& analysis, const PlanOptions& options);

enum class FusionOverlap : uint8_t { Reuse, Recompute };
std::string_view to_string(FusionOverlap overlap);

struct FusedGroup {
  OpId first_op = 0;
  OpId last_op = 0;
  bool fused = false;           // false: one op run layer by layer
  int64_t tile_h = 0, tile_w = 0;  // output tile of the last op (fused groups)
  int64_t buffer_bytes = 0;     // on-chip feature-map storage: pyramid tiles and reuse buffers
  int64_t filter_bytes = 0;     // loaded once per mini-batch
  int64_t input_bytes = 0;      // per image: DRAM reads of the group's inputs, re-reads included
  int64_t output_bytes = 0;     // per image
  int64_t macs = 0;             // per image, recomputation included
  int64_t activation_traffic() const { return input_bytes + output_bytes; }
};

// Ops [first, last] fused into one pyramid with the given output tile, or nullopt when the span
// cannot be fused: it contains an op that needs its whole input (fully connected, global
// pooling), or a tensor other than the last op's output leaves the span.
std::optional<FusedGroup> fuse_span(const Analysis& analysis, OpId first, OpId last, int64_t tile_h, int64_t tile_w,
                                    FusionOverlap overlap);
// Ops [first, last] fused with the largest square output tile whose buffers and filters fit in
// `capacity_bytes` (filters only when `filters_on_chip`), or nullopt if none fits or the span
// cannot be fused. Larger tiles recompute and re-read less; under reuse they cost the same
// traffic, and the largest is kept because it needs the fewest pyramid steps.
std::optional<FusedGroup> fuse_span_fitting(const Analysis& analysis, OpId first, OpId last, int64_t capacity_bytes,
                                            FusionOverlap overlap, bool filters_on_chip = true);

struct LayerFusionOptions {
  int64_t capacity_bytes = 1 << 20;
  int64_t batch = 1;  // filters of each group are loaded once per mini-batch
  FusionOverlap overlap = FusionOverlap::Reuse;
};

struct LayerFusionPlan {
  FusionOverlap overlap = FusionOverlap::Reuse;
  int64_t capacity_bytes = 0;
  int64_t batch = 1;
  std::vector<FusedGroup> groups;  // cover the topological order
  int64_t activation_bytes = 0;    // per image
  int64_t filter_bytes = 0;        // per mini-batch
};

// The grouping with the least per-image traffic (activations + filters / batch): the same dynamic
// programme over cut points as Occam's, with Layer Fusion's storage model and tile search per group,
// and single ops run layer by layer wherever fusing does not fit.
LayerFusionPlan plan_layer_fusion(const Analysis& analysis, const LayerFusionOptions& options);

}  // namespace occam
