// Planning speed: analysis + optimal DP for each zoo net, and a sweep of 64 capacities over the
// whole zoo (one Analysis and SpanTable per net, reused across capacities as sweeps do).
#include "occam/plan.hpp"

#include <benchmark/benchmark.h>

#include <cmath>

namespace {

using namespace occam;

PlanOptions options_at(int64_t capacity) {
  PlanOptions options;
  options.capacity_bytes = capacity;
  options.analysis = {2, Granularity::Row};
  options.batch = 1;
  return options;
}

void BM_PlanZooNet(benchmark::State& state, const char* name) {
  const Graph graph = zoo_model(name);
  for (auto _ : state) {
    const Analysis analysis(graph, options_at(1 << 20).analysis);
    benchmark::DoNotOptimize(plan_optimal(analysis, options_at(1 << 20)));
  }
}

// 64 capacities from 64 KiB to 256 MiB, log-spaced.
int64_t capacity_at(int i) { return static_cast<int64_t>(std::ldexp(1.0, 16 + i * 12 / 63.0)); }

void BM_SweepZoo64Capacities(benchmark::State& state) {
  std::vector<Graph> graphs;
  for (const ZooEntry& entry : zoo_models()) graphs.push_back(zoo_model(entry.name));
  for (auto _ : state) {
    int64_t total = 0;
    for (const Graph& graph : graphs) {
      const Analysis analysis(graph, options_at(1).analysis);
      const SpanTable table(analysis, capacity_at(63));
      for (int i = 0; i < 64; ++i) total += plan_optimal(table, options_at(capacity_at(i))).traffic_bytes;
    }
    benchmark::DoNotOptimize(total);
  }
}

}  // namespace

BENCHMARK_CAPTURE(BM_PlanZooNet, alexnet, "alexnet")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanZooNet, vgg16, "vgg16")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanZooNet, resnet18, "resnet18")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanZooNet, resnet50, "resnet50")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanZooNet, mobilenet_v2, "mobilenet_v2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanZooNet, googlenet, "googlenet")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanZooNet, dncnn, "dncnn")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SweepZoo64Capacities)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
