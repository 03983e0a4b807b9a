// The oneDNN reference executor against the naive oracle, op kind by op kind, in every layout.
#include "exec/test_graphs.hpp"
#include "occam/error.hpp"

#include <gtest/gtest.h>

#include <functional>

namespace occam {
namespace {

using testing::TestNet;

constexpr double kTolerance = 1e-4;

struct Config {
  const char* name;
  ReferenceOptions options;
  friend void PrintTo(const Config& c, std::ostream* os) { *os << c.name; }
};

const Config kConfigs[] = {
    {"any", {0, ConvAlgorithm::Direct, ActivationLayout::Any}},
    {"blocked", {0, ConvAlgorithm::Direct, ActivationLayout::Blocked}},
    {"measured", {0, ConvAlgorithm::Direct, ActivationLayout::Measure}},
    {"winograd", {0, ConvAlgorithm::Winograd, ActivationLayout::Blocked}},
    {"one_thread", {1, ConvAlgorithm::Direct, ActivationLayout::Blocked}},
};

struct Case {
  const char* name;
  std::function<Graph()> build;
  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
};

Window window(int kh, int kw, int sh, int sw, int top, int left, int bottom, int right, int dh = 1, int dw = 1,
              bool ceil_mode = false) {
  return {kh, kw, sh, sw, top, left, bottom, right, dh, dw, ceil_mode};
}

const Case kCases[] = {
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
       const TensorId cat = net.op(OpKind::Concat, {a, b, c, normed});
       std::vector<TensorId> outs;
       const Activation all[] = {{ActKind::Relu},           {ActKind::Clip, -0.5f, 0.7f},
                                 {ActKind::Sigmoid},        {ActKind::HardSigmoid, 0.2f, 0.5f},
                                 {ActKind::HardSwish},      {ActKind::Tanh},
                                 {ActKind::LeakyRelu, 0.01f}};
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
};

class ReferenceVsOracle : public ::testing::TestWithParam<std::tuple<Case, Config>> {};

TEST_P(ReferenceVsOracle, SameOutputs) {
  const auto& [c, config] = GetParam();
  const Graph graph = c.build();
  const double tolerance = config.options.algorithm == ConvAlgorithm::Winograd ? 1e-3 : kTolerance;
  EXPECT_LE(testing::error_vs_oracle(graph, config.options), tolerance);
}

INSTANTIATE_TEST_SUITE_P(Ops, ReferenceVsOracle, ::testing::Combine(::testing::ValuesIn(kCases), ::testing::ValuesIn(kConfigs)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param).name;
                         });

TEST(Reference, InputsAreNotModified) {
  const Graph graph = kCases[8].build();
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> copy = inputs;
  compile_reference(graph)->run(inputs);
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_EQ(inputs[i].values, copy[i].values);
}

TEST(Reference, ResidualAddsBecomeSumPostOps) {
  const Graph graph = kCases[3].build();
  const auto executor = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked});
  EXPECT_NE(executor->describe().find("3 residual adds fused"), std::string::npos) << executor->describe();
  const auto later = compile_reference(kCases[4].build(), {0, ConvAlgorithm::Direct, ActivationLayout::Blocked});
  EXPECT_NE(later->describe().find("0 residual adds fused"), std::string::npos) << later->describe();
}

TEST(Reference, RepeatedRunsGiveIdenticalResults) {
  const Graph graph = kCases[3].build();
  const auto executor = compile_reference(graph);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> first = executor->run(inputs);
  std::vector<HostTensor> again = executor->run(inputs);
  EXPECT_EQ(first[0].values, again[0].values);
  // Runs reuse caller-provided outputs.
  executor->run(inputs, again);
  EXPECT_EQ(first[0].values, again[0].values);
}

TEST(Reference, ActivationMemoryIsThePeakOfLiveTensorsNotTheirSum) {
  TestNet net;
  TensorId x = net.input({1, 16, 32, 32});
  for (int i = 0; i < 6; ++i) x = net.conv(x, 16, Window::square(3, 1, 1), 1, true, Activation::relu());
  const Graph graph = std::move(net).finish({x});
  const auto executor = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked});
  const int64_t tensor_bytes = 16 * 32 * 32 * 4;
  const MemoryAccount& memory = executor->memory();
  // A chain needs two live tensors at a time (the input is the caller's), not six.
  EXPECT_EQ(memory.peak_bytes(MemoryUse::Activations), 2 * tensor_bytes);
  EXPECT_GE(memory.activation_peak_bytes(), memory.peak_bytes(MemoryUse::Activations));
  EXPECT_GE(memory.peak_bytes(MemoryUse::Weights), 6 * (16 * 16 * 9 + 16) * 4);
  EXPECT_EQ(memory.current_bytes(MemoryUse::Activations), memory.peak_bytes(MemoryUse::Activations));
}

TEST(Reference, GraphWithoutWeightsIsRejected) {
  try {
    compile_reference(zoo_model("resnet18"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("with_weights"), std::string::npos) << e.what();
  }
}

TEST(Reference, WrongInputsAreRejectedWithTheExpectedShape) {
  const Graph graph = kCases[0].build();
  const auto executor = compile_reference(graph);
  const std::vector<HostTensor> wrong_shape = {random_input({1, 6, 13, 12})};
  try {
    executor->run(wrong_shape);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1x6x13x11"), std::string::npos) << e.what();
  }
  EXPECT_THROW(executor->run(std::vector<HostTensor>{}), Error);
  std::vector<HostTensor> outputs = {HostTensor({1, 1, 1, 1})};
  EXPECT_THROW(executor->run(testing::random_inputs(graph), outputs), Error);
}

TEST(Reference, DescribesItsChoices) {
  const auto executor = compile_reference(kCases[1].build(), {0, ConvAlgorithm::Winograd, ActivationLayout::Blocked});
  // Winograd kernels exist for some ISAs only; the description says how many convolutions got one.
  EXPECT_NE(executor->describe().find("Winograd on "), std::string::npos) << executor->describe();
  EXPECT_NE(executor->describe().find(" of 3 convolutions"), std::string::npos) << executor->describe();
  EXPECT_NE(executor->describe().find("nChw"), std::string::npos) << executor->describe();  // 16c or 8c by ISA
  ASSERT_EQ(executor->input_shapes().size(), 1u);
  EXPECT_EQ(executor->input_shapes()[0], (Shape{1, 16, 20, 20}));
  EXPECT_EQ(executor->output_shapes()[0], (Shape{1, 32, 20, 20}));
}

}  // namespace
}  // namespace occam
