// Every method of the comparison, built from its planner's output and costed by the same
// evaluate_stages(), so that the methods differ only in what they move and where they run.
#include "occam/error.hpp"
#include "occam/sim.hpp"
#include "occam/units.hpp"

#include <algorithm>

namespace occam {

namespace {

bool is_view(OpKind kind) { return kind == OpKind::Concat || kind == OpKind::Flatten; }

// On-chip reads and writes of ops [first, last] per image: inputs, filters and outputs.
double on_chip_bytes(const Analysis& analysis, OpId first, OpId last) {
  double bytes = 0.0;
  for (OpId op = first; op <= last; ++op) {
    if (is_view(analysis.graph().op(op).kind)) continue;
    const OpStats& stats = analysis.op(op);
    bytes += static_cast<double>(stats.input_bytes + stats.output_bytes + stats.filter_bytes);
  }
  return bytes;
}

}  // namespace

Stage base_case_stage(const Analysis& analysis) {
  Stage stage;
  stage.label = "layer by layer";
  for (OpId op = 0; op < analysis.op_count(); ++op) {
    const Op& node = analysis.graph().op(op);
    if (is_view(node.kind)) continue;
    const OpStats& stats = analysis.op(op);
    Phase phase;
    phase.label = node.name;
    phase.macs = static_cast<double>(stats.macs);
    phase.dram_bytes = static_cast<double>(stats.input_bytes + stats.output_bytes);
    phase.batch_filter_bytes = static_cast<double>(stats.filter_bytes);
    phase.sram_bytes = on_chip_bytes(analysis, op, op) + phase.dram_bytes;
    stage.phases.push_back(std::move(phase));
  }
  return stage;
}

Stage layer_fusion_stage(const Analysis& analysis, const LayerFusionPlan& plan) {
  Stage stage;
  stage.label = fmt::format("layer fusion ({})", to_string(plan.overlap));
  const Graph& g = analysis.graph();
  for (const FusedGroup& group : plan.groups) {
    Phase phase;
    phase.label = group.first_op == group.last_op
                      ? g.op(group.first_op).name
                      : fmt::format("{}..{}", g.op(group.first_op).name, g.op(group.last_op).name);
    phase.macs = static_cast<double>(group.macs);
    phase.dram_bytes = static_cast<double>(group.activation_traffic());
    phase.batch_filter_bytes = static_cast<double>(group.filter_bytes);
    // Recomputed elements are read and written on chip again, in proportion to the extra MACs.
    double exact_macs = 0.0;
    for (OpId op = group.first_op; op <= group.last_op; ++op) exact_macs += static_cast<double>(analysis.op(op).macs);
    const double recompute = exact_macs > 0.0 ? phase.macs / exact_macs : 1.0;
    phase.sram_bytes = on_chip_bytes(analysis, group.first_op, group.last_op) * recompute + phase.dram_bytes;
    stage.phases.push_back(std::move(phase));
  }
  return stage;
}

const MethodResult& Evaluation::method(std::string_view name) const {
  for (const MethodResult& m : methods) {
    if (m.method == name) return m;
  }
  fail("evaluation of {}: no method \"{}\"", model, name);
}

PlanOptions plan_options(const Hardware& hw, const Accounting& accounting) {
  PlanOptions options;
  options.capacity_bytes = hw.sram_bytes;
  options.batch = accounting.batch;
  options.analysis.bytes_per_elem = accounting.element_bytes(hw);
  options.analysis.granularity = accounting.granularity;
  return options;
}

Evaluation evaluate_model(const Graph& graph, const Hardware& hw, const Accounting& accounting) {
  Evaluation e;
  e.model = graph.name;
  e.hardware = hw;
  e.accounting = accounting;
  const PlanOptions options = plan_options(hw, accounting);
  const Analysis analysis(graph, options.analysis);
  e.occam = plan_optimal(analysis, options);
  e.greedy = plan_greedy(analysis, options);
  e.fusion_reuse = plan_layer_fusion(analysis, {hw.sram_bytes, accounting.batch, FusionOverlap::Reuse});
  e.fusion_recompute = plan_layer_fusion(analysis, {hw.sram_bytes, accounting.batch, FusionOverlap::Recompute});

  const int budget = hw.chips;
  const Stage base = base_case_stage(analysis);
  e.methods.push_back(evaluate_stages("base", {base}, {1}, hw, accounting));
  e.methods.push_back(evaluate_stages("base-dp", {base}, {budget}, hw, accounting));
  MethodResult reuse = evaluate_stages("fusion-reuse", {layer_fusion_stage(analysis, e.fusion_reuse)}, {1}, hw, accounting);
  MethodResult recompute =
      evaluate_stages("fusion-recompute", {layer_fusion_stage(analysis, e.fusion_recompute)}, {1}, hw, accounting);
  // Data-parallel Layer Fusion replicates whichever variant is faster on one chip.
  const MethodResult& faster = reuse.throughput >= recompute.throughput ? reuse : recompute;
  MethodResult fusion_dp = evaluate_stages("fusion-dp", faster.stage_list, {budget}, hw, accounting);
  e.methods.push_back(std::move(reuse));
  e.methods.push_back(std::move(recompute));
  e.methods.push_back(std::move(fusion_dp));

  const auto over_budget = [&](const char* method, const Plan& plan) {
    const auto partitions = static_cast<int>(plan.partitions.size());
    if (partitions > budget) {
      e.notes.push_back(fmt::format(
          "{} on {}: {} partitions at {} per chip need {} chips, more than the {} of \"{}\"; the row assumes {} chips "
          "(--chips {} is the smallest budget that works)",
          method, graph.name, partitions, format_bytes(static_cast<double>(hw.sram_bytes)), partitions, budget, hw.name,
          partitions, partitions));
    }
  };
  over_budget("greedy", e.greedy);
  e.methods.push_back(evaluate_stages("greedy", pipeline_stages(analysis, e.greedy, accounting), {}, hw, accounting));
  over_budget("occam", e.occam);
  std::vector<Stage> stages = pipeline_stages(analysis, e.occam, accounting);
  MethodResult occam = evaluate_stages("occam", stages, {}, hw, accounting);
  std::vector<double> times;
  for (const StageTime& t : occam.times) times.push_back(t.time_s);
  const int stap_budget = std::max(budget, static_cast<int>(stages.size()));
  e.methods.push_back(std::move(occam));
  e.methods.push_back(
      evaluate_stages("occam+stap", std::move(stages), stap_replicas(times, stap_budget), hw, accounting));
  return e;
}

}  // namespace occam
