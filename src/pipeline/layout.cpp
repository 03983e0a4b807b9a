// Stage routes, the stage executor factory and the simulator's predictions for this CPU.
#include "occam/error.hpp"
#include "occam/pipeline.hpp"
#include "pipeline/stage_runner.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <unordered_map>

namespace occam {

std::string_view to_string(StageExecutor executor) {
  switch (executor) {
    case StageExecutor::Fused: return "fused";
    case StageExecutor::Reference: return "reference";
  }
  return "?";
}

std::unique_ptr<Executor> compile_stage(const Graph& stage_graph, const StageOptions& options) {
  switch (options.executor) {
    case StageExecutor::Fused: return compile_fused(stage_graph, single_partition_plan(stage_graph), options.fused);
    case StageExecutor::Reference: return compile_reference(stage_graph, options.reference);
  }
  fail("{}: unknown stage executor {}", stage_graph.source, static_cast<int>(options.executor));
}

std::unique_ptr<Executor> compile_whole(const Graph& graph, const Plan& plan, const StageOptions& options) {
  switch (options.executor) {
    case StageExecutor::Fused: return compile_fused(graph, plan, options.fused);
    case StageExecutor::Reference: return compile_reference(graph, options.reference);
  }
  fail("{}: unknown stage executor {}", graph.source, static_cast<int>(options.executor));
}

PipelineLayout pipeline_layout(const Graph& graph, const Plan& plan) {
  check_plan_matches(plan, graph);
  if (plan.partitions.empty()) fail("plan for {}: no partitions to run", plan.model);
  if (plan.bytes_per_elem <= 0) fail("plan for {}: bytes per element is {}, expected 1, 2 or 4", plan.model, plan.bytes_per_elem);
  OpId next = 0;
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    const Partition& part = plan.partitions[p];
    if (part.first_op != next || part.last_op < part.first_op) {
      fail("plan for {}: partition {} covers ops [{}, {}], expected a span starting at op {}", plan.model, p,
           part.first_op, part.last_op, next);
    }
    next = part.last_op + 1;
  }

  std::unordered_map<std::string, TensorId> by_name;
  for (size_t t = 0; t < graph.tensors.size(); ++t) by_name.emplace(graph.tensors[t].name, static_cast<TensorId>(t));
  const auto read_after = [&](TensorId t, OpId last) {
    const auto& consumers = graph.tensor(t).consumers;
    return graph.is_output(t) || std::any_of(consumers.begin(), consumers.end(), [&](OpId c) { return c > last; });
  };

  PipelineLayout layout;
  layout.model = graph.source;
  std::vector<TensorId> bundle = graph.inputs;
  for (TensorId t : bundle) layout.input_shapes.push_back(graph.tensor(t).shape);
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    const Partition& part = plan.partitions[p];
    StageRoute route;
    route.first_op = part.first_op;
    route.last_op = part.last_op;
    route.label = part.first_op == part.last_op
                      ? graph.op(part.first_op).name
                      : fmt::format("{} .. {}", graph.op(part.first_op).name, graph.op(part.last_op).name);
    route.graph = extract_span(graph, part.first_op, part.last_op);
    route.filter_bytes = (part.filter_bytes + part.streamed_filter_bytes) * 4 / plan.bytes_per_elem;

    const auto id_of = [&](TensorId span_tensor) { return by_name.at(route.graph.tensor(span_tensor).name); };
    const auto position = [](const std::vector<TensorId>& ids, TensorId t) {
      const auto it = std::find(ids.begin(), ids.end(), t);
      return it == ids.end() ? -1 : static_cast<int>(it - ids.begin());
    };
    for (TensorId input : route.graph.inputs) {
      const int at = position(bundle, id_of(input));
      // Cannot happen for spans of a topological order; a broken bundle rule surfaces here, not as a wrong tensor.
      if (at < 0) {
        fail("{}: stage {} ({}) reads tensor \"{}\", which no earlier stage passes on", graph.source, p, route.label,
             route.graph.tensor(input).name);
      }
      route.inputs.push_back(at);
    }
    std::vector<TensorId> produced;
    for (TensorId output : route.graph.outputs) produced.push_back(id_of(output));
    std::vector<TensorId> outgoing;
    for (TensorId t : bundle) {
      if (read_after(t, part.last_op)) outgoing.push_back(t);
    }
    outgoing.insert(outgoing.end(), produced.begin(), produced.end());
    std::sort(outgoing.begin(), outgoing.end());
    for (TensorId t : outgoing) {
      const int carried = position(bundle, t);
      route.outgoing.push_back(carried >= 0 ? StageRoute::Source{true, carried}
                                            : StageRoute::Source{false, position(produced, t)});
      route.outgoing_shapes.push_back(graph.tensor(t).shape);
    }
    route.outgoing_tensors = outgoing;
    bundle = std::move(outgoing);
    layout.stages.push_back(std::move(route));
  }
  for (TensorId t : graph.outputs) layout.outputs.push_back(static_cast<int>(std::find(bundle.begin(), bundle.end(), t) - bundle.begin()));
  if (bundle.size() != graph.outputs.size()) {
    fail("{}: the last stage passes on {} tensors, expected the {} network outputs", graph.source, bundle.size(),
         graph.outputs.size());
  }
  return layout;
}

namespace {

// Sources in the "sources" field; the energies are only there because every hardware description
// has them (stage times do not use them).
constexpr std::string_view kCpuCore = R"json({
  "name": "cpu-core",
  "description": "one core of this machine per chip: AMD EPYC (Zen 4), FP32, L2 as on-chip memory",
  "chips": 2,
  "sram_bytes": "1MiB",
  "macs_per_cycle": 16,
  "clock_ghz": 3.66,
  "dram_gb_per_s": 27,
  "link_gb_per_s": 27,
  "bytes_per_element": 4,
  "energy_pj": { "mac": 4.6, "sram_byte": 1.25, "dram_byte": 160, "link_byte": 160 },
  "sources": {
    "chips": "DESIGN.md: 2 vCPUs",
    "sram_bytes": "DESIGN.md: 1 MiB L2 per core",
    "macs_per_cycle": "Zen 4: two 256-bit FMA pipes = 16 FP32 FMA per cycle",
    "clock_ghz": "DESIGN.md: 117 GFLOP/s FP32 FMA on one thread = 16 FMA x 2 flop x 3.66 GHz",
    "dram_gb_per_s": "DESIGN.md: STREAM triad, one thread, 27 GB/s",
    "link_gb_per_s": "stages hand boundaries over through memory: the same 27 GB/s",
    "bytes_per_element": "FP32 execution",
    "energy_pj.mac": "Horowitz, ISSCC 2014, 45 nm: 32-bit float multiply 3.7 pJ + add 0.9 pJ",
    "energy_pj.sram_byte": "Horowitz, ISSCC 2014, 45 nm: 32-bit read of an 8 KB SRAM 5 pJ",
    "energy_pj.dram_byte": "Horowitz, ISSCC 2014, 45 nm: 32-bit DRAM access 640 pJ",
    "energy_pj.link_byte": "as DRAM: boundaries go through memory"
  }
})json";

}  // namespace

Hardware cpu_core_hardware() { return hardware_from_json(nlohmann::json::parse(kCpuCore), "cpu-core (built in)"); }

std::vector<double> predict_stage_seconds(const Graph& graph, const Plan& plan, const Hardware& hardware,
                                          int64_t images) {
  if (plan.bytes_per_elem <= 0) fail("plan for {}: bytes per element is {}, expected 1, 2 or 4", plan.model, plan.bytes_per_elem);
  // The plan's byte counts are at its own element size; execution is FP32.
  Plan fp32 = plan;
  const auto scale = [&](int64_t& bytes) { bytes = bytes * 4 / plan.bytes_per_elem; };
  for (Partition& part : fp32.partitions) {
    scale(part.closure_bytes);
    scale(part.filter_bytes);
    scale(part.streamed_filter_bytes);
    scale(part.stream_buffer_bytes);
    scale(part.boundary_in_bytes);
    scale(part.boundary_out_bytes);
    scale(part.fallback_bytes);
  }
  fp32.bytes_per_elem = 4;
  const Analysis analysis(graph, {4, plan.granularity});
  Accounting accounting;
  accounting.batch = plan.batch;
  accounting.overlap = true;
  accounting.handoff = Handoff::Dram;
  accounting.granularity = plan.granularity;
  accounting.bytes_per_element = 4;
  std::vector<double> seconds;
  for (const Stage& stage : pipeline_stages(analysis, fp32, accounting)) {
    seconds.push_back(stage_time(stage, hardware, accounting).time_s / static_cast<double>(plan.batch) *
                      static_cast<double>(images));
  }
  return seconds;
}

std::vector<int> choose_replicas(std::span<const double> stage_seconds, int chip_budget) {
  return stap_replicas(stage_seconds, chip_budget);
}

double stage_imbalance(std::span<const double> stage_seconds, std::span<const int> replicas) {
  const double period = pipeline_period(stage_seconds, replicas);
  double work = 0.0;
  int chips = 0;
  for (size_t k = 0; k < stage_seconds.size(); ++k) {
    work += stage_seconds[k];
    chips += replicas[k];
  }
  return work > 0.0 ? period * chips / work : 1.0;
}

std::vector<double> measured_stage_seconds(const PipelineRun& run, int stages) {
  std::vector<double> seconds;
  for (int k = 0; k < stages; ++k) {
    std::vector<double> medians;
    for (const ReplicaReport& r : run.replicas) {
      if (r.stage == k && r.batches > 0) medians.push_back(r.median_batch_s);
    }
    if (medians.empty()) fail("no replica of stage {} ran a mini-batch", k);
    seconds.push_back(pipeline::median(std::move(medians)));
  }
  return seconds;
}

}  // namespace occam
