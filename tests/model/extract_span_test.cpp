#include "occam/error.hpp"
#include "occam/model.hpp"

#include <gtest/gtest.h>

namespace occam {
namespace {

TEST(ExtractSpan, ResidualBlockKeepsTheSkipAsASecondInput) {
  const Graph g = zoo_model("resnet18");
  // layer1.1: conv1 (5), conv2 (6), add (7); the add also reads layer1.0's output.
  const Graph span = extract_span(g, 5, 7);
  ASSERT_EQ(span.ops.size(), 3u);
  ASSERT_EQ(span.inputs.size(), 1u);  // conv1 and the add read the same tensor
  EXPECT_EQ(span.tensor(span.inputs[0]).name, g.output_of(g.op(4)).name);
  ASSERT_EQ(span.outputs.size(), 1u);
  EXPECT_EQ(span.tensor(span.outputs[0]).shape, g.output_of(g.op(7)).shape);
  EXPECT_EQ(span.ops[2].inputs[1], span.inputs[0]);
  EXPECT_EQ(span.tensor(span.inputs[0]).consumers, (std::vector<OpId>{0, 2}));
}

TEST(ExtractSpan, TensorsReadAfterTheSpanBecomeOutputs) {
  const Graph g = zoo_model("googlenet");
  OpId concat = 0;
  while (g.op(concat).kind != OpKind::Concat) ++concat;
  // From the first inception branch up to just before its concat: all four branch outputs leave.
  OpId branch_start = concat;
  while (g.op(branch_start - 1).name.find("inception3a") != std::string::npos) --branch_start;
  const Graph span = extract_span(g, branch_start, concat - 1);
  EXPECT_EQ(span.outputs.size(), 4u);
  EXPECT_EQ(span.inputs.size(), 1u);
}

TEST(ExtractSpan, WeightsAreSharedNotCopied) {
  ModelOptions options;
  options.with_weights = true;
  options.resolution = Resolution{64, 64};
  const Graph g = zoo_model("alexnet", options);
  const Graph span = extract_span(g, 0, 2);
  EXPECT_EQ(span.ops[0].weight.get(), g.ops[0].weight.get());
  EXPECT_THROW(extract_span(g, 3, 1), Error);
  EXPECT_THROW(extract_span(g, 0, 99), Error);
}

}  // namespace
}  // namespace occam
