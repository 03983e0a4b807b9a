// Our own direct convolution of one output row over input rows that lie one after another: the
// fused executor's alternative to oneDNN per row, for the stacked windows of dense convolution
// chains (dncnn), where oneDNN 2.6 has only its 1xK kernel over K stacked rows, slower than its KxK
// kernel on whole tensors, and for bands of NHWC rows, where each oneDNN call also pays for its
// argument handling.
#pragma once

#include "occam/model.hpp"

#include <cstdint>

namespace occam::exec {

// A stride-1, undilated, ungrouped convolution giving one output row from input rows that lie one
// after another in memory, each [channels / block][width][block] floats: a row of oneDNN's nChw8c
// or nChw16c at height 1 where the block is 8 or 16, an NHWC row where it is all the channels.
struct RowConvShape {
  int64_t in_c = 0, out_c = 0;
  int64_t in_w = 0, out_w = 0;
  int64_t kernel_h = 0, kernel_w = 0;
  int64_t pad_left = 0;  // columns of zeros left of the input; out_w fixes those on the right
  int64_t in_block = 8, out_block = 8;  // channels per block of an input and of the output row
  Activation activation;
};

// Whether this CPU and build can run the shape: AVX2 with FMA, channels and blocks multiples of 8
// (blocks dividing the channels), and an activation of none, ReLU or a clip (applied in registers).
bool row_conv_supported(const RowConvShape& shape);

// The convolution with its weights packed for the micro-kernel, in storage the caller owns (the
// executor's accounted weights): packed_floats(shape) floats, 32-byte aligned.
class RowConv {
 public:
  static int64_t packed_floats(const RowConvShape& shape);
  // weights: OIHW (out_c x in_c x kernel_h x kernel_w); bias: out_c values or null.
  RowConv(const RowConvShape& shape, const float* weights, const float* bias, float* packed);

  // out: one output row from the kernel rows [kernel_row_begin, kernel_row_end) (those the image
  // has: the others fall on padding), whose input rows start at `rows`. Inputs and output may not alias.
  void run(const float* rows, float* out, int64_t kernel_row_begin, int64_t kernel_row_end) const;
  void run(const float* rows, float* out) const { run(rows, out, 0, shape_.kernel_h); }
  const RowConvShape& shape() const { return shape_; }

 private:
  RowConvShape shape_;
  // [out_c / 16][kernel_h][kernel_w][in_c][16] (a last block of 8 where out_c is not a multiple of
  // 16), then the bias (out_c floats)
  const float* packed_;
};

}  // namespace occam::exec
