// Our own direct convolution of one output row over row-blocked input rows: the fused executor's
// alternative to oneDNN for the stacked windows of dense convolution chains (dncnn), where oneDNN
// 2.6 has only its 1xK kernel over K stacked rows, slower than its KxK kernel on whole tensors.
#pragma once

#include "occam/model.hpp"

#include <cstdint>

namespace occam::exec {

// A stride-1, undilated, ungrouped convolution giving one output row from `kernel_h` input rows
// that lie one after another in memory, each row-blocked: [channels / block][width][block] floats,
// the output row likewise (a row of oneDNN's nChw8c or nChw16c at height 1).
struct RowConvShape {
  int64_t in_c = 0, out_c = 0;
  int64_t in_w = 0, out_w = 0;
  int64_t kernel_h = 0, kernel_w = 0;
  int64_t pad_left = 0;  // columns of zeros left of the input; out_w fixes those on the right
  int64_t block = 8;     // channels per block, both sides
  Activation activation;
};

// Whether this CPU and build can run the shape: AVX2 with FMA, channel blocks of 8 or 16, output
// channels a multiple of 16, every output pixel seeing at least one input column, and an activation
// of none, ReLU or a clip (applied in registers).
bool row_conv_supported(const RowConvShape& shape);

// The convolution with its weights packed for the micro-kernel, in storage the caller owns (the
// executor's accounted weights): packed_floats(shape) floats, 32-byte aligned.
class RowConv {
 public:
  static int64_t packed_floats(const RowConvShape& shape);
  // weights: OIHW (out_c x in_c x kernel_h x kernel_w); bias: out_c values or null.
  RowConv(const RowConvShape& shape, const float* weights, const float* bias, float* packed);

  // rows: kernel_h input rows one after another; out: one output row. Neither may alias.
  void run(const float* rows, float* out) const;
  const RowConvShape& shape() const { return shape_; }

 private:
  RowConvShape shape_;
  const float* packed_;  // [out_c / 16][kernel_h][kernel_w][in_c][16], then the bias (out_c floats)
};

}  // namespace occam::exec
