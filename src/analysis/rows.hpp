// Row dependences of ops: which input rows an op needs to produce one output row.
// Internal to the analysis module.
#pragma once

#include "occam/model.hpp"

#include <algorithm>
#include <cstdint>

namespace occam::rows {

// How an op walks its input rows.
enum class Mode : uint8_t {
  Window,      // output row r needs a contiguous, monotonically moving band of input rows
  Accumulate,  // one output row accumulated from input rows one at a time (GlobalAvgPool, Gemm)
};

inline Mode mode_of(const Graph& graph, const Op& op) {
  const bool reduces = op.kind == OpKind::GlobalAvgPool || op.kind == OpKind::Gemm;
  return reduces && graph.input_of(op).shape.h > 1 ? Mode::Accumulate : Mode::Window;
}

// Events of an op in the schedule: one per output row, or one per absorbed input row.
inline int64_t event_count(const Graph& graph, const Op& op) {
  return mode_of(graph, op) == Mode::Accumulate ? graph.input_of(op).shape.h : graph.output_of(op).shape.h;
}

struct Band {
  int64_t first = 0;  // first input row needed
  int64_t last = 0;   // last input row needed (inclusive)
};

// Input rows the window of output row `e` of a convolution or pooling covers, padding included
// (first < 0 or last >= the input's height where the window reaches into it).
inline Band window_rows(const Op& op, int64_t e) {
  const int64_t top = e * op.window.stride_h - op.window.pad_top;
  return {top, top + op.window.extent_h() - 1};
}

// Input rows of input `k` needed by event `e` of `op` (for Accumulate ops: exactly row e).
inline Band band(const Graph& graph, const Op& op, size_t k, int64_t e) {
  const int64_t in_h = graph.input_of(op, k).shape.h;
  const auto clip = [&](int64_t first, int64_t last) {
    return Band{std::clamp<int64_t>(first, 0, in_h - 1), std::clamp<int64_t>(last, 0, in_h - 1)};
  };
  if (mode_of(graph, op) == Mode::Accumulate) return {e, e};
  switch (op.kind) {
    case OpKind::Conv:
    case OpKind::MaxPool:
    case OpKind::AvgPool: {
      const Band window = window_rows(op, e);
      return clip(window.first, window.last);
    }
    case OpKind::AdaptiveAvgPool: {
      const int64_t out_h = op.pooled.h;
      return clip(e * in_h / out_h, ((e + 1) * in_h + out_h - 1) / out_h - 1);
    }
    case OpKind::Flatten:
    case OpKind::GlobalAvgPool:
    case OpKind::Gemm:
      return clip(0, in_h - 1);
    default:
      // Elementwise (possibly broadcast along H) ops, Concat, Softmax over channels.
      return in_h == 1 ? Band{0, 0} : clip(e, e);
  }
}

}  // namespace occam::rows
