#include "occam/error.hpp"
#include "occam/sim.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <random>

namespace occam {
namespace {

TEST(EventSim, SteadyStateThroughputIsTheSlowestEffectiveStage) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> time(0.5, 8.0);
  for (int trial = 0; trial < 100; ++trial) {
    const int stages = std::uniform_int_distribution<int>(1, 8)(rng);
    const int budget = std::uniform_int_distribution<int>(stages, 16)(rng);
    std::vector<double> times(static_cast<size_t>(stages));
    for (double& t : times) t = time(rng);
    const std::vector<int> replicas = stap_replicas(times, budget);
    const SimResult sim = simulate_pipeline(times, replicas, {2000, 2, false});
    const double period = pipeline_period(times, replicas);
    EXPECT_NEAR(sim.period_s, period, 0.01 * period) << "trial " << trial;
    // Latency is bounded by back-pressure: never more than a few rounds of the pipeline.
    const double one_pass = std::accumulate(times.begin(), times.end(), 0.0);
    EXPECT_GE(sim.latency_mean_s, one_pass * (1 - 1e-12));
    EXPECT_LT(sim.latency_max_s, 4 * one_pass + 4 * budget * period);
  }
}

TEST(EventSim, ReplicasTakeStaggeredBatches) {
  const std::vector<double> times = {1.0, 3.0};
  const std::vector<int> replicas = {1, 3};
  const SimResult sim = simulate_pipeline(times, replicas, {12, 2, true});
  for (const BusyInterval& busy : sim.trace) {
    if (busy.stage == 1) {
      EXPECT_EQ(busy.batch % 3, busy.replica);
    }
  }
  // Stage 0 emits a batch every second and each replica of stage 1 takes every third: no stalls,
  // so batch b leaves stage 1 at b + 4 and the run ends at 11 + 4.
  EXPECT_DOUBLE_EQ(sim.makespan_s, 15.0);
  EXPECT_DOUBLE_EQ(sim.latency_mean_s, 4.0);
  EXPECT_DOUBLE_EQ(sim.period_s, 1.0);
  ASSERT_EQ(sim.utilisation.size(), 2u);
  EXPECT_NEAR(sim.utilisation[0][0], 12.0 / 15.0, 1e-12);
  for (double u : sim.utilisation[1]) EXPECT_NEAR(u, 12.0 / 15.0, 1e-12);
}

TEST(EventSim, BackPressureHoldsAFastStageBehindASlowOne) {
  const std::vector<double> times = {1.0, 5.0};
  const SimResult sim = simulate_pipeline(times, std::vector<int>{1, 1}, {100, 1, false});
  EXPECT_NEAR(sim.period_s, 5.0, 1e-9);
  // With one buffered batch, a batch waits at most one slow stage before entering it.
  EXPECT_LE(sim.latency_max_s, 1.0 + 5.0 + 5.0 + 1e-9);
  EXPECT_NEAR(sim.utilisation[0][0], 100.0 / sim.makespan_s, 1e-9);
}

TEST(EventSim, RejectsMalformedPipelines) {
  EXPECT_THROW(simulate_pipeline(std::vector<double>{}, std::vector<int>{}, {}), Error);
  EXPECT_THROW(simulate_pipeline(std::vector<double>{1.0}, std::vector<int>{0}, {}), Error);
  EXPECT_THROW(simulate_pipeline(std::vector<double>{1.0}, std::vector<int>{1, 1}, {}), Error);
  EXPECT_THROW(simulate_pipeline(std::vector<double>{1.0}, std::vector<int>{1}, {0, 2, false}), Error);
  EXPECT_THROW(simulate_pipeline(std::vector<double>{1.0}, std::vector<int>{1}, {10, 0, false}), Error);
}

}  // namespace
}  // namespace occam
