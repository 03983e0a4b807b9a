// The oneDNN reference executor against the naive oracle, op kind by op kind, in every layout.
#include "exec/onednn.hpp"
#include "exec/op_cases.hpp"
#include "exec/test_graphs.hpp"
#include "occam/error.hpp"

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string_view>

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

class ReferenceVsOracle : public ::testing::TestWithParam<std::tuple<testing::OpCase, Config>> {};

TEST_P(ReferenceVsOracle, SameOutputs) {
  const auto& [c, config] = GetParam();
  const Graph graph = c.build();
  const double tolerance = config.options.algorithm == ConvAlgorithm::Winograd ? 1e-3 : kTolerance;
  EXPECT_LE(testing::error_vs_oracle(graph, config.options), tolerance);
}

INSTANTIATE_TEST_SUITE_P(Ops, ReferenceVsOracle, ::testing::Combine(::testing::ValuesIn(testing::kOpCases), ::testing::ValuesIn(kConfigs)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param).name;
                         });

// oneDNN 2.6 has JIT convolutions only for groups of whole channel blocks: narrower groups merge
// into wider ones with block-diagonal weights (the op case's outputs check them against the oracle).
TEST(OneDnnGroups, NarrowGroupsMergeIntoWholeChannelBlocks) {
  const Graph graph = std::find_if(std::begin(testing::kOpCases), std::end(testing::kOpCases), [](const testing::OpCase& c) {
                        return std::string_view(c.name) == "narrow_groups_and_strided_pointwise";
                      })->build();
  const int64_t block = exec::channel_block();
  std::vector<int64_t> merged;
  for (const Op& op : graph.ops) {
    if (op.kind != OpKind::Conv) continue;
    const Shape& in = graph.input_of(op).shape;
    const Shape& out = graph.output_of(op).shape;
    const exec::ConvGroups groups = exec::onednn_groups(op, in, out);
    EXPECT_EQ(groups.groups * groups.merged, op.groups) << op.name;
    if (groups.merged > 1) {
      EXPECT_EQ(in.c / groups.groups % block, 0) << op.name;
      EXPECT_EQ(out.c / groups.groups % block, 0) << op.name;
    }
    merged.push_back(groups.merged);
  }
  // The dense ones stay. With AVX2 (8-channel blocks) oneDNN 2.6 runs 4 and 2 channels per group as
  // a GEMM per group, so they merge into 8 (measured here); with AVX-512 the merge, if any, depends
  // on which of its kernels take such groups, and only the invariants above are checked.
  ASSERT_EQ(merged.size(), 5U);
  EXPECT_EQ(merged[3], 1);
  EXPECT_EQ(merged[4], 1);
  if (block == 8) {
    EXPECT_EQ(merged[0], 2);
    EXPECT_EQ(merged[1], 4);
  }
  // Both executors say how many they merged.
  const auto count = std::count_if(merged.begin(), merged.end(), [](int64_t m) { return m > 1; });
  const std::string reference = compile_reference(graph, {1, ConvAlgorithm::Direct, ActivationLayout::Any})->describe();
  const std::string fused = compile_fused(graph, plan_for_execution(graph, 64 << 20), {.threads = 1})->describe();
  for (const std::string& text : {reference, fused}) {
    if (count > 0) {
      EXPECT_NE(text.find(fmt::format(", {} grouped convolution{} merged into whole channel blocks", count, count == 1 ? "" : "s")),
                std::string::npos) << text;
    } else {
      EXPECT_EQ(text.find("merged into whole channel blocks"), std::string::npos) << text;
    }
  }

  // Two groups of one input and two output channels, merged: [a 0; b 0; 0 c; 0 d] per kernel tap.
  TestNet net;
  const TensorId x = net.input({1, 2, 3, 3});
  const Graph pair = std::move(net).finish({net.conv(x, 4, Window::square(1), 2)});
  const Op& conv = pair.ops[0];
  const std::vector<float> w = exec::merged_group_weights(conv, {1, 2}, 2, 4);
  ASSERT_EQ(w.size(), 8U);
  const std::vector<float>& g = *conv.weight;
  EXPECT_EQ(w, (std::vector<float>{g[0], 0, g[1], 0, 0, g[2], 0, g[3]}));
  EXPECT_TRUE(exec::merged_group_weights(conv, {2, 1}, 2, 4).empty());
}

TEST(Reference, InputsAreNotModified) {
  const Graph graph = testing::kOpCases[8].build();
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> copy = inputs;
  compile_reference(graph)->run(inputs);
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_EQ(inputs[i].values, copy[i].values);
}

TEST(Reference, ResidualAddsBecomeSumPostOps) {
  const Graph graph = testing::kOpCases[3].build();
  const auto executor = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked});
  EXPECT_NE(executor->describe().find("3 residual adds fused"), std::string::npos) << executor->describe();
  const auto later = compile_reference(testing::kOpCases[4].build(), {0, ConvAlgorithm::Direct, ActivationLayout::Blocked});
  EXPECT_NE(later->describe().find("0 residual adds fused"), std::string::npos) << later->describe();
}

TEST(Reference, RepeatedRunsGiveIdenticalResults) {
  const Graph graph = testing::kOpCases[3].build();
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
  const Graph graph = testing::kOpCases[0].build();
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

// A squeeze-and-excitation multiply on the output of a grouped convolution of 8 channels per group
// (regnet_y's): oneDNN writes that output nChw8c even with AVX-512, where its binary multiply has
// only reference code for nChw8c; the executor then reorders the operand. No step may run oneDNN's
// reference code, in any layout, and the numbers are the oracle's.
TEST(Reference, SqueezeAndExcitationOnEightChannelGroupsRunsNoReferenceCode) {
  TestNet net;
  const TensorId x = net.conv(net.input({1, 64, 14, 14}), 64, Window::square(3, 1, 1), 8, true, Activation::relu());
  const TensorId gate = net.gemm(net.op(OpKind::GlobalAvgPool, {x}), 64, true, {ActKind::Sigmoid});
  const TensorId excited = net.op(OpKind::Mul, {x, gate});
  const Graph graph = std::move(net).finish({excited});
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> expected = naive::run(graph, inputs);
  for (const Config& config : kConfigs) {
    const auto executor = compile_reference(graph, config.options);
    EXPECT_EQ(executor->describe().find("reference code"), std::string::npos) << config.name << ": " << executor->describe();
    EXPECT_LE(max_relative_error(executor->run(inputs)[0], expected[0]), kTolerance) << config.name;
  }
}

TEST(Reference, DescribesItsChoices) {
  const auto executor = compile_reference(testing::kOpCases[1].build(), {0, ConvAlgorithm::Winograd, ActivationLayout::Blocked});
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
