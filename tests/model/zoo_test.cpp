#include "occam/error.hpp"
#include "occam/model.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace occam {
namespace {

struct Published {
  const char* name;
  int64_t params;  // torchvision's documented parameter count
  double gmacs;    // torchvision's documented "GFLOPS" (multiply-accumulates, 2 decimals)
  friend void PrintTo(const Published& p, std::ostream* os) { *os << p.name; }
};

class ZooCounts : public ::testing::TestWithParam<Published> {};

TEST_P(ZooCounts, ParametersEqualTorchvision) {
  const Published& p = GetParam();
  EXPECT_EQ(total_source_params(zoo_model(p.name)), p.params);
}

TEST_P(ZooCounts, MacsRoundToPublishedGflops) {
  const Published& p = GetParam();
  const double gmacs = static_cast<double>(total_macs(zoo_model(p.name))) / 1e9;
  EXPECT_NEAR(gmacs, p.gmacs, 0.005 + 1e-9) << p.name << " computes " << gmacs << " GMACs";
}

INSTANTIATE_TEST_SUITE_P(Torchvision, ZooCounts,
                         ::testing::Values(Published{"alexnet", 61'100'840, 0.71}, Published{"vgg16", 138'357'544, 15.47},
                                           Published{"resnet18", 11'689'512, 1.81},
                                           Published{"resnet50", 25'557'032, 4.09},
                                           Published{"mobilenet_v2", 3'504'872, 0.30},
                                           Published{"googlenet", 6'624'904, 1.50}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Zoo, NormalisationFoldsBatchNormAndFusesActivations) {
  const Graph g = zoo_model("resnet18");
  int convs = 0, adds = 0;
  for (const Op& op : g.ops) {
    EXPECT_NE(op.kind, OpKind::BatchNorm) << op.name;
    EXPECT_NE(op.kind, OpKind::Activation) << op.name;
    EXPECT_NE(op.kind, OpKind::Flatten) << op.name;
    convs += op.kind == OpKind::Conv;
    adds += op.kind == OpKind::Add;
  }
  EXPECT_EQ(convs, 20);
  EXPECT_EQ(adds, 8);
  EXPECT_EQ(g.ops.back().kind, OpKind::Gemm);
  EXPECT_EQ(g.output_of(g.ops.back()).shape, (Shape{1, 1000, 1, 1}));
}

TEST(Zoo, ResolutionAndBatchChangeShapes) {
  ModelOptions options;
  options.resolution = Resolution{1024, 1024};
  options.batch = 2;
  const Graph g = zoo_model("mobilenet_v2", options);
  EXPECT_EQ(g.tensor(g.inputs[0]).shape, (Shape{2, 3, 1024, 1024}));
  // Stem conv halves the resolution.
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{2, 32, 512, 512}));
  EXPECT_EQ(total_source_params(g), 3'504'872);
}

TEST(Zoo, DncnnIsSeventeenConvolutionsAtFullHd) {
  const Graph g = zoo_model("dncnn");
  ASSERT_EQ(g.ops.size(), 17u);
  EXPECT_EQ(g.tensor(g.inputs[0]).shape, (Shape{1, 1, 1080, 1920}));
  EXPECT_EQ(g.output_of(g.ops.back()).shape, (Shape{1, 1, 1080, 1920}));
  EXPECT_EQ(total_source_params(g), 1 * 64 * 9 + 64 + 15 * (64 * 64 * 9 + 2 * 64) + 64 * 9);
}

TEST(Zoo, GooglenetInceptionConcatenatesFourBranches) {
  const Graph g = zoo_model("googlenet");
  const auto concat = std::find_if(g.ops.begin(), g.ops.end(), [](const Op& op) { return op.kind == OpKind::Concat; });
  ASSERT_NE(concat, g.ops.end());
  EXPECT_EQ(concat->inputs.size(), 4u);
  EXPECT_EQ(g.output_of(*concat).shape, (Shape{1, 256, 28, 28}));
}

TEST(Zoo, AlexnetAtOtherResolutionPoolsAdaptively) {
  ModelOptions options;
  options.resolution = Resolution{320, 320};
  const Graph g = zoo_model("alexnet", options);
  EXPECT_EQ(total_source_params(g), 61'100'840);
}

TEST(Zoo, SeededWeightsAreDeterministicAndFolded) {
  ModelOptions options;
  options.with_weights = true;
  const Graph a = zoo_model("resnet18", options);
  const Graph b = zoo_model("resnet18", options);
  ASSERT_TRUE(a.has_weights());
  ASSERT_NE(a.ops[0].bias, nullptr);  // BatchNorm folded into a bias
  EXPECT_EQ(*a.ops[0].weight, *b.ops[0].weight);
  EXPECT_EQ(*a.ops[0].bias, *b.ops[0].bias);
  EXPECT_EQ(static_cast<int64_t>(a.ops[0].weight->size()), 64 * 3 * 7 * 7);
}

TEST(Zoo, UnknownNameListsTheZoo) {
  try {
    zoo_model("resnet19");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resnet19"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("mobilenet_v2"), std::string::npos);
  }
}

TEST(Zoo, TooSmallResolutionNamesTheLayer) {
  ModelOptions options;
  options.resolution = Resolution{16, 16};
  try {
    zoo_model("vgg16", options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("features."), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("does not fit"), std::string::npos) << e.what();
  }
}

TEST(Resolution, ParsesAndRejects) {
  EXPECT_EQ(parse_resolution("1080x1920"), (Resolution{1080, 1920}));
  EXPECT_EQ(parse_resolution("512"), (Resolution{512, 512}));
  EXPECT_THROW(parse_resolution("abc"), Error);
  EXPECT_THROW(parse_resolution("0x10"), Error);
  EXPECT_THROW(parse_resolution("10x"), Error);
}

}  // namespace
}  // namespace occam
