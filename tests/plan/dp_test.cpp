#include "occam/error.hpp"
#include "occam/plan.hpp"
#include "support/graphs.hpp"

#include <gtest/gtest.h>

#include <limits>

namespace occam {
namespace {

// Least traffic over every cut set of the topological order, by enumeration.
int64_t exhaustive_best(const Analysis& analysis, const PlanOptions& options) {
  const int n = analysis.op_count();
  std::vector<std::vector<int64_t>> span(static_cast<size_t>(n), std::vector<int64_t>(static_cast<size_t>(n), -1));
  for (int i = 0; i < n; ++i) {
    for (int j = i; j < n; ++j) {
      const Partition p = make_partition(analysis, options, i, j);
      if (fits(p, options.capacity_bytes)) span[static_cast<size_t>(i)][static_cast<size_t>(j)] = p.traffic_bytes();
    }
  }
  int64_t best = std::numeric_limits<int64_t>::max();
  for (uint32_t cuts = 0; cuts < (1u << (n - 1)); ++cuts) {
    int64_t total = 0;
    int first = 0;
    for (int op = 0; op < n && total >= 0; ++op) {
      const bool cut_after = op == n - 1 || (cuts >> op & 1u);
      if (!cut_after) continue;
      const int64_t cost = span[static_cast<size_t>(first)][static_cast<size_t>(op)];
      total = cost < 0 ? -1 : total + cost;
      first = op + 1;
    }
    if (total >= 0) best = std::min(best, total);
  }
  return best;
}

// A capacity between the smallest that any plan can use (some single ops then need a fallback)
// and the whole network's, so that plans vary from many partitions to one.
int64_t random_capacity(std::mt19937_64& rng, const Analysis& analysis) {
  int64_t widest = 1;
  for (OpId o = 0; o < analysis.op_count(); ++o) widest = std::max(widest, analysis.closure(o, o).bytes);
  const int64_t whole = analysis.closure(0, analysis.op_count() - 1).bytes + analysis.total_filter_bytes();
  int64_t capacity = std::uniform_int_distribution<int64_t>(widest / 2 + 1, std::max(widest, whole + whole / 5))(rng);
  PlanOptions options;
  options.analysis = analysis.options();
  for (;; capacity += capacity / 4 + 1) {
    options.capacity_bytes = capacity;
    try {
      for (OpId o = 0; o < analysis.op_count(); ++o) make_partition(analysis, options, o, o);
      return capacity;
    } catch (const Error&) {
      // Column strips cannot fit this op yet: grow the chip.
    }
  }
}

class DpOptimality : public ::testing::TestWithParam<bool> {};

TEST_P(DpOptimality, EqualsExhaustiveSearchOverAllCutSets) {
  const bool dags = GetParam();
  std::mt19937_64 rng(dags ? 2022 : 2106);
  int compared = 0;
  int multi_partition = 0;
  for (int trial = 0; trial < 500; ++trial) {
    const int ops = std::uniform_int_distribution<int>(2, 14)(rng);
    const Graph g = dags ? testing::random_dag(rng, ops) : testing::random_chain(rng, ops);
    const Analysis analysis(g, {1, Granularity::Row});
    PlanOptions options;
    options.analysis = analysis.options();
    options.capacity_bytes = random_capacity(rng, analysis);
    options.batch = std::uniform_int_distribution<int64_t>(1, 8)(rng);
    const Plan plan = plan_optimal(analysis, options);
    ASSERT_EQ(plan.traffic_bytes, exhaustive_best(analysis, options))
        << "trial " << trial << ", " << g.ops.size() << " ops, capacity " << options.capacity_bytes;
    for (const Partition& p : plan.partitions) EXPECT_TRUE(fits(p, options.capacity_bytes));
    ++compared;
    multi_partition += plan.partitions.size() > 1;
  }
  EXPECT_EQ(compared, 500);
  EXPECT_GT(multi_partition, 150);  // the cases are not all trivial
}

INSTANTIATE_TEST_SUITE_P(ChainsAndDags, DpOptimality, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "RandomDags" : "RandomChains"; });

TEST(Dp, MoreCapacityNeverMoreTraffic) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 60; ++trial) {
    const Graph g = trial % 2 ? testing::random_dag(rng, 12) : testing::random_chain(rng, 12);
    const Analysis analysis(g, {1, Granularity::Row});
    PlanOptions options;
    options.analysis = analysis.options();
    int64_t previous = std::numeric_limits<int64_t>::max();
    const int64_t start = random_capacity(rng, analysis);
    for (int64_t capacity = start; capacity < 8 * start; capacity += start / 7 + 1) {
      options.capacity_bytes = capacity;
      const int64_t traffic = plan_optimal(analysis, options).traffic_bytes;
      EXPECT_LE(traffic, previous) << "trial " << trial << " capacity " << capacity;
      previous = traffic;
    }
  }
}

TEST(Dp, WholeNetworkCapacityReachesTheFullReuseBound) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 40; ++trial) {
    const Graph g = trial % 2 ? testing::random_dag(rng, 10) : testing::random_chain(rng, 10);
    const Analysis analysis(g, {1, Granularity::Row});
    PlanOptions options;
    options.analysis = analysis.options();
    options.capacity_bytes = analysis.closure(0, analysis.op_count() - 1).bytes + analysis.total_filter_bytes();
    const Plan plan = plan_optimal(analysis, options);
    EXPECT_EQ(plan.partitions.size(), 1u);
    EXPECT_EQ(plan.traffic_bytes, plan.full_reuse_bytes);
    EXPECT_EQ(plan.stream_bytes(10), analysis.total_filter_bytes() + 10 * analysis.full_reuse_activation_bytes());
  }
  for (const ZooEntry& entry : zoo_models()) {
    const Graph g = zoo_model(entry.name, {.resolution = Resolution{64, 64}});
    const Analysis analysis(g, {2, Granularity::Row});
    PlanOptions options;
    options.analysis = analysis.options();
    options.capacity_bytes = analysis.closure(0, analysis.op_count() - 1).bytes + analysis.total_filter_bytes();
    EXPECT_EQ(plan_optimal(analysis, options).traffic_bytes, analysis.full_reuse_activation_bytes()) << entry.name;
  }
}

TEST(Dp, VggFc6StreamsItsWeightsOncePerMiniBatch) {
  const Graph g = zoo_model("vgg16");
  const Analysis analysis(g, {2, Granularity::Row});
  PlanOptions options;
  options.analysis = analysis.options();
  options.capacity_bytes = 8 << 20;
  options.batch = 16;
  const Plan plan = plan_optimal(analysis, options);
  const auto fc6 = std::find_if(plan.partitions.begin(), plan.partitions.end(),
                                [](const Partition& p) { return p.ops.front() == "classifier.0"; });
  ASSERT_NE(fc6, plan.partitions.end());
  EXPECT_EQ(fc6->ops.size(), 1u);
  EXPECT_EQ(fc6->fallback, Fallback::StreamWeights);
  const int64_t fc6_filters = (25088 * 4096 + 4096) * 2;
  EXPECT_EQ(fc6->streamed_filter_bytes, fc6_filters);
  EXPECT_EQ(fc6->fallback_bytes, (fc6_filters + 15) / 16);
  EXPECT_EQ(fc6->filter_bytes, 0);
  EXPECT_LE(fc6->on_chip_bytes(), options.capacity_bytes);
  EXPECT_FALSE(fc6->note.empty());
}

TEST(Dp, HighResolutionLayersFallBackToColumnStrips) {
  // DnCNN at 1080p: one 3x3 layer's line buffers (3 rows x 1920 x 64 x 2 B = 720 KiB) exceed 256 KiB.
  const Graph g = zoo_model("dncnn");
  const Analysis analysis(g, {2, Granularity::Row});
  PlanOptions options;
  options.analysis = analysis.options();
  options.capacity_bytes = 256 << 10;
  const Plan plan = plan_optimal(analysis, options);
  for (const Partition& p : plan.partitions) {
    EXPECT_LE(p.on_chip_bytes(), options.capacity_bytes);
    if (p.fallback == Fallback::ColumnStrips) {
      EXPECT_GT(p.column_strips, 1);
      EXPECT_GT(p.fallback_bytes, 0);  // halo columns are re-read
    }
  }
  EXPECT_GT(plan.traffic_bytes, analysis.full_reuse_activation_bytes());
}

TEST(Dp, CapacityTooSmallForAnyPlanNamesTheOp) {
  const Graph g = zoo_model("resnet18");
  const Analysis analysis(g, {2, Granularity::Row});
  PlanOptions options;
  options.analysis = analysis.options();
  options.capacity_bytes = 16;
  try {
    plan_optimal(analysis, options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("too small for any plan"), std::string::npos) << message;
    EXPECT_NE(message.find("conv1"), std::string::npos) << message;
  }
  options.capacity_bytes = 0;
  EXPECT_THROW(plan_optimal(analysis, options), Error);
}

TEST(Dp, ZooPlansAreValidAndBeatLayerByLayer) {
  for (const ZooEntry& entry : zoo_models()) {
    const Graph g = zoo_model(entry.name);
    const Analysis analysis(g, {2, Granularity::Row});
    PlanOptions options;
    options.analysis = analysis.options();
    options.capacity_bytes = 8 << 20;
    options.batch = 8;
    const Plan plan = plan_optimal(analysis, options);
    EXPECT_LT(plan.traffic_bytes, plan.base_case_bytes) << entry.name;
    EXPECT_GE(plan.traffic_bytes, plan.full_reuse_bytes) << entry.name;
    OpId next = 0;
    for (const Partition& p : plan.partitions) {
      EXPECT_EQ(p.first_op, next);
      next = p.last_op + 1;
    }
    EXPECT_EQ(next, analysis.op_count());
  }
}

}  // namespace
}  // namespace occam
