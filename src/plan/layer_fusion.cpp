// Layer Fusion (Alwani et al., MICRO 2016) as a baseline: the pyramid cost model, the tile-size
// search and the grouping. See include/occam/baselines.hpp for the model.
//
// The tile grid is separable: along each axis, the output is cut into tiles of tile_h rows (or
// tile_w columns) and every tile's needs are back-propagated through the group as intervals. The
// per-axis figures (rows new to a tile, rows reused from the previous tile, region size) combine
// into per-tensor storage, DRAM reads and computed elements as products of the two axes.
#include "occam/baselines.hpp"
#include "occam/error.hpp"

#include <algorithm>
#include <limits>

namespace occam {

std::string_view to_string(FusionOverlap overlap) {
  return overlap == FusionOverlap::Reuse ? "reuse" : "recompute";
}

namespace {

struct Interval {
  int64_t lo = 0, hi = 0;
  bool empty() const { return hi <= lo; }
  int64_t size() const { return std::max<int64_t>(0, hi - lo); }
};

Interval hull(Interval a, Interval b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return {std::min(a.lo, b.lo), std::max(a.hi, b.hi)};
}

bool is_windowed(OpKind kind) { return kind == OpKind::Conv || kind == OpKind::MaxPool || kind == OpKind::AvgPool; }

// Ops whose every output element depends on a bounded neighbourhood of their inputs.
bool is_local(OpKind kind) {
  switch (kind) {
    case OpKind::Conv:
    case OpKind::MaxPool:
    case OpKind::AvgPool:
    case OpKind::BatchNorm:
    case OpKind::Add:
    case OpKind::Sub:
    case OpKind::Mul:
    case OpKind::Concat:
    case OpKind::Slice:
    case OpKind::ChannelShuffle:
    case OpKind::Activation:
    case OpKind::Identity: return true;
    default: return false;
  }
}

int64_t extent(const Shape& shape, int axis) { return axis == 0 ? shape.h : shape.w; }

// Rows (axis 0) or columns (axis 1) of input k that `op` needs to produce `out`.
Interval input_interval(const Graph& g, const Op& op, size_t k, Interval out, int axis) {
  if (out.empty()) return {};
  const int64_t n = extent(g.input_of(op, k).shape, axis);
  Interval in = out;
  if (is_windowed(op.kind)) {
    const Window& w = op.window;
    const int64_t stride = axis == 0 ? w.stride_h : w.stride_w;
    const int64_t pad = axis == 0 ? w.pad_top : w.pad_left;
    const int64_t span = axis == 0 ? w.extent_h() : w.extent_w();
    in = {out.lo * stride - pad, (out.hi - 1) * stride - pad + span};
  } else if (n == 1) {
    in = {0, 1};  // broadcast along this axis
  }
  return {std::clamp<int64_t>(in.lo, 0, n), std::clamp<int64_t>(in.hi, 0, n)};
}

// What one axis of the tile grid costs, per tensor of the group.
struct AxisCost {
  std::vector<int64_t> new_max;      // reuse: most rows a single tile adds
  std::vector<int64_t> overlap_max;  // reuse: most rows a tile takes from earlier tiles
  std::vector<int64_t> region_max;   // recompute: largest region of one tile
  std::vector<int64_t> computed;     // rows computed (or read, for group inputs) over all tiles
};

class Group {
public:
  Group(const Analysis& analysis, OpId first, OpId last) : analysis_(analysis), g_(analysis.graph()), first_(first), last_(last) {
    local_.assign(g_.tensors.size(), -1);
    for (OpId o = first; o <= last; ++o) {
      const Op& op = g_.op(o);
      for (TensorId in : op.inputs) add_tensor(in);
      add_tensor(op.output);
    }
  }

  // One pyramid needs local ops only, and only the last op's output may leave the group.
  bool fusable() const {
    for (OpId o = first_; o <= last_; ++o) {
      const Op& op = g_.op(o);
      if (!is_local(op.kind)) return false;
      if (o == last_) continue;
      if (g_.is_output(op.output)) return false;
      for (OpId c : g_.tensor(op.output).consumers) {
        if (c < first_ || c > last_) return false;
      }
    }
    return true;
  }

  AxisCost axis_cost(int axis, int64_t tile, FusionOverlap overlap) const {
    const size_t n = tensors_.size();
    AxisCost cost{std::vector<int64_t>(n, 0), std::vector<int64_t>(n, 0), std::vector<int64_t>(n, 0),
                  std::vector<int64_t>(n, 0)};
    const TensorId out = g_.op(last_).output;
    const int64_t length = extent(g_.tensor(out).shape, axis);
    std::vector<int64_t> done(n, 0);  // reuse: rows [0, done) of each tensor exist already
    std::vector<Interval> need(n);
    const bool single_tile = tile >= length;
    bool first_tile = true;
    const auto account = [&](size_t t) -> Interval {
      // The rows this tile produces (or reads) for tensor t, and the bookkeeping behind them.
      const Interval region = need[t];
      if (overlap == FusionOverlap::Recompute) {
        cost.region_max[t] = std::max(cost.region_max[t], region.size());
        cost.computed[t] += region.size();
        return region;
      }
      const Interval fresh{done[t], std::max(done[t], region.hi)};
      // Buffers are sized for the steady state: the first tile's extra rows (those later tiles
      // reuse) sit in the still-empty overlap buffer.
      if (!first_tile || single_tile) cost.new_max[t] = std::max(cost.new_max[t], fresh.size());
      cost.overlap_max[t] = std::max(cost.overlap_max[t], Interval{region.lo, std::min(region.hi, done[t])}.size());
      cost.computed[t] += fresh.size();
      done[t] = fresh.hi;
      return fresh;
    };
    for (int64_t lo = 0; lo < length; lo += tile, first_tile = false) {
      std::fill(need.begin(), need.end(), Interval{});
      need[index(out)] = {lo, std::min(length, lo + tile)};
      for (OpId o = last_; o >= first_; --o) {
        const Op& op = g_.op(o);
        const Interval produced = account(index(op.output));
        for (size_t k = 0; k < op.inputs.size(); ++k) {
          const size_t in = index(op.inputs[k]);
          need[in] = hull(need[in], input_interval(g_, op, k, produced, axis));
        }
      }
      for (size_t t = 0; t < n; ++t) {
        if (external_[t]) account(t);
      }
    }
    return cost;
  }

  FusedGroup cost(int64_t tile_h, int64_t tile_w, FusionOverlap overlap) const {
    const AxisCost rows = axis_cost(0, tile_h, overlap);
    const AxisCost cols = axis_cost(1, tile_w, overlap);
    FusedGroup group;
    group.first_op = first_;
    group.last_op = last_;
    group.fused = true;
    group.tile_h = tile_h;
    group.tile_w = tile_w;
    for (size_t t = 0; t < tensors_.size(); ++t) {
      const int64_t width = g_.tensor(tensors_[t]).shape.w;
      if (overlap == FusionOverlap::Reuse) {
        group.buffer_bytes += pixel_bytes(t) * (rows.overlap_max[t] * width + rows.new_max[t] * cols.overlap_max[t] +
                                                rows.new_max[t] * cols.new_max[t]);
      } else {
        group.buffer_bytes += pixel_bytes(t) * rows.region_max[t] * cols.region_max[t];
      }
      if (external_[t]) group.input_bytes += pixel_bytes(t) * rows.computed[t] * cols.computed[t];
    }
    const size_t out = index(g_.op(last_).output);
    group.output_bytes = pixel_bytes(out) * rows.computed[out] * cols.computed[out];
    for (OpId o = first_; o <= last_; ++o) {
      const Op& op = g_.op(o);
      const Shape& shape = g_.output_of(op).shape;
      const size_t y = index(op.output);
      const double fraction = static_cast<double>(rows.computed[y] * cols.computed[y]) / static_cast<double>(shape.h * shape.w);
      group.macs += static_cast<int64_t>(static_cast<double>(analysis_.op(o).macs) * fraction + 0.5);
      group.filter_bytes += analysis_.op(o).filter_bytes;
    }
    return group;
  }

  int64_t output_extent(int axis) const { return extent(g_.output_of(g_.op(last_)).shape, axis); }

private:
  void add_tensor(TensorId t) {
    if (local_[static_cast<size_t>(t)] >= 0) return;
    local_[static_cast<size_t>(t)] = static_cast<int>(tensors_.size());
    tensors_.push_back(t);
    const OpId producer = g_.tensor(t).producer;
    external_.push_back(producer < first_ || producer > last_);
  }
  size_t index(TensorId t) const { return static_cast<size_t>(local_[static_cast<size_t>(t)]); }
  // Bytes of one spatial position across all channels.
  int64_t pixel_bytes(size_t t) const {
    const Shape& shape = g_.tensor(tensors_[t]).shape;
    return analysis_.tensor_bytes(tensors_[t]) / (shape.h * shape.w);
  }

  const Analysis& analysis_;
  const Graph& g_;
  OpId first_, last_;
  std::vector<int> local_;  // graph tensor -> index in tensors_, or -1
  std::vector<TensorId> tensors_;
  std::vector<bool> external_;  // read from DRAM: produced outside the group
};

void check_span(const Analysis& analysis, OpId first, OpId last) {
  if (first < 0 || last < first || last >= analysis.op_count()) {
    fail("layer fusion: invalid span [{}, {}] of a graph with {} ops", first, last, analysis.op_count());
  }
}

// One op run layer by layer: reads its inputs, writes its output, loads its filters per mini-batch.
FusedGroup single_op(const Analysis& analysis, OpId op) {
  const OpStats& stats = analysis.op(op);
  const OpKind kind = analysis.graph().op(op).kind;
  const bool view = kind == OpKind::Concat || kind == OpKind::Flatten;  // moves nothing, as in the base case
  FusedGroup group;
  group.first_op = op;
  group.last_op = op;
  group.input_bytes = view ? 0 : stats.input_bytes;
  group.output_bytes = view ? 0 : stats.output_bytes;
  group.filter_bytes = stats.filter_bytes;
  group.macs = stats.macs;
  return group;
}

// The largest square output tile whose buffers (and filters) fit, if any. Storage grows with the
// tile, so a binary search finds it.
std::optional<FusedGroup> fit_group(const Group& group, int64_t capacity_bytes, FusionOverlap overlap,
                                    bool filters_on_chip) {
  const int64_t rows = group.output_extent(0);
  const int64_t cols = group.output_extent(1);
  const auto at = [&](int64_t tile) { return group.cost(std::min(tile, rows), std::min(tile, cols), overlap); };
  const auto fits = [&](const FusedGroup& g) {
    return g.buffer_bytes + (filters_on_chip ? g.filter_bytes : 0) <= capacity_bytes;
  };
  FusedGroup best = at(1);
  if (!fits(best)) return std::nullopt;
  int64_t lo = 1;
  int64_t hi = std::max(rows, cols);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    FusedGroup candidate = at(mid);
    if (fits(candidate)) {
      lo = mid;
      best = std::move(candidate);
    } else {
      hi = mid - 1;
    }
  }
  return best;
}

}  // namespace

std::optional<FusedGroup> fuse_span(const Analysis& analysis, OpId first, OpId last, int64_t tile_h, int64_t tile_w,
                                    FusionOverlap overlap) {
  check_span(analysis, first, last);
  if (tile_h < 1 || tile_w < 1) fail("layer fusion: tile {}x{} must be at least 1x1", tile_h, tile_w);
  const Group group(analysis, first, last);
  if (!group.fusable()) return std::nullopt;
  return group.cost(std::min(tile_h, group.output_extent(0)), std::min(tile_w, group.output_extent(1)), overlap);
}

std::optional<FusedGroup> fuse_span_fitting(const Analysis& analysis, OpId first, OpId last, int64_t capacity_bytes,
                                            FusionOverlap overlap, bool filters_on_chip) {
  check_span(analysis, first, last);
  const Group group(analysis, first, last);
  if (!group.fusable()) return std::nullopt;
  return fit_group(group, capacity_bytes, overlap, filters_on_chip);
}

LayerFusionPlan plan_layer_fusion(const Analysis& analysis, const LayerFusionOptions& options) {
  if (options.capacity_bytes < 1) fail("layer fusion: on-chip capacity must be at least 1 byte");
  if (options.batch < 1) fail("layer fusion: mini-batch must be at least 1, got {}", options.batch);
  const int ops = analysis.op_count();
  const auto batch = static_cast<double>(options.batch);
  const auto per_image = [&](const FusedGroup& g) {
    return static_cast<double>(g.activation_traffic()) + static_cast<double>(g.filter_bytes) / batch;
  };
  struct Best {
    double bytes = std::numeric_limits<double>::infinity();
    int64_t macs = 0;
    FusedGroup last;  // the group ending here
  };
  std::vector<Best> best(static_cast<size_t>(ops) + 1);
  best[0].bytes = 0.0;
  for (int j = 1; j <= ops; ++j) {
    Best& here = best[static_cast<size_t>(j)];
    const auto consider = [&](FusedGroup group, int i) {
      const Best& before = best[static_cast<size_t>(i)];
      const double bytes = before.bytes + per_image(group);
      const int64_t macs = before.macs + group.macs;
      if (bytes < here.bytes || (bytes == here.bytes && macs < here.macs)) here = {bytes, macs, std::move(group)};
    };
    consider(single_op(analysis, j - 1), j - 1);
    int64_t filters = analysis.op(j - 1).filter_bytes;
    for (int i = j - 2; i >= 0 && is_local(analysis.graph().op(j - 1).kind); --i) {
      if (!is_local(analysis.graph().op(i).kind)) break;
      filters += analysis.op(i).filter_bytes;
      if (filters > options.capacity_bytes) break;
      const Group group(analysis, i, j - 1);
      if (!group.fusable()) continue;
      // Extending a group to the left only adds buffers, so once the smallest tile does not fit,
      // no longer group ending here fits either.
      std::optional<FusedGroup> fused = fit_group(group, options.capacity_bytes, options.overlap, true);
      if (!fused) break;
      consider(std::move(*fused), i);
    }
  }
  LayerFusionPlan plan;
  plan.overlap = options.overlap;
  plan.capacity_bytes = options.capacity_bytes;
  plan.batch = options.batch;
  for (int j = ops; j > 0; j = best[static_cast<size_t>(j)].last.first_op) {
    plan.groups.push_back(best[static_cast<size_t>(j)].last);
  }
  std::reverse(plan.groups.begin(), plan.groups.end());
  for (const FusedGroup& group : plan.groups) {
    plan.activation_bytes += group.activation_traffic();
    plan.filter_bytes += group.filter_bytes;
  }
  return plan;
}

}  // namespace occam
