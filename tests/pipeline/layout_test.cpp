// Stage routes (which tensors each cut carries), predictions for this CPU and STAP helpers.
#include "occam/error.hpp"
#include "pipeline/pipeline_test_support.hpp"

#include <gtest/gtest.h>

namespace occam {
namespace {

using testing::plan_with_starts;
using testing::routing_net;

std::vector<std::string> names(const Graph& graph, const std::vector<TensorId>& ids) {
  std::vector<std::string> out;
  for (TensorId t : ids) out.push_back(graph.tensor(t).name);
  return out;
}

TEST(PipelineLayout, CarriesSkipsAndEarlyOutputsAcrossCuts) {
  const Graph graph = routing_net();
  const Plan plan = plan_with_starts(graph, {0, 1, 2, 3});
  const PipelineLayout layout = pipeline_layout(graph, plan);
  ASSERT_EQ(layout.stages.size(), 4u);
  const std::string a = graph.output_of(graph.op(0)).name, b = graph.output_of(graph.op(1)).name,
                    c = graph.output_of(graph.op(2)).name, f = graph.output_of(graph.op(4)).name;
  EXPECT_EQ(names(graph, layout.stages[0].outgoing_tensors), (std::vector<std::string>{a}));
  EXPECT_EQ(names(graph, layout.stages[1].outgoing_tensors), (std::vector<std::string>{a, b}));
  EXPECT_EQ(names(graph, layout.stages[2].outgoing_tensors), (std::vector<std::string>{a, b, c}));
  EXPECT_EQ(names(graph, layout.stages[3].outgoing_tensors), (std::vector<std::string>{b, f}));

  // Stage 1 reads a and passes it on; stage 2 carries a and b past its own output c.
  const StageRoute& second = layout.stages[1];
  EXPECT_EQ(second.inputs, (std::vector<int>{0}));
  ASSERT_EQ(second.outgoing.size(), 2u);
  EXPECT_TRUE(second.outgoing[0].carried);
  EXPECT_FALSE(second.outgoing[1].carried);
  const StageRoute& last = layout.stages[3];
  EXPECT_EQ(last.inputs, (std::vector<int>{0, 2}));  // the Add reads a and c from the bundle {a, b, c}
  // Network outputs are {f, b}; the last bundle holds them in tensor order {b, f}.
  EXPECT_EQ(layout.outputs, (std::vector<int>{1, 0}));
}

TEST(PipelineLayout, OneStageIsTheWholeGraph) {
  const Graph graph = routing_net();
  const PipelineLayout layout = pipeline_layout(graph, plan_with_starts(graph, {0}));
  ASSERT_EQ(layout.stages.size(), 1u);
  EXPECT_EQ(layout.stages[0].graph.ops.size(), graph.ops.size());
  EXPECT_EQ(layout.stages[0].inputs, (std::vector<int>{0}));
  EXPECT_EQ(layout.outputs, (std::vector<int>{1, 0}));
}

TEST(PipelineLayout, FilterBytesAreThePartitionsAtFp32) {
  const Graph graph = routing_net();
  PlanOptions options;
  options.capacity_bytes = int64_t{1} << 30;
  options.analysis.bytes_per_elem = 2;
  const Analysis analysis(graph, options.analysis);
  const Plan plan = plan_from_starts(analysis, options, {0, 2}, "test");
  const PipelineLayout layout = pipeline_layout(graph, plan);
  for (size_t k = 0; k < layout.stages.size(); ++k) {
    int64_t elements = 0;
    for (OpId o = layout.stages[k].first_op; o <= layout.stages[k].last_op; ++o) elements += filter_elements(graph, graph.op(o));
    EXPECT_EQ(layout.stages[k].filter_bytes, 4 * elements) << "stage " << k;
    EXPECT_EQ(layout.stages[k].filter_bytes, 2 * plan.partitions[k].filter_bytes) << "stage " << k;
  }
}

TEST(PipelineLayout, RejectsPlansThatDoNotCoverTheOpsInOrder) {
  const Graph graph = routing_net();
  Plan gap = plan_with_starts(graph, {0, 2});
  gap.partitions[1].first_op = 3;
  gap.partitions[1].ops.erase(gap.partitions[1].ops.begin());
  EXPECT_THROW(
      {
        try {
          pipeline_layout(graph, gap);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("partition 1 covers ops [3, 4], expected a span starting at op 2"),
                    std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
  const Graph other = testing::routing_net(2);
  EXPECT_THROW(pipeline_layout(other, plan_with_starts(graph, {0, 2})), Error);  // made for batch 1
}

TEST(PipelinePrediction, CpuCoreIsOneCoreOfThisMachine) {
  const Hardware hw = cpu_core_hardware();
  EXPECT_EQ(hw.name, "cpu-core");
  EXPECT_NEAR(hw.macs_per_s() * 2 / 1e9, 117.0, 0.2);  // DESIGN.md: 117 GFLOP/s FMA on one thread
  EXPECT_EQ(hw.bytes_per_element, 4);
}

TEST(PipelinePrediction, ComputeBoundStagesTakeTheirMacsAtPeak) {
  const Graph graph = routing_net();
  const Plan plan = plan_with_starts(graph, {0, 2});
  const Hardware hw = cpu_core_hardware();
  const std::vector<double> one = predict_stage_seconds(graph, plan, hw, 1);
  const std::vector<double> four = predict_stage_seconds(graph, plan, hw, 4);
  ASSERT_EQ(one.size(), 2u);
  for (size_t k = 0; k < one.size(); ++k) {
    const double compute = static_cast<double>(plan.partitions[k].macs) / hw.macs_per_s();
    const double transfer = static_cast<double>(plan.partitions[k].boundary_in_bytes + plan.partitions[k].boundary_out_bytes) /
                            hw.dram_bytes_per_s();
    EXPECT_DOUBLE_EQ(one[k], std::max(compute, transfer)) << "stage " << k;
    EXPECT_DOUBLE_EQ(four[k], 4 * one[k]) << "stage " << k;
  }
}

TEST(PipelineStap, ReplicasGoToTheBottleneckAndBalanceImproves) {
  const std::vector<double> times = {3.0, 1.0};
  const std::vector<int> replicas = choose_replicas(times, 4);
  EXPECT_EQ(replicas, (std::vector<int>{3, 1}));
  const std::vector<int> one = {1, 1};
  EXPECT_DOUBLE_EQ(stage_imbalance(times, one), 1.5);                        // period 3 vs 4 s over 2 chips
  EXPECT_DOUBLE_EQ(stage_imbalance(times, replicas), 1.0);                   // period 1 vs 4 s over 4 chips
  EXPECT_DOUBLE_EQ(stage_imbalance(times, std::vector<int>{2, 1}), 1.5 * 3 / 4);  // period 1.5 vs 4 s over 3
  EXPECT_THROW(choose_replicas(times, 1), Error);
}

}  // namespace
}  // namespace occam
