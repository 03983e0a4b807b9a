// `occam pipeline`: streams images through a plan's partitions as a pipeline of stages, as threads
// of this process or, when started by mpirun, as MPI ranks; prints per stage the measured time
// beside the simulator's prediction for this CPU, the stage balance before and after STAP, and per
// replica (rank) its resident weights beside its partition's filter bytes.
#include "commands.hpp"
#include "occam/error.hpp"
#include "occam/pipeline.hpp"
#include "occam/units.hpp"
#include "options.hpp"
#include "table.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace occam::cli {

namespace {

struct PipelineArgs {
  ModelArgs model;
  PlanArgs plan;
  std::string plan_file;
  std::vector<std::string> cut_before;
  int64_t images = 64;
  std::vector<int> replicas;
  bool stap = false;
  int chips = 0;
  bool single = false;
  int threads = 0;
  std::string hardware;
  bool check = false;
  double timeout_s = 60.0;
  std::string executor = "fused";
  std::string layout = "blocked";
  bool winograd = false;
};

constexpr double kCheckTolerance = 1e-6;
constexpr double kWeightTolerance = 0.05;

std::string bytes(int64_t value) { return format_bytes(static_cast<double>(value)); }
std::string ms(double seconds) { return fmt::format("{:.3f}", seconds * 1e3); }

ActivationLayout parse_layout(const std::string& text) {
  return text == "any" ? ActivationLayout::Any : ActivationLayout::Blocked;
}

StageOptions stage_options(const PipelineArgs& args, int threads) {
  StageOptions options;
  options.executor = args.executor == "reference" ? StageExecutor::Reference : StageExecutor::Fused;
  options.fused.threads = threads;
  options.reference = {threads, args.winograd ? ConvAlgorithm::Winograd : ConvAlgorithm::Direct, parse_layout(args.layout)};
  return options;
}

// oneDNN threads of each stage replica; the --check baseline uses as many, so that it runs the
// same kernels with the same reduction order.
int stage_threads(const PipelineArgs& args) { return args.threads > 0 ? args.threads : 1; }

// Everything a run needs that every rank derives the same way from the command line.
struct Setup {
  Graph graph;
  Plan plan;
  std::string plan_origin;
  Hardware hardware;
  std::vector<double> predicted;  // seconds per mini-batch, per stage
  std::vector<int> replicas;
};

// Partition starts for --cut-before: op 0, then each named op, in topological order.
std::vector<OpId> cut_points(const Graph& graph, const std::vector<std::string>& names) {
  std::vector<OpId> starts = {0};
  for (const std::string& name : names) {
    const auto it = std::find_if(graph.ops.begin(), graph.ops.end(), [&](const Op& op) { return op.name == name; });
    if (it == graph.ops.end()) fail("--cut-before {}: model {} has no op of that name", name, graph.source);
    const auto op = static_cast<OpId>(it - graph.ops.begin());
    if (op <= starts.back()) {
      fail("--cut-before {}: op {} comes before or at the previous cut (op {}); name the cuts in graph order", name, op,
           starts.back());
    }
    starts.push_back(op);
  }
  return starts;
}

// `chip_budget` bounds --stap; 0: no pipeline, so no replicas to choose; -1: --chips or the hardware's.
Setup prepare(const PipelineArgs& args, int chip_budget) {
  Setup setup;
  setup.graph = load_graph(args.model, true);
  if (!args.cut_before.empty()) {
    const PlanOptions options = plan_options(args.plan);
    const Analysis analysis(setup.graph, options.analysis);
    setup.plan = plan_from_starts(analysis, options, cut_points(setup.graph, args.cut_before), "cut by hand");
    setup.plan_origin = fmt::format("cut before {}", fmt::join(args.cut_before, ", "));
  } else if (args.plan_file.empty()) {
    const PlanOptions options = plan_options(args.plan);
    const Analysis analysis(setup.graph, options.analysis);
    setup.plan = plan_optimal(analysis, options);
    setup.plan_origin = fmt::format("planned at {} per chip", bytes(setup.plan.capacity_bytes));
  } else {
    setup.plan = load_plan(args.plan_file);
    check_plan_matches(setup.plan, setup.graph);
    setup.plan_origin = args.plan_file;
  }
  setup.hardware = args.hardware.empty() ? cpu_core_hardware() : load_hardware(args.hardware);
  if (chip_budget < 0) chip_budget = args.chips > 0 ? args.chips : setup.hardware.chips;
  const int64_t images_per_batch = setup.graph.tensor(setup.graph.inputs.at(0)).shape.n;
  setup.predicted = predict_stage_seconds(setup.graph, setup.plan, setup.hardware, images_per_batch);
  const auto stages = static_cast<int>(setup.plan.partitions.size());
  if (!args.replicas.empty() && args.stap) fail("--replicas and --stap both choose replicas: give one of them");
  if (!args.replicas.empty()) {
    setup.replicas = args.replicas;
  } else if (args.stap && chip_budget > 0) {
    setup.replicas = choose_replicas(setup.predicted, chip_budget);
  } else {
    setup.replicas.assign(static_cast<size_t>(stages), 1);
  }
  return setup;
}

// --images seeded random images, made as the pipeline asks for them: the stream is never held whole.
BatchSource random_stream(const Graph& graph, int64_t images) {
  const int64_t per_batch = graph.tensor(graph.inputs.at(0)).shape.n;
  if (images % per_batch != 0) {
    fail("--images {} is not a multiple of the mini-batch (--batch {})", images, per_batch);
  }
  std::vector<Shape> shapes;
  for (TensorId t : graph.inputs) shapes.push_back(graph.tensor(t).shape);
  return {images / per_batch, [shapes](int64_t batch, std::vector<HostTensor>& inputs) {
            for (size_t k = 0; k < shapes.size(); ++k) {
              inputs[k] = random_input(shapes[k], kInputSeed + static_cast<uint64_t>(batch) * shapes.size() + k);
            }
          }};
}

// Keeps every mini-batch's outputs when --check needs them; otherwise they are dropped.
BatchSink output_sink(bool keep, std::vector<std::vector<HostTensor>>& outputs) {
  return [keep, &outputs](int64_t, std::span<const HostTensor> batch) {
    if (keep) outputs.emplace_back(batch.begin(), batch.end());
  };
}

void print_header(const Setup& setup, const PipelineArgs& args, int64_t batches, std::string_view mode) {
  const Shape& shape = setup.graph.tensor(setup.graph.inputs.at(0)).shape;
  fmt::print("{} ({}), input {}: {} images in {} mini-batches of {} (seeded random inputs)\n", setup.graph.name,
             setup.graph.source, shape.str(), batches * shape.n, batches, shape.n);
  fmt::print("plan: {} partitions ({}, {} B/element), {}\n", setup.plan.partitions.size(), setup.plan_origin,
             setup.plan.bytes_per_elem, mode);
  if (args.executor == "reference") {
    fmt::print("executor: reference (oneDNN layer by layer), {} convolution, {} activations\n",
               args.winograd ? "Winograd" : "direct", args.layout);
  } else {
    fmt::print("executor: fused (row streaming); a stage runs its graph as one partition\n");
  }
}

// Per stage: the simulator's time beside the measured one, unreplicated and divided by replicas,
// then the balance and period before and after STAP.
void print_stages(const Setup& setup, const PipelineLayout& layout, const PipelineRun& run) {
  const auto stages = static_cast<int>(layout.stages.size());
  const std::vector<double> measured = measured_stage_seconds(run, stages);
  const std::vector<int> one(static_cast<size_t>(stages), 1);
  fmt::print("\nper stage, milliseconds per mini-batch (prediction: simulator on hardware \"{}\", {:.1f} GMAC/s, {:.0f} GB/s per chip)\n",
             setup.hardware.name, setup.hardware.macs_per_s() / 1e9, setup.hardware.dram_gb_per_s);
  Table table({"stage", "ops", "replicas", "predicted", "measured", "measured/pred", "pred/replicas", "meas/replicas"}, 2);
  for (int k = 0; k < stages; ++k) {
    const auto s = static_cast<size_t>(k);
    const int r = setup.replicas[s];
    table.add({fmt::format("{}", k), layout.stages[s].label, fmt::format("{}", r), ms(setup.predicted[s]),
               ms(measured[s]), fmt::format("{:.2f}", measured[s] / setup.predicted[s]), ms(setup.predicted[s] / r),
               ms(measured[s] / r)});
  }
  table.print();
  fmt::print("stage balance (period / work spread evenly over all chips; 1 = balanced): predicted {:.2f} before STAP, {:.2f} after; measured {:.2f} before, {:.2f} after\n",
             stage_imbalance(setup.predicted, one), stage_imbalance(setup.predicted, setup.replicas),
             stage_imbalance(measured, one), stage_imbalance(measured, setup.replicas));
  const double predicted_period = pipeline_period(setup.predicted, setup.replicas);
  fmt::print("period (slowest stage / replicas): predicted {} ms, measured {} ms per mini-batch; wall clock {} ms per mini-batch\n",
             ms(predicted_period), ms(pipeline_period(measured, setup.replicas)),
             ms(run.wall_s / static_cast<double>(std::max<int64_t>(run.batches, 1))));
  const double per_batch = static_cast<double>(layout.input_shapes.front().n);
  fmt::print("predicted throughput: {:.1f} images/s\n", per_batch / predicted_period);
}

// Per replica: its resident weights beside its partition's filters; false if one is off by more than 5%.
bool print_replicas(const PipelineLayout& layout, const PipelineRun& run, bool mpi) {
  fmt::print("\nper {}: resident weights (the executor's weight memory) vs the partition's filter bytes (FP32)\n",
             mpi ? "rank" : "replica");
  Table table({mpi ? "rank" : "thread", "stage", "replica", "pid", "mini-batches", "busy s", "median ms", "weights",
               "partition filters", "difference", "activations"},
              1);
  bool within = true;
  for (size_t w = 0; w < run.replicas.size(); ++w) {
    const ReplicaReport& r = run.replicas[w];
    const int64_t filters = layout.stages[static_cast<size_t>(r.stage)].filter_bytes;
    const double difference = filters > 0 ? static_cast<double>(r.weight_bytes - filters) / static_cast<double>(filters) : 0.0;
    within = within && std::fabs(difference) <= kWeightTolerance;
    table.add({fmt::format("{}", mpi ? r.rank : static_cast<int>(w)), fmt::format("{}", r.stage),
               fmt::format("{}", r.replica), fmt::format("{}", r.pid), fmt::format("{}", r.batches),
               fmt::format("{:.3f}", r.busy_s), ms(r.median_batch_s), bytes(r.weight_bytes), bytes(filters),
               fmt::format("{:+.1f}%", difference * 100), bytes(r.activation_bytes)});
  }
  table.print();
  return within;
}

void print_throughput(const PipelineRun& run) {
  fmt::print("throughput: {:.2f} images/s ({} images in {:.3f} s)\n", run.images_per_s(), run.images, run.wall_s);
}

double worst_error(const std::vector<std::vector<HostTensor>>& got, const std::vector<std::vector<HostTensor>>& expected) {
  if (got.size() != expected.size()) fail("check: {} mini-batches came out, expected {}", got.size(), expected.size());
  double worst = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    for (size_t o = 0; o < expected[i].size(); ++o) {
      const double error = max_relative_error(got.at(i).at(o), expected[i][o]);
      worst = std::isnan(error) ? error : std::max(worst, error);
    }
  }
  return worst;
}

// Compares the pipeline's outputs with two single-process runs of the same executor kind: on the
// whole graph (within 1e-6), and on the same stages one after another (bit for bit: the pipeline
// itself must add nothing); then every replica's weights with its partition's filters.
void check_outputs(const PipelineArgs& args, const Setup& setup, const BatchSource& source,
                   const std::vector<std::vector<HostTensor>>& outputs, bool weights_within) {
  const StageOptions options = stage_options(args, stage_threads(args));
  const auto executor = compile_whole(setup.graph, setup.plan, options);
  std::vector<std::vector<HostTensor>> whole;
  for (int64_t i = 0; i < source.count; ++i) {
    std::vector<HostTensor> inputs;
    for (const Shape& shape : executor->input_shapes()) inputs.emplace_back(shape);
    source.fill(i, inputs);
    whole.push_back(executor->run(inputs));
  }
  PipelineOptions sequence_options;
  sequence_options.stage = options;
  std::vector<std::vector<HostTensor>> sequence;
  run_stages_in_sequence(setup.graph, setup.plan, source, output_sink(true, sequence), sequence_options);
  const double whole_error = worst_error(outputs, whole);
  const double sequence_error = worst_error(outputs, sequence);
  fmt::print("check: max relative error {:.3g} against the whole graph in one process ({}), {:.3g} against the same "
             "stages one after another in one process, over {} mini-batches\n",
             whole_error, executor->describe(), sequence_error, source.count);
  std::fflush(stdout);
  if (!(sequence_error == 0.0)) {
    fail("check failed: the pipeline's outputs differ from the same stages run in sequence (max relative error {:.3g})",
         sequence_error);
  }
  if (!(whole_error <= kCheckTolerance)) {
    fail("check failed: max relative error {:.3g} against the whole graph exceeds {:g}; the stages in sequence agree "
         "bit for bit, so a stage rounds differently from the same ops inside the whole graph (the reference "
         "executor does at some cuts; the fused executor does not)",
         whole_error, kCheckTolerance);
  }
  if (!weights_within) fail("check failed: a replica's resident weights differ from its partition's filters by more than 5%");
}

int run_single(const PipelineArgs& args) {
  const Setup setup = prepare(args, 0);
  const BatchSource source = random_stream(setup.graph, args.images);
  const auto executor = compile_whole(setup.graph, setup.plan, stage_options(args, args.threads));
  print_header(setup, args, source.count, "one process, every partition in turn, no pipeline");
  fmt::print("{}\n", executor->describe());
  std::vector<HostTensor> inputs, outputs;
  for (const Shape& shape : executor->input_shapes()) inputs.emplace_back(shape);
  for (const Shape& shape : executor->output_shapes()) outputs.emplace_back(shape);
  source.fill(0, inputs);
  executor->run(inputs, outputs);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < source.count; ++i) {
    source.fill(i, inputs);
    executor->run(inputs, outputs);
  }
  PipelineRun run;
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.batches = source.count;
  run.images = source.count * setup.graph.tensor(setup.graph.inputs.at(0)).shape.n;
  const double sum = std::accumulate(setup.predicted.begin(), setup.predicted.end(), 0.0);
  const double per_batch = static_cast<double>(setup.graph.tensor(setup.graph.inputs.at(0)).shape.n);
  fmt::print("predicted throughput: {:.1f} images/s on one chip (the sum of the stage times)\n", per_batch / sum);
  print_throughput(run);
  return 0;
}

int run_threads(const PipelineArgs& args) {
  const Setup setup = prepare(args, -1);
  const BatchSource source = random_stream(setup.graph, args.images);
  PipelineOptions options;
  options.stage = stage_options(args, stage_threads(args));
  options.replicas = setup.replicas;
  ThreadPipeline pipeline(setup.graph, setup.plan, options);
  print_header(setup, args, source.count, fmt::format("thread pipeline, replicas {}", fmt::join(setup.replicas, ",")));
  std::vector<std::vector<HostTensor>> outputs;
  const PipelineRun run = pipeline.run(source, output_sink(args.check, outputs));
  print_stages(setup, pipeline.layout(), run);
  const bool within = print_replicas(pipeline.layout(), run, false);
  print_throughput(run);
  if (args.check) check_outputs(args, setup, source, outputs, within);
  return 0;
}

int run_ranks(const PipelineArgs& args) {
  const MpiSession session;
  try {
    Setup setup;
    BatchSource source;
    std::string error;
    try {
      setup = prepare(args, session.size() - 1);
      source = random_stream(setup.graph, args.images);
    } catch (const std::exception& e) {
      error = e.what();
    }
    session.agree(error);
    MpiPipelineOptions options;
    options.pipeline.stage = stage_options(args, stage_threads(args));
    options.pipeline.replicas = setup.replicas;
    options.stall_timeout_s = args.timeout_s;
    const std::string host = session.host();
    options.on_ready = [&](const ReplicaReport& r, const StageRoute& route) {
      const double difference = route.filter_bytes > 0 ? static_cast<double>(r.weight_bytes - route.filter_bytes) /
                                                             static_cast<double>(route.filter_bytes)
                                                       : 0.0;
      fmt::print("rank {} (pid {}, host {}): stage {} [{}], replica {}: resident weights {}, partition filters {} ({:+.1f}%)\n",
                 r.rank, r.pid, host, r.stage, route.label, r.replica, bytes(r.weight_bytes), bytes(route.filter_bytes),
                 difference * 100);
      std::fflush(stdout);
    };
    if (session.rank() == 0) {
      print_header(setup, args, source.count,
                   fmt::format("MPI pipeline on {} ranks (rank 0 feeds and collects), replicas {}", session.size(),
                               fmt::join(setup.replicas, ",")));
      std::fflush(stdout);
    }
    std::vector<std::vector<HostTensor>> outputs;
    // Rank 0 is no chip: it keeps the graph for the report and --check. A stage rank hands it over.
    const PipelineRun run = run_mpi_pipeline(session, session.rank() == 0 ? setup.graph : std::move(setup.graph),
                                             setup.plan, source, output_sink(args.check, outputs), options);
    if (session.rank() != 0) return 0;
    const PipelineLayout layout = pipeline_layout(setup.graph, setup.plan);
    print_stages(setup, layout, run);
    const bool within = print_replicas(layout, run, true);
    print_throughput(run);
    if (args.check) check_outputs(args, setup, source, outputs, within);
    return 0;
  } catch (const Error&) {
    // Every rank sees an agreed error; rank 0 hands it to the one place that prints errors and
    // fails the job. The others leave quietly: mpirun kills the job as soon as one rank exits
    // non-zero, which could be before rank 0 has printed the message.
    if (session.rank() == 0) throw;
    return 0;
  }
}

int run_pipeline(const PipelineArgs& args) {
  if (args.single && args.check) fail("--check compares a pipeline with single-process runs; --single runs no pipeline");
  if (args.single) return run_single(args);
  return launched_by_mpirun() ? run_ranks(args) : run_threads(args);
}

}  // namespace

void add_pipeline_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "pipeline",
      "stream images through the plan's partitions as pipeline stages: threads here, MPI ranks under mpirun");
  auto args = std::make_shared<PipelineArgs>();
  args->plan.bytes_per_elem = 4;
  add_model_options(*command, args->model);
  add_plan_options(*command, args->plan);
  auto* plan_file =
      command->add_option("--plan", args->plan_file, "plan JSON from `occam plan --json` (default: plan now with --sram)");
  command->add_option("--cut-before", args->cut_before,
                      "cut by hand instead of planning: a partition starts at each named op (comma-separated, in "
                      "graph order); each must fit --sram")
      ->delimiter(',')
      ->excludes(plan_file);
  command->add_option("--images", args->images, "images to stream")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--replicas", args->replicas, "replicas per stage, e.g. 2,1 (default: one each)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  command->add_flag("--stap", args->stap,
                    "choose replicas by STAP on the predicted stage times: the chip budget is --chips with threads, "
                    "the ranks after rank 0 under mpirun");
  command->add_option("--chips", args->chips, "thread pipeline: chip (core) budget for --stap (default: the hardware's)")
      ->check(CLI::PositiveNumber);
  command->add_flag("--single", args->single, "no pipeline: every partition in turn in this process (the baseline)");
  command->add_option("--threads", args->threads, "oneDNN threads per stage (default 1), or for --single in all (default: every core)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--hw", args->hardware, "hardware for the predictions: a preset or JSON file (default: cpu-core, this machine)");
  command->add_flag("--check", args->check,
                    "compare every output with single-process runs of the same executor, on the whole graph (max "
                    "relative error <= 1e-6) and on the stages in sequence (bit for bit), and every replica's weights "
                    "with its partition's filters (within 5%)");
  command->add_option("--timeout", args->timeout_s, "MPI: seconds a rank waits for a silent peer before stopping the run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--executor", args->executor, "what runs a stage: fused (row streaming) or reference (layer by layer)")
      ->check(CLI::IsMember({"fused", "reference"}))
      ->capture_default_str();
  command->add_option("--layout", args->layout, "reference executor: activation layout, blocked or any")
      ->check(CLI::IsMember({"blocked", "any"}))
      ->capture_default_str();
  command->add_flag("--winograd", args->winograd, "reference executor: Winograd convolution where oneDNN offers it");
  command->callback([args, &action] { action = [args] { return run_pipeline(*args); }; });
}

}  // namespace occam::cli
