// `occam run`: executes a model on this CPU, fused (row-streaming, by a plan) or layer by layer, and
// prints its result, latency and peak activation memory; --compare runs both side by side.
#include "commands.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/units.hpp"
#include "options.hpp"

#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <initializer_list>
#include <numeric>
#include <string_view>
#include <utility>

namespace occam::cli {

namespace {

struct RunArgs {
  ModelArgs model;
  std::string input;
  std::string plan;
  // The last-level cache by default: it must hold a partition's filters as well as its line
  // buffers, and L2 (512 KiB per core here) cannot even hold mobilenet_v2's largest 1x1 filters,
  // which would cut the network into dozens of partitions whose boundaries all go to DRAM.
  std::string sram = "l3";
  std::string memory_limit;
  std::string band = "0";
  std::string png;
  int threads = 0;
  int runs = 10;
  int warmup = 1;
  bool reference = false;
  bool compare = false;
  bool winograd = false;
  std::string layout = "measure";
  std::string sharing = "measure";
  std::string row_kernels = "measure";
  std::string fused_layout = "measure";
  std::string filter_bands = "measure";
};

// The value a choice option's text names (CLI11 has checked that it is one of the names).
template <class Enum>
Enum named(const std::string& text, std::initializer_list<std::pair<std::string_view, Enum>> names) {
  for (const auto& [name, value] : names) {
    if (text == name) return value;
  }
  return names.begin()->second;
}

std::string bytes(int64_t value) { return format_bytes(static_cast<double>(value)); }

void print_result(const Graph& graph, const HostTensor& output, const std::string& png) {
  // Classifier logits have one value per class and image; anything spatial is a dense output.
  if (output.shape.h == 1 && output.shape.w == 1) {
    for (int64_t n = 0; n < output.shape.n; ++n) {
      if (output.shape.n > 1) fmt::print("image {}:\n", n);
      for (const ClassScore& s : top_k(output, 5, n)) fmt::print("  class {:4}  score {:9.4f}\n", s.index, s.score);
    }
    return;
  }
  const double sum = std::accumulate(output.values.begin(), output.values.end(), 0.0);
  const double abs_sum = std::accumulate(output.values.begin(), output.values.end(), 0.0,
                                         [](double acc, float v) { return acc + std::abs(static_cast<double>(v)); });
  fmt::print("output {}: sum {:.6g}, sum of |x| {:.6g}\n", output.shape.str(), sum, abs_sum);
  const std::string path = png.empty() ? graph.name + "_output.png" : png;
  write_png(output_image(output), path);
  fmt::print("output image (first of the batch, scaled from its min..max) written to {}\n", path);
}

// With --memory-limit, also the bands the chosen plan fits with (options.band_bytes).
Plan choose_plan(const RunArgs& args, const Graph& graph, FusedOptions& options) {
  if (!args.plan.empty()) {
    Plan plan = load_plan(args.plan);
    try {
      check_plan_matches(plan, graph);
    } catch (const Error& e) {
      fail("{}: {}", args.plan, e.what());
    }
    return plan;
  }
  if (!args.memory_limit.empty()) {
    const MemoryLimitedPlan chosen = plan_under_memory_limit(graph, parse_bytes(args.memory_limit, "--memory-limit"), options);
    fmt::print("plan for --memory-limit {}: {} partition{} (planned at {} per partition; least traffic of {} plans "
               "whose measured peak fits)\n",
               args.memory_limit, chosen.plan.partitions.size(), chosen.plan.partitions.size() == 1 ? "" : "s",
               bytes(chosen.plan.capacity_bytes), chosen.candidates);
    options.band_bytes = chosen.band_bytes;
    return chosen.plan;
  }
  return plan_for_execution(graph, resolve_capacity(args.sram), graph.tensor(graph.inputs[0]).shape.n);
}

double seconds_of(Executor& executor, std::span<const HostTensor> inputs, std::span<HostTensor> outputs) {
  const auto start = std::chrono::steady_clock::now();
  executor.run(inputs, outputs);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

RunTimes summarise(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const size_t mid = ms.size() / 2;
  return {ms.front(), ms.size() % 2 == 1 ? ms[mid] : (ms[mid - 1] + ms[mid]) / 2, static_cast<int>(ms.size())};
}

void print_latency(const char* who, const RunTimes& times, double gflop) {
  fmt::print("latency {:<9} min {:.2f} ms, median {:.2f} ms over {} runs ({:.1f} GFLOP/s at the minimum)\n", who,
             times.min_ms, times.median_ms, times.runs, gflop / (times.min_ms * 1e-3));
}

void print_memory(const char* who, const Executor& executor) {
  const MemoryAccount& memory = executor.memory();
  const int64_t program = memory.peak_bytes(MemoryUse::Program);
  fmt::print("memory  {:<9} peak activations {} (buffers {}, scratchpad {}), weights {}{}\n", who,
             bytes(memory.activation_peak_bytes()), bytes(memory.peak_bytes(MemoryUse::Activations)),
             bytes(memory.peak_bytes(MemoryUse::Scratchpad)), bytes(memory.peak_bytes(MemoryUse::Weights)),
             program > 0 ? fmt::format(", steps {}", bytes(program)) : std::string());
}

int run_model(const RunArgs& args) {
  const Graph graph = load_graph(args.model, true);
  if (graph.inputs.size() != 1) fail("{}: `occam run` feeds one input, the model has {}", graph.source, graph.inputs.size());
  if (args.reference && args.compare) fail("--reference and --compare exclude each other: --compare runs both");
  if (args.reference && (!args.plan.empty() || !args.memory_limit.empty())) {
    fail("--reference runs layer by layer: it takes no --plan or --memory-limit");
  }
  const Shape& shape = graph.tensor(graph.inputs[0]).shape;
  const std::vector<HostTensor> inputs = {args.input.empty() ? random_input(shape) : load_image(args.input, shape)};
  FusedOptions fused_options{args.threads, args.band == "0" ? 0 : parse_bytes(args.band, "--band")};
  fused_options.sharing = named<ThreadSharing>(
      args.sharing, {{"measure", ThreadSharing::Measure}, {"pipeline", ThreadSharing::Pipeline}, {"kernels", ThreadSharing::Kernels}});
  fused_options.row_kernels =
      named<RowKernels>(args.row_kernels, {{"measure", RowKernels::Measure}, {"onednn", RowKernels::OneDnn}, {"own", RowKernels::Own}});
  fused_options.layout = named<FusedLayout>(
      args.fused_layout, {{"measure", FusedLayout::Measure}, {"blocked", FusedLayout::Blocked}, {"nhwc", FusedLayout::Nhwc}});
  fused_options.filter_bands =
      named<FilterBands>(args.filter_bands, {{"measure", FilterBands::Measure}, {"on", FilterBands::On}, {"off", FilterBands::Off}});
  const ReferenceOptions reference_options{args.threads, args.winograd ? ConvAlgorithm::Winograd : ConvAlgorithm::Direct,
                                           named<ActivationLayout>(args.layout, {{"measure", ActivationLayout::Measure},
                                                                                  {"any", ActivationLayout::Any},
                                                                                  {"blocked", ActivationLayout::Blocked}})};

  std::unique_ptr<Executor> fused, reference;
  Plan plan;
  if (!args.reference) {
    plan = choose_plan(args, graph, fused_options);
    fused = compile_fused(graph, plan, fused_options);
    if (!args.memory_limit.empty()) {
      const int64_t limit = parse_bytes(args.memory_limit, "--memory-limit");
      const int64_t peak = fused->memory().activation_peak_bytes();
      if (peak > limit) {
        fail("{}: the plan's measured peak of activation memory, {}, exceeds --memory-limit {}", args.plan, bytes(peak),
             args.memory_limit);
      }
    }
  }
  if (args.reference || args.compare) reference = compile_reference(graph, reference_options);

  std::vector<HostTensor> fused_out, reference_out;
  for (const Shape& s : (fused ? fused : reference)->output_shapes()) {
    fused_out.emplace_back(s);
    reference_out.emplace_back(s);
  }
  // Interleaved, so that both executors see the same machine (other tenants, clock, caches).
  std::vector<double> fused_ms, reference_ms;
  for (int i = 0; i < args.warmup; ++i) {
    if (fused) fused->run(inputs, fused_out);
    if (reference) reference->run(inputs, reference_out);
  }
  for (int i = 0; i < args.runs; ++i) {
    if (fused) fused_ms.push_back(seconds_of(*fused, inputs, fused_out));
    if (reference) reference_ms.push_back(seconds_of(*reference, inputs, reference_out));
  }

  fmt::print("{} ({}), input {} ({}), threads: {}\n", graph.name, graph.source, shape.str(),
             args.input.empty() ? fmt::format("random, seed {}", kInputSeed) : args.input,
             args.threads > 0 ? fmt::format("{}", args.threads) : "all");
  if (fused) {
    const PlanMemory planned = plan_memory(graph, plan, fused_options);
    fmt::print("fused:     {}\n", fused->describe());
    // Page rounding is only worth a mention where rows are small enough for it to show.
    const bool rounding_shows = static_cast<double>(planned.page_peak_bytes) > 1.02 * static_cast<double>(planned.peak_bytes);
    fmt::print("plan:      {} partition{} at {} per partition; per image {} off-chip (layer by layer {}); "
               "line buffers {} + boundaries {} = {} (closure {}){}\n",
               plan.partitions.size(), plan.partitions.size() == 1 ? "" : "s", bytes(plan.capacity_bytes),
               bytes(plan.traffic_bytes), bytes(plan.base_case_bytes), bytes(planned.line_buffer_bytes),
               bytes(planned.boundary_bytes), bytes(planned.peak_bytes), bytes(planned.closure_peak_bytes),
               rounding_shows ? fmt::format("; {} with each line buffer in whole pages", bytes(planned.page_peak_bytes)) : "");
  }
  if (reference) fmt::print("reference: {}\n", reference->describe());
  print_result(graph, (fused ? fused_out : reference_out)[0], args.png);
  const double gflop = 2.0 * static_cast<double>(total_macs(graph) * shape.n) / 1e9;  // total_macs: per image
  const RunTimes fused_times = fused ? summarise(fused_ms) : RunTimes{};
  const RunTimes reference_times = reference ? summarise(reference_ms) : RunTimes{};
  if (fused) print_latency("fused", fused_times, gflop);
  if (reference) print_latency("reference", reference_times, gflop);
  if (const std::vector<double> waits = fused ? fused->thread_waits() : std::vector<double>{}; !waits.empty()) {
    std::vector<std::string> each;
    for (const double s : waits) each.push_back(fmt::format("{:.2f}", s * 1e3));
    fmt::print("waits   fused     threads waited {} ms for each other in the last run (filling and draining the "
               "pipeline, inputs not yet produced)\n", fmt::join(each, " / "));
  }
  if (fused) print_memory("fused", *fused);
  if (reference) print_memory("reference", *reference);
  if (fused && reference) {
    double error = 0;
    for (size_t i = 0; i < fused_out.size(); ++i) error = std::max(error, max_relative_error(fused_out[i], reference_out[i]));
    fmt::print("compare   max relative error {:.3g}; speed fused/reference {:.3f} (min) {:.3f} (median); "
               "peak activations reference/fused {:.1f}x\n",
               error, reference_times.min_ms / fused_times.min_ms, reference_times.median_ms / fused_times.median_ms,
               static_cast<double>(reference->memory().activation_peak_bytes()) /
                   static_cast<double>(fused->memory().activation_peak_bytes()));
    // The speed ratio is only fair at the reference's best; passive waiting is not (bench/exec_bench.cpp).
    if (const char* policy = std::getenv("OMP_WAIT_POLICY"); policy != nullptr && std::string_view(policy) == "passive") {
      fmt::print("note      OMP_WAIT_POLICY=passive makes the reference wake a sleeping thread for every primitive; "
                 "compare speed with it unset or active\n");
    }
  }
  return 0;
}

}  // namespace

std::vector<std::string> pipeline_alias(int argc, char** argv) {
  std::vector<std::string> arguments(argv + 1, argv + argc);
  const auto flag = std::find(arguments.begin(), arguments.end(), "--pipeline");
  if (!arguments.empty() && arguments.front() == "run" && flag != arguments.end()) {
    arguments.erase(flag);
    arguments.front() = "pipeline";
  }
  return arguments;
}

void add_run_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "run", "execute a model on this CPU (fused by a plan, or layer by layer): result, latency, peak memory");
  auto args = std::make_shared<RunArgs>();
  add_model_options(*command, args->model);
  command->add_option("--input", args->input, "PNG or JPEG image (default: seeded random tensor)");
  command->add_option("--plan", args->plan, "plan JSON from `occam plan --bytes-per-elem 4 --json FILE`");
  command->add_option("--sram", args->sram, "without --plan: plan for this capacity (a size, or l2 / l3 of this machine)")
      ->capture_default_str();
  command->add_option("--memory-limit", args->memory_limit,
                      "choose the least-traffic plan whose measured fused peak of activation memory fits this size");
  command->add_option("--band", args->band, "fused: rows per step up to this many output bytes (0: automatic within the plan's capacity: whole tensors per step where they fit, bands of 512-128 KiB where rows are small and those fit, several rows for convolutions with large filters, else one row; 1B: always one row, the least memory)")
      ->capture_default_str();
  // Handled before parsing (pipeline_alias); registered so that `occam run --help` shows it.
  static const std::string pipeline_help =
      "stream --images through one stage per partition: threads, or MPI ranks under mpirun (the same as `occam "
      "pipeline MODEL ...`)";
  command->add_flag("--pipeline", pipeline_help);
  command->add_flag("--reference", args->reference, "run the layer-by-layer oneDNN reference instead of the fused executor");
  command->add_flag("--compare", args->compare, "run fused and reference side by side: max error, speed ratio, memory");
  command->add_option("--png", args->png, "dense outputs: write the image here (default: MODEL_output.png)");
  command->add_option("--threads", args->threads, "threads (default: all this process may use)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--runs", args->runs, "timed runs after the warm-up")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--warmup", args->warmup, "untimed runs first")->check(CLI::NonNegativeNumber)->capture_default_str();
  command->add_flag("--winograd", args->winograd, "reference: Winograd convolution where oneDNN offers it");
  command->add_option("--sharing", args->sharing,
                      "fused, several threads: pipeline (each thread a group of ops), kernels (steps in order, oneDNN's "
                      "kernels on all threads), measure (time both once, keep the faster)")
      ->check(CLI::IsMember({"measure", "pipeline", "kernels"}))
      ->capture_default_str();
  command->add_option("--row-kernels", args->row_kernels,
                      "fused: stacked windows of row-blocked convolutions on oneDNN, on occam's own AVX2 kernel (own), "
                      "or measure (time both per shape, keep the faster)")
      ->check(CLI::IsMember({"measure", "onednn", "own"}))
      ->capture_default_str();
  command->add_option("--fused-layout", args->fused_layout,
                      "fused: tensors held whole and rows of dense convolution chains in oneDNN's channel blocks "
                      "where it has JIT kernels for them (blocked), in NHWC, or measure (time both, keep the faster)")
      ->check(CLI::IsMember({"measure", "blocked", "nhwc"}))
      ->capture_default_str();
  command->add_option("--filter-bands", args->filter_bands,
                      "fused, automatic bands: several rows per step for convolutions with large filters (on), one "
                      "row per step (off), or measure (time both, keep the faster)")
      ->check(CLI::IsMember({"measure", "on", "off"}))
      ->capture_default_str();
  command->add_option("--layout", args->layout, "reference activation layout: measure (faster of the two), any, blocked")
      ->check(CLI::IsMember({"measure", "any", "blocked"}))
      ->capture_default_str();
  command->callback([args, &action] { action = [args] { return run_model(*args); }; });
}

}  // namespace occam::cli
