#include "commands.hpp"
#include "occam/analysis.hpp"
#include "occam/units.hpp"
#include "options.hpp"
#include "table.hpp"

namespace occam::cli {

namespace {

struct AnalyzeArgs {
  ModelArgs model;
  PlanArgs plan;
};

std::string bytes(int64_t value) { return format_bytes(static_cast<double>(value)); }

int run_analyze(const AnalyzeArgs& args) {
  const Graph graph = load_graph(args.model);
  const Analysis analysis(graph, analysis_options(args.plan));
  fmt::print("{} ({}), input {}, {} ops, {} bytes per element, {} granularity\n\n", graph.name, graph.source,
             graph.tensor(graph.inputs[0]).shape.str(), graph.ops.size(), args.plan.bytes_per_elem,
             args.plan.granularity);
  Table table({"#", "op", "kind", "output", "MMACs", "filters", "out/image", "RF", "closure"}, 3);
  for (OpId o = 0; o < analysis.op_count(); ++o) {
    const Op& op = graph.op(o);
    const OpStats& s = analysis.op(o);
    std::string kind(to_string(op.kind));
    if (op.kind == OpKind::Conv) {
      kind = fmt::format("Conv {}x{}/{}{}", op.window.kernel_h, op.window.kernel_w, op.window.stride_h,
                         op.groups > 1 ? (op.groups == graph.input_of(op).shape.c ? " dw" : " g") : "");
    }
    if (op.activation.kind != ActKind::None) kind += fmt::format("+{}", to_string(op.activation.kind));
    table.add({fmt::format("{}", o), op.name, kind, graph.output_of(op).shape.str(),
               fmt::format("{:.1f}", static_cast<double>(s.macs) / 1e6), bytes(s.filter_bytes), bytes(s.output_bytes),
               fmt::format("{}", s.receptive_field.size_h), bytes(analysis.closure(o, o).bytes)});
  }
  table.print();
  const int64_t last = analysis.op_count() - 1;
  fmt::print("\nMACs per image              {:.3f} G\n", static_cast<double>(total_macs(graph)) / 1e9);
  fmt::print("parameters (torchvision)    {}\n", total_source_params(graph));
  fmt::print("filters                     {}\n", bytes(analysis.total_filter_bytes()));
  fmt::print("whole-network closure       {}\n", bytes(analysis.closure(0, last).bytes));
  fmt::print("full-reuse bound per image  {} (input + output; filters once)\n",
             bytes(analysis.full_reuse_activation_bytes()));
  fmt::print("layer by layer per image    {} activations (+ filters once per mini-batch)\n",
             bytes(analysis.base_case_activation_bytes()));
  return 0;
}

}  // namespace

void add_analyze_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand("analyze", "per-op table: shapes, MACs, filters, receptive field, closure");
  auto args = std::make_shared<AnalyzeArgs>();
  add_model_options(*command, args->model);
  command->add_option("--bytes-per-elem", args->plan.bytes_per_elem, "bytes per element")
      ->check(CLI::IsMember({1, 2, 4}))
      ->capture_default_str();
  command->add_option("--granularity", args->plan.granularity, "streaming unit: row or element")
      ->check(CLI::IsMember({"row", "element"}))
      ->capture_default_str();
  command->callback([&action, args]() { action = [args]() { return run_analyze(*args); }; });
}

}  // namespace occam::cli
