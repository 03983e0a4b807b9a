// Runs exactly the inferences bench/traffic.sh measures, and nothing else, inside callgrind's
// instrumentation window:
//
//   traffic_driver --model NAME --resolution HxW --executor fused --plan PLAN.json [--images N]
//   traffic_driver --model NAME --resolution HxW --executor reference [--layout blocked|any] [--images N]
//
// Before the window (not simulated): the model is built with its seeded weights, the plan is loaded
// and checked, the executor is compiled (kernels chosen, weights reordered, every buffer allocated),
// and N inputs and N outputs are allocated and written, each image its own buffers (as a stream of
// camera frames would arrive), so that no image finds its input or output already in the simulated
// cache because an earlier image used the same addresses.
//
// The window: CALLGRIND_START_INSTRUMENTATION (the simulated caches start empty), then for each image
// one Executor::run followed by CALLGRIND_DUMP_STATS_AT("image K"), which writes that image's
// counts to their own dump and zeroes the counters; then CALLGRIND_STOP_INSTRUMENTATION. Image 1
// is therefore cold (weights, code and line buffers come from memory); image 2 onwards is the
// steady state of a stream. Outside valgrind the client requests do nothing, and the driver is a
// plain native run (useful to check it before spending valgrind time on it).
//
// It prints, before the window, the figures the prediction is made of (key=value lines that
// traffic.sh reads), and after it one checksum line per image so that the two executors' results
// can be compared.
#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/plan.hpp"

#include <fmt/core.h>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define OCCAM_HAVE_CALLGRIND 1
#else
#define OCCAM_HAVE_CALLGRIND 0
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#define CALLGRIND_DUMP_STATS_AT(x) static_cast<void>(x)
#define RUNNING_ON_VALGRIND 0
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Args {
  std::string model;
  std::string resolution;
  std::string executor;
  std::string plan;
  std::string layout = "blocked";
  int images = 2;
  int threads = 1;
  int64_t band = 0;
};

[[noreturn]] void usage(const std::string& error) {
  fmt::print(stderr,
             "traffic_driver: {}\n"
             "usage: traffic_driver --model NAME --resolution HxW --executor fused --plan PLAN.json [--images N] "
             "[--threads N] [--band BYTES]\n"
             "       traffic_driver --model NAME --resolution HxW --executor reference [--layout blocked|any] "
             "[--images N] [--threads N]\n",
             error);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) usage(fmt::format("{} needs a value", flag));
    const std::string value = argv[++i];
    if (flag == "--model") {
      args.model = value;
    } else if (flag == "--resolution") {
      args.resolution = value;
    } else if (flag == "--executor") {
      args.executor = value;
    } else if (flag == "--plan") {
      args.plan = value;
    } else if (flag == "--layout") {
      args.layout = value;
    } else if (flag == "--images") {
      args.images = std::atoi(value.c_str());
    } else if (flag == "--threads") {
      args.threads = std::atoi(value.c_str());
    } else if (flag == "--band") {
      args.band = std::atoll(value.c_str());
    } else {
      usage(fmt::format("unknown option {}", flag));
    }
  }
  if (args.model.empty()) usage("--model is required");
  if (args.executor != "fused" && args.executor != "reference") usage("--executor must be fused or reference");
  if (args.executor == "fused" && args.plan.empty()) usage("--executor fused needs --plan");
  if (args.executor == "reference" && !args.plan.empty()) usage("--executor reference takes no --plan");
  if (args.layout != "blocked" && args.layout != "any") usage("--layout must be blocked or any");
  if (args.images < 1) usage("--images must be >= 1");
  if (args.threads < 1) usage("--threads must be >= 1");
  if (args.band < 0) usage("--band must be >= 0");
  return args;
}

double checksum(const occam::HostTensor& t) {
  double sum = 0;
  for (float v : t.values) sum += std::fabs(static_cast<double>(v));
  return sum;
}

int run(const Args& args) {
  using namespace occam;
  ModelOptions options;
  if (!args.resolution.empty()) options.resolution = parse_resolution(args.resolution);
  options.with_weights = true;
  const Graph graph = load_model(args.model, options);
  if (graph.inputs.size() != 1) fail("{}: the driver feeds one input, the model has {}", graph.source, graph.inputs.size());
  const Shape& shape = graph.tensor(graph.inputs[0]).shape;
  const Analysis analysis(graph, execution_analysis_options());

  std::unique_ptr<Executor> executor;
  fmt::print("model={} input={} executor={} images={} threads={} under_valgrind={} callgrind_header={}\n", graph.name,
             shape.str(), args.executor, args.images, args.threads, RUNNING_ON_VALGRIND ? 1 : 0, OCCAM_HAVE_CALLGRIND);
  fmt::print("input_bytes={}\n", shape.image_elements() * static_cast<int64_t>(sizeof(float)));
  // The model's own figures, at 4-byte elements, per image.
  fmt::print("base_case_activation_bytes={}\n", analysis.base_case_activation_bytes());
  fmt::print("full_reuse_activation_bytes={}\n", analysis.full_reuse_activation_bytes());
  fmt::print("total_filter_bytes={}\n", analysis.total_filter_bytes());
  // The written part of the base case (Concat and Flatten are views there, as in the Analysis): on a
  // write-allocate cache each written line is first read, so a CPU moves these bytes once more.
  int64_t base_case_output_bytes = 0;
  for (OpId o = 0; o < analysis.op_count(); ++o) {
    const OpKind kind = graph.op(o).kind;
    if (kind != OpKind::Concat && kind != OpKind::Flatten) base_case_output_bytes += analysis.op(o).output_bytes;
  }
  fmt::print("base_case_output_bytes={}\n", base_case_output_bytes);
  if (args.executor == "fused") {
    const Plan plan = load_plan(args.plan);
    check_plan_matches(plan, graph);
    const PlanMemory memory = plan_memory(graph, plan);
    fmt::print("plan_partitions={}\nplan_capacity_bytes={}\nplan_traffic_bytes={}\nplan_filter_bytes={}\n",
               plan.partitions.size(), plan.capacity_bytes, plan.traffic_bytes, plan.filter_bytes);
    int64_t largest_on_chip = 0, boundary_out = 0;
    for (const Partition& p : plan.partitions) {
      largest_on_chip = std::max(largest_on_chip, p.on_chip_bytes());
      boundary_out += p.boundary_out_bytes;
    }
    fmt::print("plan_boundary_out_bytes={}\n", boundary_out);
    fmt::print("plan_largest_on_chip_bytes={}\nplan_line_buffer_bytes={}\nplan_peak_bytes={}\n", largest_on_chip,
               memory.line_buffer_bytes, memory.peak_bytes);
    executor = compile_fused(graph, plan, FusedOptions{args.threads, args.band});
  } else {
    executor = compile_reference(graph, ReferenceOptions{args.threads, ConvAlgorithm::Direct,
                                                         args.layout == "any" ? ActivationLayout::Any : ActivationLayout::Blocked});
  }
  fmt::print("describe={}\n", executor->describe());
  fmt::print("executor_weight_bytes={}\nexecutor_activation_peak_bytes={}\n",
             executor->memory().peak_bytes(MemoryUse::Weights), executor->memory().activation_peak_bytes());

  // One input and one output buffer per image, written now (outside the window).
  std::vector<std::vector<HostTensor>> inputs, outputs;
  for (int i = 0; i < args.images; ++i) {
    inputs.push_back({random_input(shape, kInputSeed + static_cast<uint64_t>(i))});
    outputs.emplace_back();
    for (const Shape& s : executor->output_shapes()) outputs.back().emplace_back(s);
  }
  std::fflush(stdout);

  std::vector<std::string> labels;  // the dumps' names, made outside the window
  for (int i = 0; i < args.images; ++i) labels.push_back(fmt::format("image {}", i + 1));
  std::vector<double> ms;
  CALLGRIND_START_INSTRUMENTATION;
  for (int i = 0; i < args.images; ++i) {
    const auto start = std::chrono::steady_clock::now();
    executor->run(inputs[static_cast<size_t>(i)], outputs[static_cast<size_t>(i)]);
    CALLGRIND_DUMP_STATS_AT(labels[static_cast<size_t>(i)].c_str());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  CALLGRIND_STOP_INSTRUMENTATION;
  const occam::MappedPages pages = occam::touched_line_buffer_pages();
  fmt::print("touched_line_buffer_bytes={}\ntouched_second_copy_bytes={}\n", pages.first_bytes, pages.second_bytes);

  for (int i = 0; i < args.images; ++i) {
    fmt::print("image={} ms={:.1f} output_abs_sum={:.9g}\n", i + 1, ms[static_cast<size_t>(i)],
               checksum(outputs[static_cast<size_t>(i)][0]));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  try {
    return run(args);
  } catch (const std::exception& e) {
    fmt::print(stderr, "traffic_driver: {}\n", e.what());
    return 1;
  }
}
