// Small graphs for tests: hand-built blocks and seeded random chains and DAGs.
#pragma once

#include "occam/model.hpp"

#include <random>
#include <string>
#include <vector>

namespace occam::testing {

inline Op conv_op(const std::string& name, TensorId x, int64_t out, int kernel, int stride = 1, int pad = -1) {
  Op op;
  op.name = name;
  op.kind = OpKind::Conv;
  op.inputs = {x};
  op.out_channels = out;
  op.window = Window::square(kernel, stride, pad < 0 ? kernel / 2 : pad);
  op.has_bias = true;
  return op;
}

inline Op pool_op(const std::string& name, TensorId x, OpKind kind, int kernel, int stride, int pad) {
  Op op;
  op.name = name;
  op.kind = kind;
  op.inputs = {x};
  op.window = Window::square(kernel, stride, pad);
  return op;
}

inline Op nary_op(const std::string& name, OpKind kind, std::vector<TensorId> inputs) {
  Op op;
  op.name = name;
  op.kind = kind;
  op.inputs = std::move(inputs);
  return op;
}

struct ChainLayer {
  int kernel;
  int stride;
  int64_t channels;
};

inline Graph chain(const std::vector<ChainLayer>& layers, Shape input) {
  GraphBuilder b("chain", "test");
  TensorId x = b.input("x", input);
  for (size_t i = 0; i < layers.size(); ++i) {
    x = b.add(conv_op("conv" + std::to_string(i), x, layers[i].channels, layers[i].kernel, layers[i].stride));
  }
  b.mark_output(x);
  return std::move(b).finish();
}

// A random chain of convolutions and poolings, `ops` long, on a small input.
inline Graph random_chain(std::mt19937_64& rng, int ops) {
  const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  GraphBuilder b("random_chain", "test");
  TensorId x = b.input("x", {1, pick(1, 8), pick(12, 40), pick(4, 16)});
  for (int i = 0; i < ops; ++i) {
    const Shape& s = b.shape(x);
    const int stride = (s.h >= 8 && pick(0, 4) == 0) ? 2 : 1;
    const std::string name = "op" + std::to_string(i);
    if (pick(0, 5) == 0 && s.h >= 4) {
      x = b.add(pool_op(name, x, pick(0, 1) ? OpKind::MaxPool : OpKind::AvgPool, 2 + (stride == 1), stride, 1));
    } else {
      const int kernel = std::array{1, 3, 3, 5}[static_cast<size_t>(pick(0, 3))];
      x = b.add(conv_op(name, x, pick(1, 16), s.h >= kernel ? kernel : 1, stride));
    }
  }
  b.mark_output(x);
  return std::move(b).finish();
}

// A random DAG with residual skips, concatenations and forks, built in topological order. Every
// tensor nobody reads becomes a graph output.
inline Graph random_dag(std::mt19937_64& rng, int ops) {
  const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  GraphBuilder b("random_dag", "test");
  std::vector<TensorId> tensors = {b.input("x", {1, pick(1, 6), pick(12, 32), pick(4, 12)})};
  std::vector<int> readers = {0};
  const auto use = [&](TensorId t) { ++readers[static_cast<size_t>(t)]; };
  const auto produce = [&](Op op) {
    for (TensorId in : op.inputs) use(in);
    tensors.push_back(b.add(std::move(op)));
    readers.push_back(0);
  };
  for (int i = 0; i < ops; ++i) {
    const std::string name = "op" + std::to_string(i);
    const TensorId last = tensors.back();
    const Shape& s = b.shape(last);
    std::vector<TensorId> same_shape, same_size;
    for (TensorId t : tensors) {
      if (t == last) continue;
      if (b.shape(t) == s) same_shape.push_back(t);
      if (b.shape(t).h == s.h && b.shape(t).w == s.w) same_size.push_back(t);
    }
    const int choice = pick(0, 9);
    if (choice <= 1 && !same_shape.empty()) {
      const TensorId skip = same_shape[static_cast<size_t>(pick(0, static_cast<int>(same_shape.size()) - 1))];
      produce(nary_op(name, choice == 0 ? OpKind::Add : OpKind::Mul, {last, skip}));
    } else if (choice == 2 && !same_size.empty()) {
      const TensorId other = same_size[static_cast<size_t>(pick(0, static_cast<int>(same_size.size()) - 1))];
      produce(nary_op(name, OpKind::Concat, {other, last}));
    } else if (choice == 3 && tensors.size() > 2) {
      // Fork: a new branch from an earlier tensor.
      const TensorId from = tensors[static_cast<size_t>(pick(0, static_cast<int>(tensors.size()) - 2))];
      produce(conv_op(name, from, pick(1, 8), b.shape(from).h >= 3 ? 3 : 1));
    } else if (choice == 4 && s.h >= 8) {
      produce(pool_op(name, last, OpKind::MaxPool, 3, 2, 1));
    } else {
      const int kernel = std::array{1, 3, 3, 5}[static_cast<size_t>(pick(0, 3))];
      produce(conv_op(name, last, pick(1, 12), s.h >= kernel && s.w >= kernel ? kernel : 1));
    }
  }
  for (size_t t = 1; t < tensors.size(); ++t) {
    if (readers[t] == 0) b.mark_output(tensors[t]);
  }
  return std::move(b).finish();
}

}  // namespace occam::testing
