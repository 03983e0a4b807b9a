#include "commands.hpp"
#include "occam/plan.hpp"
#include "occam/units.hpp"
#include "options.hpp"
#include "table.hpp"

namespace occam::cli {

namespace {

struct PlanCommandArgs {
  ModelArgs model;
  PlanArgs plan;
  std::string json;
};

std::string bytes(int64_t value) { return format_bytes(static_cast<double>(value)); }
std::string ratio(int64_t base, int64_t value) {
  return value > 0 ? fmt::format("{:.1f}x", static_cast<double>(base) / static_cast<double>(value)) : "inf";
}

void print_plan(const Plan& plan, const Graph& graph) {
  Table table({"#", "ops", "count", "closure", "filters", "on chip", "in/image", "out/image", "fallback"}, 2);
  for (size_t i = 0; i < plan.partitions.size(); ++i) {
    const Partition& p = plan.partitions[i];
    const std::string span = p.first_op == p.last_op
                                 ? graph.op(p.first_op).name
                                 : fmt::format("{} .. {}", graph.op(p.first_op).name, graph.op(p.last_op).name);
    std::string fallback(to_string(p.fallback));
    if (p.fallback != Fallback::None) fallback += fmt::format(" (+{}/image)", bytes(p.fallback_bytes));
    table.add({fmt::format("{}", i), span, fmt::format("{}", p.last_op - p.first_op + 1), bytes(p.closure_bytes),
               bytes(p.filter_bytes + p.streamed_filter_bytes), bytes(p.on_chip_bytes()), bytes(p.boundary_in_bytes),
               bytes(p.boundary_out_bytes), fallback});
  }
  table.print();
  for (size_t i = 0; i < plan.partitions.size(); ++i) {
    if (!plan.partitions[i].note.empty()) fmt::print("partition {}: {}\n", i, plan.partitions[i].note);
  }
  fmt::print("\n{} partitions (one chip each) for {} at {} per chip, {} B/element, {} granularity\n",
             plan.partitions.size(), plan.model, bytes(plan.capacity_bytes), plan.bytes_per_elem,
             to_string(plan.granularity));
  int64_t fallback = 0;
  for (const Partition& p : plan.partitions) fallback += p.fallback_bytes;
  fmt::print("off-chip traffic per image (steady state)  {}\n", bytes(plan.traffic_bytes));
  fmt::print("  boundary activations                     {}\n", bytes(plan.traffic_bytes - fallback));
  if (fallback > 0) fmt::print("  fallbacks (streamed filters, halos)      {}\n", bytes(fallback));
  fmt::print("  vs layer by layer                        {}  ({} fewer; filters re-read per mini-batch of {})\n",
             bytes(plan.base_case_bytes), ratio(plan.base_case_bytes, plan.traffic_bytes), plan.batch);
  fmt::print("  vs full-reuse bound                      {}  ({} the bound)\n", bytes(plan.full_reuse_bytes),
             ratio(plan.traffic_bytes, plan.full_reuse_bytes));
  fmt::print("resident filters, loaded once per stream   {}\n", bytes(plan.filter_bytes));
}

int run_plan(const PlanCommandArgs& args) {
  const Graph graph = load_graph(args.model);
  const PlanOptions options = plan_options(args.plan);
  const Analysis analysis(graph, options.analysis);
  const Plan plan = plan_optimal(analysis, options);
  print_plan(plan, graph);
  if (!args.json.empty()) {
    save_plan(plan, args.json);
    fmt::print("plan written to {}\n", args.json);
  }
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand("plan", "optimal partitioning for least off-chip traffic under a capacity");
  auto args = std::make_shared<PlanCommandArgs>();
  add_model_options(*command, args->model);
  add_plan_options(*command, args->plan);
  command->add_option("--json", args->json, "also write the plan as JSON to this file");
  command->callback([&action, args]() { action = [args]() { return run_plan(*args); }; });
}

}  // namespace occam::cli
