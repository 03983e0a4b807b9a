#include "commands.hpp"
#include "occam/error.hpp"
#include "occam/report.hpp"
#include "occam/sim.hpp"
#include "sim_options.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

namespace occam::cli {

namespace {

struct ReportArgs {
  std::vector<std::string> models;
  std::string resolution;
  HardwareArgs hardware;
  std::string out;
  int64_t gantt_batches = 0;  // 0: three mini-batches per chip, enough to reach the steady state
};

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream file(path);
  if (!file || !(file << text)) fail("{}: cannot write", path.string());
}

int run_report(const ReportArgs& args) {
  std::vector<std::string> specs = args.models;
  if (specs.empty()) specs = {"alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2", "googlenet"};
  ModelOptions model_options;
  if (!args.resolution.empty()) model_options.resolution = parse_resolution(args.resolution);
  std::vector<Graph> graphs;
  for (const std::string& spec : specs) graphs.push_back(load_model(spec, model_options));
  const Hardware hw = resolve_hardware(args.hardware, args.hardware.hardware.empty() ? std::string()
                                                                                      : args.hardware.hardware.front());
  const Accounting accounting = resolve_accounting(args.hardware);
  const std::filesystem::path dir = args.out;
  std::filesystem::create_directories(dir);

  std::vector<Evaluation> evaluations;
  {
    ProgressLine progress("evaluating");
    for (const Graph& graph : graphs) {
      evaluations.push_back(evaluate_model(graph, hw, accounting));
      progress(static_cast<int>(evaluations.size()), static_cast<int>(graphs.size()));
    }
  }
  write_text(dir / "comparison.txt", comparison_text(evaluations) + "\n" + paper_comparison_text(evaluations));
  write_text(dir / "comparison.json", comparison_json(evaluations).dump(2) + "\n");
  write_text(dir / "comparison.csv", comparison_csv(evaluations));

  std::vector<int64_t> capacities;
  for (int64_t c = int64_t{64} << 10; c <= int64_t{64} << 20; c *= 2) capacities.push_back(c);
  std::vector<CapacityPoint> points;
  {
    ProgressLine progress("capacity sweep");
    points = capacity_sweep(graphs, hw, accounting, capacities, [&](int done, int total) { progress(done, total); });
  }
  std::vector<std::filesystem::path> files = plot_capacity_sweep(dir, points);
  for (const Evaluation& e : evaluations) {
    const int64_t batches = args.gantt_batches > 0 ? args.gantt_batches : 3 * e.method("occam+stap").chips;
    for (auto& f : plot_pipeline_gantt(dir, e, batches)) files.push_back(std::move(f));
    for (auto& f : plot_stage_times(dir, e)) files.push_back(std::move(f));
  }
  fmt::print("wrote comparison.txt, comparison.json, comparison.csv and these plots to {}:\n", dir.string());
  for (const auto& f : files) {
    if (f.extension() == ".png" || f.extension() == ".svg") fmt::print("  {}\n", f.filename().string());
  }
  return 0;
}

}  // namespace

void add_report_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "report", "plots (PNG and SVG, via gnuplot): traffic vs capacity, pipeline Gantt charts, stage times with STAP");
  auto args = std::make_shared<ReportArgs>();
  add_model_list_options(*command, args->models, args->resolution);
  add_hardware_options(*command, args->hardware);
  command->add_option("--out", args->out, "folder for the plots, their data and scripts")->required();
  command->add_option("--gantt-batches", args->gantt_batches,
                      "mini-batches shown in each Gantt chart (default: three per chip)")
      ->check(CLI::PositiveNumber);
  command->callback([&action, args]() { action = [args]() { return run_report(*args); }; });
}

}  // namespace occam::cli
