#include "commands.hpp"
#include "occam/error.hpp"
#include "occam/report.hpp"
#include "occam/sim.hpp"
#include "sim_options.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <fstream>

namespace occam::cli {

namespace {

struct CompareArgs {
  std::vector<std::string> models;
  std::string resolution;
  HardwareArgs hardware;
  std::string json;
  std::string csv;
};

constexpr std::array<std::string_view, 6> kDefaultModels = {"alexnet",  "vgg16",        "resnet18",
                                                            "resnet50", "mobilenet_v2", "googlenet"};
constexpr std::array<int64_t, 4> kSweepBatches = {1, 16, 256, 4096};

void write_output(const std::string& path, const std::string& text) {
  if (path == "-") {
    fmt::print("{}", text);
    return;
  }
  std::ofstream file(path);
  if (!file || !(file << text)) fail("{}: cannot write", path);
  fmt::print(stderr, "written to {}\n", path);
}

int run_compare(const CompareArgs& args) {
  std::vector<std::string> specs = args.models;
  if (specs.empty()) specs.assign(kDefaultModels.begin(), kDefaultModels.end());
  ModelOptions model_options;
  if (!args.resolution.empty()) model_options.resolution = parse_resolution(args.resolution);
  std::vector<Graph> graphs;
  for (const std::string& spec : specs) graphs.push_back(load_model(spec, model_options));
  std::vector<std::string> hardware_specs = args.hardware.hardware;
  if (hardware_specs.empty()) hardware_specs.emplace_back();
  const Accounting accounting = resolve_accounting(args.hardware);

  std::vector<Evaluation> evaluations;
  std::vector<std::string> sweeps;
  ProgressLine progress("evaluating");
  const int total = static_cast<int>(hardware_specs.size() * graphs.size());
  for (const std::string& spec : hardware_specs) {
    const Hardware hw = resolve_hardware(args.hardware, spec);
    std::string sweep;
    for (const Graph& graph : graphs) {
      evaluations.push_back(evaluate_model(graph, hw, accounting));
      sweep += batch_sweep_text(graph.name, batch_sweep(graph, hw, accounting, kSweepBatches));
      progress(static_cast<int>(evaluations.size()), total);
    }
    sweeps.push_back(std::move(sweep));
  }
  const bool text_to_stdout = args.json != "-" && args.csv != "-";
  if (text_to_stdout) {
    fmt::print("{}\n", comparison_text(evaluations));
    fmt::print("{}\n", paper_comparison_text(evaluations));
    for (const std::string& sweep : sweeps) fmt::print("{}", sweep);
  }
  if (!args.json.empty()) write_output(args.json, comparison_json(evaluations).dump(2) + "\n");
  if (!args.csv.empty()) write_output(args.csv, comparison_csv(evaluations));
  return 0;
}

}  // namespace

void add_compare_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "compare", "off-chip traffic, latency, throughput and energy of base / Layer Fusion / greedy / Occam / Occam+STAP");
  auto args = std::make_shared<CompareArgs>();
  add_model_list_options(*command, args->models, args->resolution);
  add_hardware_options(*command, args->hardware, true);
  command->add_option("--json", args->json, "write the comparison as JSON to this file (- for stdout)");
  command->add_option("--csv", args->csv, "write one CSV row per model and method to this file (- for stdout)");
  command->callback([&action, args]() { action = [args]() { return run_compare(*args); }; });
}

}  // namespace occam::cli
