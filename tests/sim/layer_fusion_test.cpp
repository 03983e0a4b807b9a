#include "occam/baselines.hpp"
#include "occam/error.hpp"
#include "support/graphs.hpp"

#include <gtest/gtest.h>

#include <random>

namespace occam {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// Alwani et al. (MICRO 2016): fusing the first five convolutional layers of VGGNet-E (conv1_1 ..
// conv3_1 with pool1 and pool2; VGG-16 has the same first five) cuts feature-map traffic from 77 MB
// to 3.6 MB per image with 362 KB on chip. The figures are 32-bit elements counted in MiB.
class VggFusion : public ::testing::Test {
protected:
  Graph graph = zoo_model("vgg16");
  Analysis analysis{graph, AnalysisOptions{4, Granularity::Row}};
  OpId first = 0;
  OpId conv3_1 = 6;
};

TEST_F(VggFusion, SpanIsConv11ToConv31) {
  int convs = 0;
  for (OpId o = first; o <= conv3_1; ++o) convs += graph.op(o).kind == OpKind::Conv;
  EXPECT_EQ(convs, 5);
  EXPECT_EQ(graph.op(conv3_1).kind, OpKind::Conv);
  EXPECT_EQ(graph.output_of(graph.op(conv3_1)).shape.c, 256);
}

TEST_F(VggFusion, ReuseWithOneByOneTileNeedsThePublished362KB) {
  const auto group = fuse_span(analysis, first, conv3_1, 1, 1, FusionOverlap::Reuse);
  ASSERT_TRUE(group);
  // Top buffers (2 rows of every 3x3 conv's input) 349,440 B + left buffers 6,240 B + new tiles 15,040 B.
  EXPECT_EQ(group->buffer_bytes, 370'720);
  EXPECT_NEAR(static_cast<double>(group->buffer_bytes) / 1024.0, 362.0, 0.5);
}

TEST_F(VggFusion, FusedTrafficIsThePublished3Point6MB) {
  const auto group = fuse_span_fitting(analysis, first, conv3_1, 370'720, FusionOverlap::Reuse, false);
  ASSERT_TRUE(group);
  EXPECT_EQ(group->tile_h, 1);
  // Input image read once, conv3_1's output written once.
  EXPECT_EQ(group->activation_traffic(), (3 * 224 * 224 + 256 * 56 * 56) * 4);
  EXPECT_NEAR(static_cast<double>(group->activation_traffic()) / kMiB, 3.6, 0.15 * 3.6);
  // Layer by layer over the same span (pooling as its own layer): 86.3 MiB, 12% above the
  // published 77 MB, which reads each conv's unpooled input instead of a written pooled one.
  int64_t layer_by_layer = 0;
  for (OpId o = first; o <= conv3_1; ++o) layer_by_layer += analysis.op(o).input_bytes + analysis.op(o).output_bytes;
  EXPECT_NEAR(static_cast<double>(layer_by_layer) / kMiB, 77.0, 0.15 * 77.0);
  EXPECT_EQ(group->macs, [&] {
    int64_t macs = 0;
    for (OpId o = first; o <= conv3_1; ++o) macs += analysis.op(o).macs;
    return macs;
  }());
}

TEST_F(VggFusion, RecomputeTradesMacsAndInputRereadsForTileSize) {
  const auto small = fuse_span(analysis, first, conv3_1, 1, 1, FusionOverlap::Recompute);
  const auto large = fuse_span(analysis, first, conv3_1, 8, 8, FusionOverlap::Recompute);
  const auto reuse = fuse_span(analysis, first, conv3_1, 8, 8, FusionOverlap::Reuse);
  ASSERT_TRUE(small && large && reuse);
  EXPECT_GT(small->macs, large->macs);
  EXPECT_GT(large->macs, reuse->macs);
  EXPECT_GT(small->input_bytes, large->input_bytes);
  EXPECT_GT(large->input_bytes, reuse->input_bytes);
  EXPECT_LT(small->buffer_bytes, large->buffer_bytes);
  EXPECT_EQ(large->output_bytes, reuse->output_bytes);
}

// On a chain of stride-1 3x3 convolutions, reuse keeps two rows of every input at full width, the
// closed form of Alwani's top buffers.
TEST(LayerFusion, ReuseBuffersOnAChainMatchTheClosedForm) {
  const Graph g = testing::chain({{3, 1, 8}, {3, 1, 16}, {3, 1, 4}}, {1, 3, 20, 12});
  const Analysis analysis(g, AnalysisOptions{2, Granularity::Row});
  const int64_t tile = 4;
  const auto group = fuse_span(analysis, 0, 2, tile, tile, FusionOverlap::Reuse);
  ASSERT_TRUE(group);
  // Interior tiles: every tensor gains `tile` new rows and columns and reuses 2 from before.
  int64_t expected = 0;
  for (int64_t c : {3, 8, 16}) expected += c * 2 * (2 * 12 + tile * 2 + tile * tile);
  expected += 4 * 2 * tile * tile;  // the output tile
  EXPECT_EQ(group->buffer_bytes, expected);
  EXPECT_EQ(group->input_bytes, 3 * 20 * 12 * 2);
  EXPECT_EQ(group->output_bytes, 4 * 20 * 12 * 2);
}

// Recompute reads and computes every tile's whole pyramid: check against a direct count.
TEST(LayerFusion, RecomputeCountsEveryPyramidRegion) {
  const Graph g = testing::chain({{3, 1, 2}, {3, 1, 2}}, {1, 1, 10, 10});
  const Analysis analysis(g, AnalysisOptions{1, Granularity::Row});
  const auto group = fuse_span(analysis, 0, 1, 5, 5, FusionOverlap::Recompute);
  ASSERT_TRUE(group);
  // Output tiles [0,5) and [5,10) per axis; conv1 output regions [0,6) and [4,10) (6 each);
  // input regions [0,7) and [3,10) (7 each).
  EXPECT_EQ(group->input_bytes, 14 * 14 * 1);
  EXPECT_EQ(group->macs, analysis.op(1).macs + analysis.op(0).macs * 12 * 12 / 100);
  EXPECT_EQ(group->buffer_bytes, 7 * 7 * 1 + 6 * 6 * 2 + 5 * 5 * 2);
}

TEST(LayerFusion, SpansWithASecondOutputOrAFullyConnectedOpDoNotFuse) {
  const Graph vgg = zoo_model("vgg16");
  const Analysis analysis(vgg, AnalysisOptions{2, Granularity::Row});
  const OpId last = analysis.op_count() - 1;
  EXPECT_FALSE(fuse_span(analysis, last - 1, last, 1, 1, FusionOverlap::Reuse));
  EXPECT_TRUE(fuse_span(analysis, 0, 1, 1, 1, FusionOverlap::Reuse));

  GraphBuilder b("two_outputs", "test");
  const TensorId x = b.input("x", {1, 2, 8, 8});
  const TensorId y = b.add(testing::conv_op("a", x, 2, 3));
  const TensorId z = b.add(testing::conv_op("b", y, 2, 3));
  b.mark_output(y);
  b.mark_output(z);
  const Graph g = std::move(b).finish();
  const Analysis a2(g, AnalysisOptions{2, Granularity::Row});
  EXPECT_FALSE(fuse_span(a2, 0, 1, 1, 1, FusionOverlap::Reuse));
}

// A residual block fuses as one pyramid: the skip's region is read in the same tile as the add.
TEST(LayerFusion, ResidualBlockFusesWithOneOutput) {
  GraphBuilder b("residual", "test");
  const TensorId x = b.input("x", {1, 4, 12, 12});
  const TensorId y = b.add(testing::conv_op("a", x, 4, 3));
  const TensorId z = b.add(testing::conv_op("b", y, 4, 3));
  b.mark_output(b.add(testing::nary_op("add", OpKind::Add, {z, x})));
  const Graph g = std::move(b).finish();
  const Analysis analysis(g, AnalysisOptions{2, Granularity::Row});
  const auto group = fuse_span(analysis, 0, analysis.op_count() - 1, 3, 3, FusionOverlap::Reuse);
  ASSERT_TRUE(group);
  EXPECT_EQ(group->input_bytes, 4 * 12 * 12 * 2);
  EXPECT_EQ(group->output_bytes, 4 * 12 * 12 * 2);
}

// The grouping is the least-traffic one: compare with every cut set on small random chains.
TEST(LayerFusion, GroupingIsOptimalOverAllCutSets) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    const Graph g = testing::random_chain(rng, 6);
    const Analysis analysis(g, AnalysisOptions{2, Granularity::Row});
    const int n = analysis.op_count();
    const int64_t capacity = std::uniform_int_distribution<int64_t>(200, 6000)(rng);
    for (FusionOverlap overlap : {FusionOverlap::Reuse, FusionOverlap::Recompute}) {
      const LayerFusionPlan plan = plan_layer_fusion(analysis, {capacity, 1, overlap});
      double best = 1e300;
      for (uint32_t cuts = 0; cuts < (1u << (n - 1)); ++cuts) {
        double total = 0.0;
        int first = 0;
        for (int op = 0; op < n && total < 1e300; ++op) {
          if (op != n - 1 && !(cuts >> op & 1u)) continue;
          double cost = 1e300;
          if (first == op) {
            cost = static_cast<double>(analysis.op(op).input_bytes + analysis.op(op).output_bytes +
                                       analysis.op(op).filter_bytes);
          } else if (auto group = fuse_span_fitting(analysis, first, op, capacity, overlap)) {
            cost = static_cast<double>(group->activation_traffic() + group->filter_bytes);
          }
          total = cost >= 1e300 ? 1e300 : total + cost;
          first = op + 1;
        }
        best = std::min(best, total);
      }
      EXPECT_DOUBLE_EQ(static_cast<double>(plan.activation_bytes + plan.filter_bytes), best)
          << "trial " << trial << " " << to_string(overlap);
      int64_t covered = 0;
      for (const FusedGroup& group : plan.groups) covered += group.last_op - group.first_op + 1;
      EXPECT_EQ(covered, n);
    }
  }
}

TEST(LayerFusion, RejectsBadSpansAndTiles) {
  const Graph g = testing::chain({{3, 1, 2}}, {1, 1, 6, 6});
  const Analysis analysis(g, AnalysisOptions{});
  EXPECT_THROW(fuse_span(analysis, 0, 3, 1, 1, FusionOverlap::Reuse), Error);
  EXPECT_THROW(fuse_span(analysis, 0, 0, 0, 1, FusionOverlap::Reuse), Error);
}

}  // namespace
}  // namespace occam
