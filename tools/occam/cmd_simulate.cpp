#include "commands.hpp"
#include "occam/error.hpp"
#include "occam/report.hpp"
#include "occam/sim.hpp"
#include "occam/units.hpp"
#include "options.hpp"
#include "sim_options.hpp"
#include "table.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <numeric>

namespace occam::cli {

namespace {

struct SimulateArgs {
  ModelArgs model;
  HardwareArgs hardware;
  int64_t batches = 10000;
  std::string json;
};

std::string ms(double seconds) { return fmt::format("{:.4g}", seconds * 1e3); }

int run_simulate(const SimulateArgs& args) {
  const Graph graph = load_graph(args.model);
  const Hardware hw =
      resolve_hardware(args.hardware, args.hardware.hardware.empty() ? std::string() : args.hardware.hardware.front());
  const Accounting accounting = resolve_accounting(args.hardware);
  const PlanOptions options = plan_options(hw, accounting);
  const Analysis analysis(graph, options.analysis);
  const Plan plan = plan_optimal(analysis, options);
  check_chip_budget(static_cast<int>(plan.partitions.size()), hw,
                    fmt::format("{} at {} per chip", graph.name, format_bytes(static_cast<double>(hw.sram_bytes))));

  std::vector<Stage> stages = pipeline_stages(analysis, plan, accounting);
  const MethodResult occam = evaluate_stages("occam", stages, {}, hw, accounting);
  std::vector<double> times;
  for (const StageTime& t : occam.times) times.push_back(t.time_s);
  const std::vector<int> replicas = stap_replicas(times, hw.chips);
  const MethodResult stap = evaluate_stages("occam+stap", std::move(stages), replicas, hw, accounting);
  const SimResult sim = simulate_pipeline(times, replicas, {args.batches, 2, false});

  fmt::print("{}\naccounting: {}\n\n", hardware_text(hw), accounting.describe(hw));
  Table table({"stage", "ops", "GMACs", "off-chip", "resident filters", "compute ms", "transfer ms", "stage ms",
               "bound", "replicas", "t/r ms", "utilisation"});
  for (size_t s = 0; s < times.size(); ++s) {
    const Phase& phase = occam.stage_list[s].phases.front();
    const StageTime& t = occam.times[s];
    const std::vector<double>& use = sim.utilisation[s];
    table.add({fmt::format("{}", s), phase.label, fmt::format("{:.3f}", phase.macs * 1e-9),
               format_bytes(phase.dram_bytes + phase.link_bytes + phase.batch_filter_bytes / static_cast<double>(accounting.batch)),
               format_bytes(static_cast<double>(occam.stage_list[s].resident_filter_bytes)), ms(t.compute_s),
               ms(t.transfer_s), ms(t.time_s), t.compute_s >= t.transfer_s ? "compute" : "memory",
               fmt::format("{}", replicas[s]), ms(t.time_s / replicas[s]),
               fmt::format("{:.0f}%", 100.0 * std::accumulate(use.begin(), use.end(), 0.0) / static_cast<double>(use.size()))});
  }
  table.print();
  const double batch = static_cast<double>(accounting.batch);
  fmt::print("\n{} partitions of {} at {} per chip; {} chips after STAP (budget {})\n", plan.partitions.size(),
             graph.name, format_bytes(static_cast<double>(hw.sram_bytes)), stap.chips, hw.chips);
  fmt::print("latency per mini-batch       {} ms (sum of stage times)\n", ms(occam.latency_s));
  fmt::print("throughput, one chip/stage   {:.5g} images/s (slowest stage {} ms)\n", occam.throughput,
             ms(*std::max_element(times.begin(), times.end())));
  fmt::print("throughput with STAP         {:.5g} images/s (1 / max t/r = {} ms per mini-batch)\n", stap.throughput,
             ms(pipeline_period(times, replicas)));
  fmt::print("event simulation             {} mini-batches: {:.5g} images/s in steady state, latency mean {} ms, "
             "max {} ms, makespan {} ms\n",
             args.batches, batch / sim.period_s, ms(sim.latency_mean_s), ms(sim.latency_max_s), ms(sim.makespan_s));
  fmt::print("off-chip per image           {} (filters {})\n", format_bytes(stap.offchip_bytes),
             format_bytes(stap.filter_bytes));
  fmt::print("energy per image             {:.4g} mJ = MAC {:.4g} + SRAM {:.4g} + DRAM {:.4g} + link {:.4g}\n",
             stap.energy.total_j() * 1e3, stap.energy.mac_j * 1e3, stap.energy.sram_j * 1e3, stap.energy.dram_j * 1e3,
             stap.energy.link_j * 1e3);

  if (!args.json.empty()) {
    nlohmann::json stages_json = nlohmann::json::array();
    for (size_t s = 0; s < times.size(); ++s) {
      stages_json.push_back({{"stage", s},
                             {"ops", occam.stage_list[s].label},
                             {"compute_s", occam.times[s].compute_s},
                             {"transfer_s", occam.times[s].transfer_s},
                             {"time_s", occam.times[s].time_s},
                             {"replicas", replicas[s]},
                             {"utilisation", sim.utilisation[s]}});
    }
    const nlohmann::json document = {
        {"model", graph.name},
        {"hardware", to_json(hw)},
        {"accounting", accounting.describe(hw)},
        {"plan", to_json(plan)},
        {"stages", std::move(stages_json)},
        {"latency_s", occam.latency_s},
        {"throughput_images_per_s", occam.throughput},
        {"stap_throughput_images_per_s", stap.throughput},
        {"simulation",
         {{"batches", args.batches},
          {"throughput_images_per_s", batch / sim.period_s},
          {"latency_mean_s", sim.latency_mean_s},
          {"latency_max_s", sim.latency_max_s},
          {"makespan_s", sim.makespan_s}}},
        {"energy_j", stap.energy.total_j()}};
    std::ofstream file(args.json);
    if (!file || !(file << document.dump(2) << "\n")) fail("{}: cannot write", args.json);
    fmt::print("simulation written to {}\n", args.json);
  }
  return 0;
}

}  // namespace

void add_simulate_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "simulate", "map Occam's plan onto a pipeline of chips, replicate bottlenecks (STAP) and simulate a stream");
  auto args = std::make_shared<SimulateArgs>();
  add_model_options(*command, args->model);
  add_hardware_options(*command, args->hardware);
  command->add_option("--batches", args->batches, "mini-batches in the simulated stream")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--json", args->json, "also write the stage table and simulation results as JSON");
  command->callback([&action, args]() { action = [args]() { return run_simulate(*args); }; });
}

}  // namespace occam::cli
