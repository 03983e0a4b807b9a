// Window geometry shared by the executors: padding that reproduces PyTorch's output sizes, and the
// explicit taps of averages oneDNN cannot express.
#pragma once

#include <cstdint>
#include <vector>

namespace occam::exec {

// End padding that makes oneDNN's floor rule yield `out` (PyTorch's ceil_mode adds a window that
// starts inside the input but ends past its padding).
inline int64_t effective_pad_end(int64_t in, int64_t begin, int64_t end, int64_t extent, int64_t stride, int64_t out) {
  if ((in + begin + end - extent) / stride + 1 == out) return end;
  return (out - 1) * stride + extent - in - begin;
}

// Input taps of each output position along one axis, and its divisor, for averages oneDNN cannot
// express: AdaptiveAvgPool with uneven bins, and count_include_pad windows that reach past the padding.
struct AxisWindows {
  std::vector<std::vector<int64_t>> taps;
  std::vector<float> divisor;
};

inline AxisWindows adaptive_windows(int64_t in, int64_t out) {
  AxisWindows w;
  for (int64_t o = 0; o < out; ++o) {
    const int64_t start = o * in / out;
    const int64_t end = ((o + 1) * in + out - 1) / out;
    std::vector<int64_t> taps;
    for (int64_t i = start; i < end; ++i) taps.push_back(i);
    w.divisor.push_back(static_cast<float>(taps.size()));
    w.taps.push_back(std::move(taps));
  }
  return w;
}

// PyTorch's avg_pool rule: the divisor counts the window's positions inside [-pad_begin, in + pad_end).
inline AxisWindows pool_windows(int64_t in, int64_t out, int kernel, int stride, int dilation, int pad_begin, int pad_end,
                         bool count_include_pad) {
  AxisWindows w;
  for (int64_t o = 0; o < out; ++o) {
    const int64_t start = o * stride - pad_begin;
    std::vector<int64_t> taps;
    int64_t padded = 0;
    for (int k = 0; k < kernel; ++k) {
      const int64_t i = start + static_cast<int64_t>(k) * dilation;
      if (i >= 0 && i < in) taps.push_back(i);
      if (i < in + pad_end) ++padded;
    }
    w.divisor.push_back(static_cast<float>(count_include_pad ? padded : static_cast<int64_t>(taps.size())));
    w.taps.push_back(std::move(taps));
  }
  return w;
}

}  // namespace occam::exec
