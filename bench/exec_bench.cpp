// Reference executor timings per zoo net, against the FMA peak of this machine measured in the same
// run and against the oneDNN times DESIGN.md lists for the 2-vCPU Zen 4 machine kind; and the fused
// row-streaming executor side by side with the best reference (fused_vs_reference/...).
//
//   exec_bench [--benchmark_filter=REGEX]        e.g. --benchmark_filter='mobilenet_v2|resnet18/224'
//
// fused_vs_reference runs both executors in the same process, interleaved (the order alternates
// every iteration, so that neither always finds the caches warm from the other), and reports for
// each its min and median time and GFLOP/s at the minimum, their ratios reference/fused (>= 1: fused
// is as fast), both peaks of activation memory and the fused output's max relative error.
//
// On a machine shared with other work, run with OMP_WAIT_POLICY=passive: oneDNN's OpenMP threads
// otherwise spin at every barrier for a partner thread that is descheduled, and runs vary 10-40x.
//
// Each benchmark compiles its executor once (outside the timing), then times `runs` single runs and
// reports min and median: min_ms, median_ms, GFLOP/s and peak_% at the minimum, and design_ratio =
// DESIGN.md's time / our min (>= 1: as fast as the reference should be) where DESIGN lists one.
#include "occam/exec.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

using occam::ActivationLayout;
using occam::ConvAlgorithm;

// FP32 FMA throughput of `threads` threads: independent multiply-add chains on the widest vectors
// the compiler targets.
double fma_peak_gflops(int threads) {
#if defined(__AVX512F__)
  constexpr int kLanes = 16;
#else
  constexpr int kLanes = 8;
#endif
  using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
  constexpr int kChains = 12;  // enough to cover FMA latency x units
  constexpr int64_t kSteps = 4'000'000;
  const auto work = [](float seed, float* sink) {
    Vec acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = Vec{} + seed * static_cast<float>(c + 1);
    const Vec a = Vec{} + 0.999999f, b = Vec{} + 1e-7f;
    for (int64_t i = 0; i < kSteps; ++i) {
      for (Vec& v : acc) v = v * a + b;
    }
    float sum = 0;
    for (const Vec& v : acc) sum += v[0];
    *sink = sum;
  };
  std::vector<float> sinks(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, 1.0f + static_cast<float>(t), &sinks[static_cast<size_t>(t)]);
  for (std::thread& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  benchmark::DoNotOptimize(sinks.data());
  return 2.0 * kLanes * kChains * static_cast<double>(kSteps) * threads / seconds / 1e9;
}

// Best of several short trials: other tenants' load only ever lowers a trial.
double machine_peak_gflops() {
  static const double peak = [] {
    double best = 0;
    for (int trial = 0; trial < 8; ++trial) {
      best = std::max(best, fma_peak_gflops(static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))));
    }
    return best;
  }();
  return peak;
}

struct NetCase {
  const char* model;
  int64_t h, w;
  ConvAlgorithm algorithm;
  ActivationLayout layout;
  double design_ms;  // DESIGN.md's oneDNN reference time, 0 where it lists none
  int runs;
};

void run_reference(benchmark::State& state, const NetCase& c) {
  occam::ModelOptions options;
  options.resolution = occam::Resolution{c.h, c.w};
  options.with_weights = true;
  const occam::Graph graph = occam::zoo_model(c.model, options);
  const auto executor = occam::compile_reference(graph, {0, c.algorithm, c.layout});
  const std::vector<occam::HostTensor> inputs = {occam::random_input(graph.tensor(graph.inputs[0]).shape)};
  std::vector<occam::HostTensor> outputs;
  for (const occam::Shape& shape : executor->output_shapes()) outputs.emplace_back(shape);
  executor->run(inputs, outputs);  // warm-up: first touch of the arena, caches
  std::vector<double> ms;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    executor->run(inputs, outputs);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(seconds);
    ms.push_back(seconds * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  const double min_ms = ms.front();
  const double median_ms = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
  const double gflops = 2.0 * static_cast<double>(occam::total_macs(graph)) / (min_ms * 1e-3) / 1e9;
  state.counters["min_ms"] = min_ms;
  state.counters["median_ms"] = median_ms;
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_%"] = 100.0 * gflops / machine_peak_gflops();
  state.counters["act_MiB"] = static_cast<double>(executor->memory().activation_peak_bytes()) / (1 << 20);
  if (c.design_ms > 0) state.counters["design_ratio"] = c.design_ms / min_ms;
  state.SetLabel(executor->describe());
}

constexpr auto kDirect = ConvAlgorithm::Direct;
constexpr auto kWinograd = ConvAlgorithm::Winograd;
constexpr auto kMeasure = ActivationLayout::Measure;

const NetCase kCases[] = {
    {"mobilenet_v2", 224, 224, kDirect, kMeasure, 3.44, 30},
    {"mobilenet_v2", 224, 224, kDirect, ActivationLayout::Any, 3.52, 30},
    {"mobilenet_v2", 224, 224, kDirect, ActivationLayout::Blocked, 3.44, 30},
    {"mobilenet_v2", 1024, 1024, kDirect, kMeasure, 73.7, 8},
    {"mobilenet_v2", 1024, 1024, kDirect, ActivationLayout::Any, 89.4, 8},
    {"mobilenet_v2", 1024, 1024, kDirect, ActivationLayout::Blocked, 73.7, 8},
    {"resnet18", 224, 224, kDirect, kMeasure, 15.8, 20},
    {"resnet18", 224, 224, kWinograd, kMeasure, 10.8, 20},
    {"resnet18", 1024, 1024, kDirect, kMeasure, 331, 3},
    {"resnet18", 1024, 1024, kWinograd, kMeasure, 165, 3},
    {"dncnn", 512, 512, kDirect, kMeasure, 1294, 3},
    {"dncnn", 512, 512, kWinograd, kMeasure, 509, 3},
    {"dncnn", 1080, 1920, kDirect, kMeasure, 10268, 2},
    {"dncnn", 1080, 1920, kWinograd, kMeasure, 3943, 2},
    {"resnet50", 224, 224, kDirect, kMeasure, 0, 10},
    {"googlenet", 224, 224, kDirect, kMeasure, 0, 10},
    {"alexnet", 224, 224, kDirect, kMeasure, 0, 10},
    {"vgg16", 224, 224, kDirect, kMeasure, 0, 3},
};

struct FusedCase {
  const char* model;
  int64_t h, w;
  int64_t capacity;    // bytes per partition the plan is made for
  int64_t band_bytes;  // FusedOptions::band_bytes
  int runs;
};

double median_of(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
}

void run_fused_vs_reference(benchmark::State& state, const FusedCase& c) {
  occam::ModelOptions options;
  options.resolution = occam::Resolution{c.h, c.w};
  options.with_weights = true;
  const occam::Graph graph = occam::zoo_model(c.model, options);
  const auto reference = occam::compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Measure});
  const occam::Plan plan = occam::plan_for_execution(graph, c.capacity);
  const auto fused = occam::compile_fused(graph, plan, {0, c.band_bytes});
  const std::vector<occam::HostTensor> inputs = {occam::random_input(graph.tensor(graph.inputs[0]).shape)};
  std::vector<occam::HostTensor> reference_out, fused_out;
  for (const occam::Shape& shape : fused->output_shapes()) {
    reference_out.emplace_back(shape);
    fused_out.emplace_back(shape);
  }
  reference->run(inputs, reference_out);
  fused->run(inputs, fused_out);
  const auto time = [&](occam::Executor& executor, std::vector<occam::HostTensor>& outputs) {
    const auto start = std::chrono::steady_clock::now();
    executor.run(inputs, outputs);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<double> reference_ms, fused_ms;
  bool fused_first = false;
  for (auto _ : state) {
    if (fused_first) fused_ms.push_back(time(*fused, fused_out));
    reference_ms.push_back(time(*reference, reference_out));
    if (!fused_first) fused_ms.push_back(time(*fused, fused_out));
    fused_first = !fused_first;
    state.SetIterationTime(fused_ms.back() * 1e-3);
  }
  double error = 0;
  for (size_t i = 0; i < fused_out.size(); ++i) error = std::max(error, occam::max_relative_error(fused_out[i], reference_out[i]));
  const double gflop = 2.0 * static_cast<double>(occam::total_macs(graph)) / 1e9;
  const double reference_min = *std::min_element(reference_ms.begin(), reference_ms.end());
  const double fused_min = *std::min_element(fused_ms.begin(), fused_ms.end());
  state.counters["ref_min_ms"] = reference_min;
  state.counters["ref_median_ms"] = median_of(reference_ms);
  state.counters["fused_min_ms"] = fused_min;
  state.counters["fused_median_ms"] = median_of(fused_ms);
  state.counters["ratio_min"] = reference_min / fused_min;
  state.counters["ratio_median"] = median_of(reference_ms) / median_of(fused_ms);
  state.counters["ref_GFLOP/s"] = gflop / (reference_min * 1e-3);
  state.counters["fused_GFLOP/s"] = gflop / (fused_min * 1e-3);
  state.counters["ref_act_MiB"] = static_cast<double>(reference->memory().activation_peak_bytes()) / (1 << 20);
  state.counters["fused_act_MiB"] = static_cast<double>(fused->memory().activation_peak_bytes()) / (1 << 20);
  state.counters["max_rel_error"] = error;
  state.SetLabel(fmt::format("{} partition(s); {}", plan.partitions.size(), fused->describe()));
}

constexpr int64_t kL3 = 32 << 20;  // this machine's last-level cache

const FusedCase kFusedCases[] = {
    {"mobilenet_v2", 224, 224, kL3, 0, 20},
    {"mobilenet_v2", 224, 224, kL3, 64 << 10, 20},
    {"resnet18", 224, 224, kL3, 0, 20},
    {"resnet18", 224, 224, kL3, 64 << 10, 20},
    {"dncnn", 512, 512, kL3, 0, 10},
    {"dncnn", 512, 512, kL3, 256 << 10, 10},
    {"mobilenet_v2", 1024, 1024, kL3, 0, 10},
    {"mobilenet_v2", 1024, 1024, kL3, 256 << 10, 10},
};

}  // namespace

int main(int argc, char** argv) {
  for (const FusedCase& c : kFusedCases) {
    const std::string name = fmt::format("fused_vs_reference/{}/{}x{}/band:{}", c.model, c.h, c.w, c.band_bytes);
    benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& state) { run_fused_vs_reference(state, c); })
        ->Iterations(c.runs)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (const NetCase& c : kCases) {
    const std::string name = fmt::format("reference/{}/{}x{}/{}/{}", c.model, c.h, c.w, occam::to_string(c.algorithm),
                                         occam::to_string(c.layout));
    benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& state) { run_reference(state, c); })
        ->Iterations(c.runs)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fmt::print("FP32 FMA peak measured now: {:.1f} GFLOP/s on {} threads\n", machine_peak_gflops(),
             std::max(1u, std::thread::hardware_concurrency()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
