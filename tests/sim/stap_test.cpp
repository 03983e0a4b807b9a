#include "occam/error.hpp"
#include "occam/sim.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <random>

namespace occam {
namespace {

// Best period over every assignment of at least one chip per stage within the budget.
double exhaustive_period(const std::vector<double>& times, int budget) {
  std::vector<int> replicas(times.size(), 1);
  double best = 1e300;
  const std::function<void(size_t, int)> assign = [&](size_t stage, int left) {
    if (stage == times.size()) {
      best = std::min(best, pipeline_period(times, replicas));
      return;
    }
    for (int r = 1; r <= left - static_cast<int>(times.size() - stage - 1); ++r) {
      replicas[stage] = r;
      assign(stage + 1, left - r);
    }
  };
  assign(0, budget);
  return best;
}

TEST(Stap, MatchesExhaustiveAssignmentOnRandomPipelines) {
  std::mt19937_64 rng(2106);
  std::uniform_real_distribution<double> time(0.1, 10.0);
  for (int trial = 0; trial < 400; ++trial) {
    const int stages = std::uniform_int_distribution<int>(1, 8)(rng);
    const int budget = std::uniform_int_distribution<int>(stages, 16)(rng);
    std::vector<double> times(static_cast<size_t>(stages));
    for (double& t : times) t = time(rng);
    const std::vector<int> replicas = stap_replicas(times, budget);
    ASSERT_EQ(replicas.size(), times.size());
    EXPECT_LE(std::accumulate(replicas.begin(), replicas.end(), 0), budget);
    for (int r : replicas) EXPECT_GE(r, 1);
    EXPECT_DOUBLE_EQ(pipeline_period(times, replicas), exhaustive_period(times, budget)) << "trial " << trial;
  }
}

TEST(Stap, UsesTheFewestChipsForTheBestPeriod) {
  // Equal stages: one extra chip cannot lower the period, so it is not used.
  EXPECT_EQ(stap_replicas(std::vector<double>{2.0, 2.0}, 3), (std::vector<int>{1, 1}));
  EXPECT_EQ(stap_replicas(std::vector<double>{2.0, 2.0}, 4), (std::vector<int>{2, 2}));
  // A stage three times slower than the rest gets three replicas.
  EXPECT_EQ(stap_replicas(std::vector<double>{1.0, 3.0, 1.0}, 16), (std::vector<int>{3, 9, 3}));
  EXPECT_EQ(stap_replicas(std::vector<double>{1.0, 3.0, 1.0}, 5), (std::vector<int>{1, 3, 1}));
  std::mt19937_64 rng(14138);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> times(static_cast<size_t>(std::uniform_int_distribution<int>(1, 6)(rng)));
    for (double& t : times) t = std::uniform_int_distribution<int>(1, 6)(rng);
    const int budget = std::uniform_int_distribution<int>(static_cast<int>(times.size()), 16)(rng);
    const std::vector<int> replicas = stap_replicas(times, budget);
    const double period = pipeline_period(times, replicas);
    // Taking a chip from any replicated stage makes the pipeline slower.
    for (size_t k = 0; k < replicas.size(); ++k) {
      if (replicas[k] == 1) continue;
      std::vector<int> fewer = replicas;
      --fewer[k];
      EXPECT_GT(pipeline_period(times, fewer), period);
    }
  }
}

TEST(Stap, ExplainsABudgetBelowTheStageCount) {
  try {
    stap_replicas(std::vector<double>{1.0, 2.0, 3.0}, 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "STAP: a pipeline of 3 stages needs at least 3 chips (one per stage), but the budget is 2");
  }
  EXPECT_THROW(stap_replicas(std::vector<double>{-1.0}, 2), Error);
}

TEST(Stap, ZeroTimesNeedNoReplicas) {
  EXPECT_EQ(stap_replicas(std::vector<double>{0.0, 0.0}, 8), (std::vector<int>{1, 1}));
}

}  // namespace
}  // namespace occam
