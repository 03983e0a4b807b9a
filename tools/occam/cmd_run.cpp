// `occam run`: executes a model on this CPU and prints its result, latency and peak memory.
#include "commands.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/units.hpp"
#include "options.hpp"

#include <fmt/core.h>

#include <numeric>

namespace occam::cli {

namespace {

struct RunArgs {
  ModelArgs model;
  std::string input;
  int threads = 0;
  int runs = 10;
  bool winograd = false;
  std::string layout = "measure";
};

ActivationLayout parse_layout(const std::string& text) {
  if (text == "measure") return ActivationLayout::Measure;
  if (text == "any") return ActivationLayout::Any;
  return ActivationLayout::Blocked;
}

void print_result(const HostTensor& output) {
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
}

int run_model(const RunArgs& args) {
  const Graph graph = load_graph(args.model, true);
  if (graph.inputs.size() != 1) fail("{}: `occam run` feeds one input, the model has {}", graph.source, graph.inputs.size());
  const Shape& shape = graph.tensor(graph.inputs[0]).shape;
  const std::vector<HostTensor> inputs = {args.input.empty() ? random_input(shape) : load_image(args.input, shape)};
  const auto executor =
      compile_reference(graph, {args.threads, args.winograd ? ConvAlgorithm::Winograd : ConvAlgorithm::Direct,
                                parse_layout(args.layout)});
  std::vector<HostTensor> outputs;
  for (const Shape& s : executor->output_shapes()) outputs.emplace_back(s);
  const RunTimes times = time_runs(*executor, inputs, outputs, args.runs);
  fmt::print("{} ({}), input {} ({})\n", graph.name, graph.source, shape.str(),
             args.input.empty() ? fmt::format("random, seed {}", kInputSeed) : args.input);
  fmt::print("{}\n", executor->describe());
  for (const HostTensor& output : outputs) print_result(output);
  const double gflop = 2.0 * static_cast<double>(total_macs(graph)) / 1e9;
  fmt::print("latency     min {:.2f} ms, median {:.2f} ms over {} runs ({:.1f} GFLOP/s at the minimum)\n",
             times.min_ms, times.median_ms, times.runs, gflop / (times.min_ms * 1e-3));
  const MemoryAccount& memory = executor->memory();
  fmt::print("memory      peak activations {} (arena {}, scratchpad {}), weights {}\n",
             format_bytes(static_cast<double>(memory.activation_peak_bytes())),
             format_bytes(static_cast<double>(memory.peak_bytes(MemoryUse::Activations))),
             format_bytes(static_cast<double>(memory.peak_bytes(MemoryUse::Scratchpad))),
             format_bytes(static_cast<double>(memory.peak_bytes(MemoryUse::Weights))));
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand("run", "execute a model on this CPU: top-5 classes, latency, peak memory");
  auto args = std::make_shared<RunArgs>();
  add_model_options(*command, args->model);
  command->add_option("--input", args->input, "PNG or JPEG image (default: seeded random tensor)");
  command->add_option("--threads", args->threads, "threads (default: all this process may use)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--runs", args->runs, "timed runs after one warm-up")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_flag("--winograd", args->winograd, "Winograd convolution where oneDNN offers it");
  command->add_option("--layout", args->layout, "activation layout: measure (faster of the two), any, blocked")
      ->check(CLI::IsMember({"measure", "any", "blocked"}))
      ->capture_default_str();
  command->callback([args, &action] { action = [args] { return run_model(*args); }; });
}

}  // namespace occam::cli
