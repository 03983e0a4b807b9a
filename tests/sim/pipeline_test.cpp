#include "occam/baselines.hpp"
#include "occam/error.hpp"
#include "occam/sim.hpp"
#include "support/graphs.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <random>

namespace occam {
namespace {

Hardware test_hardware() {
  Hardware hw = load_hardware("edge");
  hw.chips = 1000;
  return hw;
}

double per_image_offchip(const MethodResult& m) { return m.offchip_bytes; }

TEST(StageTime, OverlapTakesTheMaxAndOtherwiseTheSum) {
  Hardware hw = test_hardware();
  hw.macs_per_cycle = 1000;
  hw.clock_ghz = 1.0;       // 1e12 MAC/s
  hw.dram_gb_per_s = 1.0;   // 1e9 B/s
  hw.link_gb_per_s = 2.0;
  Stage stage;
  stage.phases.push_back({"a", 2e9, 1e6, 0.0, 0.0, 0.0, 5e5});  // 2 ms compute, 1.5 ms DRAM at batch 1
  stage.phases.push_back({"b", 1e9, 0.0, 4e6, 0.0, 0.0, 0.0});  // 1 ms compute, 2 ms link
  Accounting accounting;
  StageTime t = stage_time(stage, hw, accounting);
  EXPECT_NEAR(t.compute_s, 3e-3, 1e-15);
  EXPECT_NEAR(t.transfer_s, 3.5e-3, 1e-15);
  EXPECT_NEAR(t.time_s, 2e-3 + 2e-3, 1e-15);
  accounting.overlap = false;
  EXPECT_NEAR(stage_time(stage, hw, accounting).time_s, 6.5e-3, 1e-15);
  // A mini-batch of 4 scales per-image work by 4, but per-batch filters only once.
  accounting.batch = 4;
  t = stage_time(stage, hw, accounting);
  EXPECT_NEAR(t.compute_s, 12e-3, 1e-15);
  EXPECT_NEAR(t.transfer_s, 4.5e-3 + 8e-3, 1e-15);
}

class ZooPipeline : public ::testing::TestWithParam<const char*> {};

// The pipeline moves exactly the plan's traffic per image plus its resident filters once per
// stream, and the base case moves the analysis' layer-by-layer bytes: nothing is re-derived.
TEST_P(ZooPipeline, CostsMatchThePlanAndTheAnalysis) {
  const Graph graph = zoo_model(GetParam());
  const Hardware hw = test_hardware();
  for (int64_t batch : {1, 8}) {
    Accounting accounting;
    accounting.batch = batch;
    accounting.stream = 500;
    const PlanOptions options = plan_options(hw, accounting);
    const Analysis analysis(graph, options.analysis);
    const Plan plan = plan_optimal(analysis, options);
    const MethodResult occam = evaluate_stages("occam", pipeline_stages(analysis, plan, accounting), {}, hw, accounting);
    // The plan rounds streamed filters per image up to whole bytes; we divide exactly.
    EXPECT_NEAR(per_image_offchip(occam), static_cast<double>(plan.traffic_bytes) + static_cast<double>(plan.filter_bytes) / 500.0,
                static_cast<double>(plan.partitions.size()));
    const MethodResult base = evaluate_stages("base", {base_case_stage(analysis)}, {}, hw, accounting);
    EXPECT_NEAR(base.offchip_bytes,
                static_cast<double>(analysis.base_case_activation_bytes()) +
                    static_cast<double>(analysis.total_filter_bytes()) / static_cast<double>(batch),
                1e-6 * base.offchip_bytes);
    EXPECT_DOUBLE_EQ(base.macs, occam.macs);
    EXPECT_EQ(occam.stages, static_cast<int>(plan.partitions.size()));
    EXPECT_EQ(occam.chips, occam.stages);
    // The pipeline's latency is at least its compute time on one chip, and at most the base case
    // (it runs the same MACs and moves no more bytes in any phase).
    EXPECT_GE(occam.latency_s, occam.macs * static_cast<double>(batch) / hw.macs_per_s() * (1 - 1e-12));
    EXPECT_LE(occam.latency_s, base.latency_s * (1 + 1e-12));
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooPipeline, ::testing::Values("alexnet", "resnet18", "mobilenet_v2", "googlenet"));

TEST(Pipeline, LinkHandoffSendsEachBoundaryTensorOnce) {
  const Graph graph = testing::chain({{3, 1, 16}, {3, 1, 16}, {3, 1, 16}, {3, 1, 16}}, {1, 3, 32, 32});
  Hardware hw = test_hardware();
  Accounting accounting;
  const PlanOptions options = plan_options(hw, accounting);
  const Analysis analysis(graph, options.analysis);
  const Plan plan = plan_from_starts(analysis, options, {0, 2}, "test");
  const int64_t cut = analysis.tensor_bytes(graph.op(1).output);
  accounting.handoff = Handoff::Link;
  const std::vector<Stage> link = pipeline_stages(analysis, plan, accounting);
  ASSERT_EQ(link.size(), 2u);
  EXPECT_DOUBLE_EQ(link[0].phases[0].link_bytes, static_cast<double>(cut));
  EXPECT_DOUBLE_EQ(link[1].phases[0].link_in_bytes, static_cast<double>(cut));
  EXPECT_DOUBLE_EQ(link[0].phases[0].dram_bytes, static_cast<double>(analysis.tensor_bytes(graph.inputs[0])));
  const MethodResult via_link = evaluate_stages("link", link, {}, hw, accounting);
  accounting.handoff = Handoff::Dram;
  const MethodResult via_dram = evaluate_stages("dram", pipeline_stages(analysis, plan, accounting), {}, hw, accounting);
  // Through DRAM the cut is written and read back; over a link it crosses once.
  EXPECT_DOUBLE_EQ(via_dram.offchip_bytes - via_link.offchip_bytes, static_cast<double>(cut));
  EXPECT_GT(via_dram.energy.dram_j, via_link.energy.dram_j);
  EXPECT_GT(via_link.energy.link_j, 0.0);
}

TEST(Pipeline, RejectsAPlanForAnotherMiniBatch) {
  const Graph graph = testing::chain({{3, 1, 4}}, {1, 1, 8, 8});
  Accounting accounting;
  const PlanOptions options = plan_options(test_hardware(), accounting);
  const Analysis analysis(graph, options.analysis);
  const Plan plan = plan_optimal(analysis, options);
  accounting.batch = 4;
  EXPECT_THROW(pipeline_stages(analysis, plan, accounting), Error);
}

TEST(Pipeline, ChipBudgetErrorGivesTheSmallestBudgetThatWorks) {
  Hardware hw = load_hardware("edge");
  hw.chips = 4;
  EXPECT_NO_THROW(check_chip_budget(4, hw, "x"));
  try {
    check_chip_budget(9, hw, "vgg16 at 512.00 KiB per chip");
    FAIL();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("vgg16 at 512.00 KiB per chip: the plan has 9 partitions"), std::string::npos) << message;
    EXPECT_NE(message.find("has 4 chips; the smallest chip budget that works is 9 (--chips 9)"), std::string::npos)
        << message;
  }
}

TEST(Energy, IsEachCountTimesItsUnitCost) {
  Hardware hw = test_hardware();
  hw.energy = {2.0, 3.0, 5.0, 7.0};
  Stage stage;
  stage.phases.push_back({"p", 1e6, 1e3, 10.0, 0.0, 4e3, 800.0});
  stage.resident_filter_bytes = 2000;
  Accounting accounting;
  accounting.batch = 4;
  accounting.stream = 100;
  const MethodResult m = evaluate_stages("m", {stage}, {}, hw, accounting);
  EXPECT_NEAR(m.energy.mac_j, 1e6 * 2.0 * 1e-12, 1e-20);
  EXPECT_NEAR(m.energy.dram_j, (1e3 + 800.0 / 4 + 2000.0 / 100) * 5.0 * 1e-12, 1e-20);
  EXPECT_NEAR(m.energy.link_j, 10.0 * 7.0 * 1e-12, 1e-20);
  EXPECT_NEAR(m.energy.sram_j, (4e3 + 800.0 / 4) * 3.0 * 1e-12, 1e-20);
  EXPECT_NEAR(m.offchip_bytes, 1e3 + 200.0 + 20.0 + 10.0, 1e-9);
  EXPECT_NEAR(m.filter_bytes, 220.0, 1e-9);
}

TEST(Evaluation, StapAndDataParallelUseTheChipBudget) {
  const Graph graph = zoo_model("resnet18");
  Hardware hw = load_hardware("fpga");
  hw.chips = 24;
  const Evaluation e = evaluate_model(graph, hw, Accounting{});
  EXPECT_EQ(e.method("base-dp").chips, 24);
  EXPECT_NEAR(e.method("base-dp").throughput, 24 * e.method("base").throughput, 1e-9 * e.method("base-dp").throughput);
  const MethodResult& occam = e.method("occam");
  const MethodResult& stap = e.method("occam+stap");
  EXPECT_LE(stap.chips, 24);
  EXPECT_GE(stap.throughput, occam.throughput);
  EXPECT_DOUBLE_EQ(stap.offchip_bytes, occam.offchip_bytes);  // STAP never changes the partitioning
  EXPECT_DOUBLE_EQ(stap.latency_s, occam.latency_s);
  EXPECT_LE(e.method("occam").offchip_bytes, e.method("greedy").offchip_bytes);
  EXPECT_TRUE(e.notes.empty());
  EXPECT_THROW(e.method("nonexistent"), Error);
}

TEST(Evaluation, NotesAPipelineLongerThanTheBudget) {
  Hardware hw = load_hardware("edge");
  hw.chips = 2;
  const Evaluation e = evaluate_model(zoo_model("resnet18"), hw, Accounting{});
  ASSERT_FALSE(e.notes.empty());
  EXPECT_NE(e.notes.back().find("is the smallest budget that works"), std::string::npos);
  EXPECT_EQ(e.method("occam+stap").chips, static_cast<int>(e.occam.partitions.size()));
}

// Greedy cuts only where the next op does not fit, so every partition but the last is maximal,
// and it never beats the optimal plan.
TEST(Greedy, PartitionsAreMaximalAndNoBetterThanOptimal) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    const Graph graph = testing::random_chain(rng, 8);
    PlanOptions options;
    options.analysis = {2, Granularity::Row};
    const Analysis analysis(graph, options.analysis);
    int64_t widest = 0;
    for (OpId o = 0; o < analysis.op_count(); ++o) widest = std::max(widest, analysis.closure(o, o).bytes);
    options.capacity_bytes = widest + std::uniform_int_distribution<int64_t>(0, 4 * widest)(rng);
    const Plan greedy = plan_greedy(analysis, options);
    const Plan optimal = plan_optimal(analysis, options);
    EXPECT_GE(greedy.traffic_bytes, optimal.traffic_bytes);
    for (size_t p = 0; p + 1 < greedy.partitions.size(); ++p) {
      const Partition& part = greedy.partitions[p];
      EXPECT_TRUE(fits(part, options.capacity_bytes));
      EXPECT_FALSE(fits(make_partition(analysis, options, part.first_op, part.last_op + 1), options.capacity_bytes));
    }
    EXPECT_EQ(greedy.planner, "greedy");
  }
}

}  // namespace
}  // namespace occam
