// Small graphs with seeded random weights for executor tests, and the check every executor test
// makes: same outputs as the naive oracle.
#pragma once

#include "exec/naive_oracle.hpp"
#include "occam/exec.hpp"
#include "occam/model.hpp"

#include <gtest/gtest.h>

#include <random>

namespace occam::testing {

class TestNet {
public:
  explicit TestNet(uint64_t seed = 7) : builder_("test", "test"), rng_(seed) {}

  Buffer random(size_t count, float lo, float hi) {
    std::uniform_real_distribution<float> u(lo, hi);
    auto values = std::make_shared<std::vector<float>>(count);
    for (float& v : *values) v = u(rng_);
    return values;
  }

  TensorId input(Shape shape) { return builder_.input(fmt::format("input{}", inputs_++), shape); }

  TensorId conv(TensorId x, int64_t out, Window window, int groups = 1, bool bias = true, Activation act = {}) {
    Op op = make(OpKind::Conv, {x});
    op.out_channels = out;
    op.window = window;
    op.groups = groups;
    op.has_bias = bias;
    op.activation = act;
    const int64_t fan_in = builder_.shape(x).c / groups * window.kernel_h * window.kernel_w;
    const float bound = std::sqrt(3.0f / static_cast<float>(fan_in));
    op.weight = random(static_cast<size_t>(out * fan_in), -bound, bound);
    if (bias) op.bias = random(static_cast<size_t>(out), -0.2f, 0.2f);
    return builder_.add(std::move(op));
  }

  TensorId batchnorm(TensorId x, Activation act = {}) {
    Op op = make(OpKind::BatchNorm, {x});
    op.activation = act;
    const auto channels = static_cast<size_t>(builder_.shape(x).c);
    op.weight = random(channels, 0.5f, 1.5f);
    op.bias = random(channels, -0.3f, 0.3f);
    return builder_.add(std::move(op));
  }

  TensorId pool(TensorId x, OpKind kind, Window window, bool count_include_pad = false) {
    Op op = make(kind, {x});
    op.window = window;
    op.count_include_pad = count_include_pad;
    return builder_.add(std::move(op));
  }

  TensorId adaptive(TensorId x, int64_t h, int64_t w) {
    Op op = make(OpKind::AdaptiveAvgPool, {x});
    op.pooled = {h, w};
    return builder_.add(std::move(op));
  }

  TensorId gemm(TensorId x, int64_t out, bool bias = true, Activation act = {}) {
    Op op = make(OpKind::Gemm, {x});
    op.out_channels = out;
    op.has_bias = bias;
    op.activation = act;
    const int64_t in = builder_.shape(x).image_elements();
    const float bound = std::sqrt(3.0f / static_cast<float>(in));
    op.weight = random(static_cast<size_t>(in * out), -bound, bound);
    if (bias) op.bias = random(static_cast<size_t>(out), -0.2f, 0.2f);
    return builder_.add(std::move(op));
  }

  TensorId slice(TensorId x, int64_t offset, int64_t channels) {
    Op op = make(OpKind::Slice, {x});
    op.channel_offset = offset;
    op.out_channels = channels;
    return builder_.add(std::move(op));
  }

  TensorId shuffle(TensorId x, int groups, Activation act = {}) {
    Op op = make(OpKind::ChannelShuffle, {x});
    op.groups = groups;
    op.activation = act;
    return builder_.add(std::move(op));
  }

  TensorId op(OpKind kind, std::vector<TensorId> inputs, Activation act = {}) {
    Op op = make(kind, std::move(inputs));
    op.activation = act;
    return builder_.add(std::move(op));
  }

  TensorId activation(TensorId x, Activation act) { return op(OpKind::Activation, {x}, act); }

  Graph finish(std::vector<TensorId> outputs) && {
    for (TensorId t : outputs) builder_.mark_output(t);
    return std::move(builder_).finish();
  }

  const Shape& shape(TensorId t) const { return builder_.shape(t); }

private:
  Op make(OpKind kind, std::vector<TensorId> inputs) {
    Op op;
    op.name = fmt::format("{}{}", to_string(kind), ops_++);
    op.kind = kind;
    op.inputs = std::move(inputs);
    return op;
  }

  GraphBuilder builder_;
  std::mt19937_64 rng_;
  int inputs_ = 0;
  int ops_ = 0;
};

inline std::vector<HostTensor> random_inputs(const Graph& graph, uint64_t seed = kInputSeed) {
  std::vector<HostTensor> inputs;
  for (TensorId t : graph.inputs) inputs.push_back(random_input(graph.tensor(t).shape, seed++));
  return inputs;
}

// Runs `graph` on the reference executor and on the naive oracle; returns the largest relative error
// over the outputs.
inline double error_vs_oracle(const Graph& graph, const ReferenceOptions& options) {
  const std::vector<HostTensor> inputs = random_inputs(graph);
  const std::vector<HostTensor> expected = naive::run(graph, inputs);
  const std::unique_ptr<Executor> executor = compile_reference(graph, options);
  const std::vector<HostTensor> got = executor->run(inputs);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, max_relative_error(got[i], expected[i]));
  return worst;
}

}  // namespace occam::testing
