// Small graphs exercising every op kind and its awkward variants (padding, ceil_mode, dilation,
// groups, broadcasting, several inputs and outputs): every executor must match the naive oracle on them.
#pragma once

#include "exec/test_graphs.hpp"

#include <functional>

namespace occam::testing {

struct OpCase {
  const char* name;
  std::function<Graph()> build;
  friend void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }
};

inline Window window(int kh, int kw, int sh, int sw, int top, int left, int bottom, int right, int dh = 1,
                     int dw = 1, bool ceil_mode = false) {
  return {kh, kw, sh, sw, top, left, bottom, right, dh, dw, ceil_mode};
}

inline const OpCase kOpCases[] = {
    {"conv_variants",
     [] {
       TestNet net;
       TensorId x = net.input({1, 6, 13, 11});
       x = net.conv(x, 16, Window::square(3, 1, 1));
       x = net.conv(x, 20, window(3, 2, 2, 1, 1, 0, 2, 1), 2, false, Activation::relu());  // grouped, asymmetric
       x = net.conv(x, 20, window(3, 3, 1, 1, 2, 2, 2, 2, 2, 2), 20, true, Activation::relu6());  // depthwise, dilated
       x = net.conv(x, 5, Window::square(1), 1, true, {ActKind::LeakyRelu, 0.1f});
       x = net.conv(x, 32, Window::square(5, 2, 2));
       return std::move(net).finish({x});
     }},
    {"winograd_shapes",
     [] {
       TestNet net;
       TensorId x = net.input({1, 16, 20, 20});
       for (int i = 0; i < 3; ++i) x = net.conv(x, 32, Window::square(3, 1, 1), 1, true, Activation::relu());
       return std::move(net).finish({x});
     }},
    {"pools",
     [] {
       TestNet net;
       const TensorId x = net.input({1, 18, 15, 14});
       const TensorId max_ceil = net.pool(x, OpKind::MaxPool, window(3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true));
       const TensorId max_dilated = net.pool(x, OpKind::MaxPool, window(3, 2, 1, 2, 0, 1, 2, 0, 2, 1));
       // ceil_mode adds a window past the padding that PyTorch does not count in the divisor.
       const TensorId avg_include = net.pool(x, OpKind::AvgPool, window(3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true), true);
       const TensorId avg_include_floor = net.pool(x, OpKind::AvgPool, window(2, 3, 2, 2, 1, 1, 0, 1), true);
       const TensorId avg_exclude = net.pool(x, OpKind::AvgPool, window(3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true), false);
       const TensorId uneven = net.adaptive(x, 4, 5);
       const TensorId even = net.adaptive(net.pool(x, OpKind::MaxPool, window(1, 1, 1, 1, 0, 0, 0, 0)), 5, 7);
       const TensorId global = net.op(OpKind::GlobalAvgPool, {x});
       return std::move(net).finish({max_ceil, max_dilated, avg_include, avg_include_floor, avg_exclude, uneven,
                                     even, global});
     }},
    {"residual_adds_fused",
     [] {
       TestNet net;
       TensorId x = net.conv(net.input({1, 3, 16, 16}), 32, Window::square(3, 2, 1), 1, true, Activation::relu());
       for (int i = 0; i < 2; ++i) {
         const TensorId y = net.conv(x, 32, Window::square(3, 1, 1), 1, false, Activation::relu());
         x = net.op(OpKind::Add, {net.conv(y, 32, Window::square(3, 1, 1)), x}, Activation::relu());
       }
       // conv - x stays a binary op; an add whose conv comes second is fused too.
       x = net.op(OpKind::Sub, {net.conv(net.conv(x, 16, Window::square(1)), 32, Window::square(3, 1, 1)), x});
       x = net.op(OpKind::Add, {x, net.conv(net.conv(x, 8, Window::square(1)), 32, Window::square(3, 1, 1))});
       // A conv that reads x itself cannot write into x's buffer.
       x = net.op(OpKind::Add, {net.conv(x, 32, Window::square(1)), x});
       return std::move(net).finish({x});
     }},
    {"residual_operand_used_later",
     [] {
       TestNet net;
       const TensorId x = net.conv(net.input({1, 8, 12, 12}), 16, Window::square(3, 1, 1));
       const TensorId sum = net.op(OpKind::Add, {net.conv(x, 16, Window::square(3, 1, 1)), x});
       // x is read again after the add: its buffer must not receive the sum.
       const TensorId later = net.op(OpKind::Mul, {sum, x});
       return std::move(net).finish({later, sum});
     }},
    {"broadcasting",
     [] {
       TestNet net;
       const TensorId x = net.conv(net.input({2, 4, 9, 10}), 16, Window::square(3, 1, 1));
       const TensorId gate = net.gemm(net.op(OpKind::GlobalAvgPool, {x}), 16, true, {ActKind::HardSigmoid, 0.2f, 0.5f});
       const TensorId excited = net.op(OpKind::Mul, {x, gate});  // squeeze-and-excitation
       const TensorId per_column = net.pool(x, OpKind::AvgPool, window(9, 1, 1, 1, 0, 0, 0, 0));    // (2,16,1,10)
       const TensorId per_row = net.conv(net.pool(x, OpKind::MaxPool, window(1, 10, 1, 1, 0, 0, 0, 0)), 1,
                                         Window::square(1));  // (2,1,9,1)
       const TensorId both = net.op(OpKind::Add, {per_column, per_row}, Activation::relu());  // neither full
       const TensorId first_small = net.op(OpKind::Sub, {gate, excited});  // a - b with a broadcast
       const TensorId mixed = net.op(OpKind::Sub, {both, first_small}, {ActKind::Tanh});
       return std::move(net).finish({mixed, excited});
     }},
    {"batchnorm_concat_activations",
     [] {
       TestNet net;
       const TensorId x = net.input({1, 8, 10, 10});
       const TensorId pooled = net.pool(x, OpKind::MaxPool, Window::square(3, 1, 1));
       const TensorId normed = net.op(OpKind::Activation, {net.batchnorm(pooled)}, Activation::relu6());
       const TensorId a = net.conv(x, 5, Window::square(1));
       const TensorId b = net.conv(x, 16, Window::square(3, 1, 1));
       const TensorId c = net.activation(pooled, {ActKind::Sigmoid});  // pooled has two readers: not fused
       // Pre-activation BatchNorm (densenet's BN-ReLU-Conv): a fused ReLU, and another activation.
       const TensorId normed_relu = net.batchnorm(x, Activation::relu());
       const TensorId normed_leaky = net.batchnorm(pooled, {ActKind::LeakyRelu, 0.1f});
       const TensorId cat = net.op(OpKind::Concat, {a, b, c, normed, normed_relu, normed_leaky});
       std::vector<TensorId> outs;
       const Activation all[] = {{ActKind::Relu},           {ActKind::Clip, -0.5f, 0.7f},
                                 {ActKind::Sigmoid},        {ActKind::HardSigmoid, 0.2f, 0.5f},
                                 {ActKind::HardSwish},      {ActKind::Tanh},
                                 {ActKind::LeakyRelu, 0.01f}, {ActKind::Swish}};
       for (const Activation& act : all) {
         outs.push_back(net.activation(cat, act));                             // standalone
         outs.push_back(net.conv(cat, 16, Window::square(1), 1, true, act));  // post-op
       }
       return std::move(net).finish(outs);
     }},
    {"classifier_head",
     [] {
       TestNet net;
       const TensorId x = net.conv(net.input({3, 8, 7, 6}), 16, Window::square(3, 2, 1));
       const TensorId flat = net.op(OpKind::Flatten, {x});  // not feeding a Gemm: a real op
       const TensorId logits = net.gemm(x, 10, true, Activation::relu());  // 4-D input, flattened implicitly
       const TensorId no_bias = net.gemm(logits, 7, false);
       const TensorId probs = net.op(OpKind::Softmax, {no_bias});
       const TensorId spatial_softmax = net.op(OpKind::Softmax, {x});
       return std::move(net).finish({probs, flat, spatial_softmax});
     }},
    {"two_inputs",
     [] {
       TestNet net;
       const TensorId a = net.input({1, 16, 8, 8});
       const TensorId b = net.input({1, 16, 8, 8});
       // The caller's input buffers are never written, not even by an in-place add.
       const TensorId sum = net.op(OpKind::Add, {a, b});
       const TensorId y = net.op(OpKind::Add, {net.conv(sum, 16, Window::square(3, 1, 1)), a});
       return std::move(net).finish({y, sum});
     }},
    {"shufflenet_split_and_shuffle",
     [] {
       TestNet net;
       const TensorId x = net.input({1, 12, 9, 7});
       // 20 channels: not a whole number of oneDNN's blocks, and split at channel 10, inside a block.
       const TensorId wide = net.conv(x, 20, Window::square(3, 1, 1), 1, true, Activation::relu());
       const TensorId kept = net.slice(wide, 0, 10);
       const TensorId branch = net.conv(net.slice(wide, 10, 10), 10, Window::square(3, 2, 1), 10);
       const TensorId pointwise = net.conv(net.slice(wide, 10, 10), 10, Window::square(1));
       const TensorId unit = net.shuffle(net.op(OpKind::Concat, {kept, pointwise}), 2);
       const TensorId quarters = net.shuffle(wide, 4, {ActKind::LeakyRelu, 0.1f});  // an activation of its own
       const TensorId of_input = net.shuffle(net.slice(x, 3, 8), 2);  // the caller's tensor, sliced
       return std::move(net).finish({net.conv(unit, 8, Window::square(3, 1, 1)), branch, quarters, of_input,
                                     net.slice(net.slice(quarters, 5, 11), 2, 3)});
     }},
    {"narrow_groups_and_strided_pointwise",
     [] {
       TestNet net;
       // Rows of 16 x 64 floats are whole pages; 17 rows leave a strided 1x1 one row short at the bottom.
       const TensorId x = net.input({1, 64, 17, 16});
       const TensorId four = net.conv(x, 64, Window::square(3, 1, 1), 16, true, Activation::relu());  // 4 per group
       const TensorId two = net.conv(four, 64, Window::square(3, 1, 1), 32);                          // 2 per group
       const TensorId uneven = net.conv(two, 32, Window::square(3, 1, 1), 8, false, Activation::relu());  // 8 in, 4 out
       const TensorId shortcut = net.conv(x, 32, Window::square(1, 2, 0));
       const TensorId pointwise = net.conv(uneven, 32, Window::square(1, 2, 0), 1, true, Activation::relu6());
       return std::move(net).finish({net.op(OpKind::Add, {shortcut, pointwise}, Activation::relu()), four});
     }},
};

}  // namespace occam::testing
