#include "occam/error.hpp"
#include "occam/sim.hpp"
#include "occam/units.hpp"

#include <algorithm>
#include <numeric>
#include <set>
#include <unordered_map>

namespace occam {

StageTime stage_time(const Stage& stage, const Hardware& hw, const Accounting& accounting) {
  const auto batch = static_cast<double>(accounting.batch);
  StageTime total;
  for (const Phase& phase : stage.phases) {
    const double compute = batch * phase.macs / hw.macs_per_s();
    const double dram = (batch * phase.dram_bytes + phase.batch_filter_bytes) / hw.dram_bytes_per_s();
    const double link = batch * std::max(phase.link_bytes, phase.link_in_bytes) / hw.link_bytes_per_s();
    const double transfer = std::max(dram, link);
    total.compute_s += compute;
    total.transfer_s += transfer;
    total.time_s += accounting.overlap ? std::max(compute, transfer) : compute + transfer;
  }
  return total;
}

std::vector<Stage> pipeline_stages(const Analysis& analysis, const Plan& plan, const Accounting& accounting) {
  if (plan.batch != accounting.batch) {
    fail("plan for {}: made for mini-batch {}, but the simulation assumes mini-batch {}; re-plan with --batch {}",
         plan.model, plan.batch, accounting.batch, accounting.batch);
  }
  const Graph& graph = analysis.graph();
  std::unordered_map<std::string, TensorId> tensor_by_name;
  for (size_t t = 0; t < graph.tensors.size(); ++t) tensor_by_name.emplace(graph.tensors[t].name, static_cast<TensorId>(t));
  const auto tensor_id = [&](const std::string& name, size_t partition) {
    const auto it = tensor_by_name.find(name);
    if (it == tensor_by_name.end()) {
      fail("plan for {}: partition {} names tensor \"{}\", which model {} does not have", plan.model, partition, name,
           graph.source);
    }
    return it->second;
  };
  std::vector<int> partition_of_op(graph.ops.size(), -1);
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    for (OpId op = plan.partitions[p].first_op; op <= plan.partitions[p].last_op; ++op) {
      partition_of_op.at(static_cast<size_t>(op)) = static_cast<int>(p);
    }
  }
  const auto is_graph_input = [&](TensorId t) {
    return std::find(graph.inputs.begin(), graph.inputs.end(), t) != graph.inputs.end();
  };

  std::vector<Stage> stages;
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    const Partition& part = plan.partitions[p];
    Phase phase;
    phase.label = part.ops.empty() ? fmt::format("partition {}", p)
                  : part.ops.size() == 1 ? part.ops.front()
                                         : fmt::format("{}..{}", part.ops.front(), part.ops.back());
    phase.macs = static_cast<double>(part.macs);
    if (accounting.handoff == Handoff::Dram) {
      phase.dram_bytes = static_cast<double>(part.boundary_in_bytes + part.boundary_out_bytes);
    } else {
      // Network inputs and outputs live in DRAM; a tensor passed between partitions is sent once
      // to every partition that reads it.
      for (const std::string& name : part.inputs) {
        const TensorId t = tensor_id(name, p);
        (is_graph_input(t) ? phase.dram_bytes : phase.link_in_bytes) += static_cast<double>(analysis.tensor_bytes(t));
      }
      for (const std::string& name : part.outputs) {
        const TensorId t = tensor_id(name, p);
        const auto bytes = static_cast<double>(analysis.tensor_bytes(t));
        if (graph.is_output(t)) phase.dram_bytes += bytes;
        std::set<int> readers;
        for (OpId consumer : graph.tensor(t).consumers) {
          const int q = partition_of_op.at(static_cast<size_t>(consumer));
          if (q != static_cast<int>(p)) readers.insert(q);
        }
        phase.link_bytes += bytes * static_cast<double>(readers.size());
      }
    }
    // Filters that do not fit are streamed once per mini-batch; the rest of the fallback traffic
    // (column-strip halos) is per image. Together they are the plan's fallback_bytes.
    phase.batch_filter_bytes = static_cast<double>(part.streamed_filter_bytes);
    phase.dram_bytes += static_cast<double>(part.fallback_bytes) -
                        static_cast<double>(part.streamed_filter_bytes) / static_cast<double>(accounting.batch);
    // On-chip traffic: every op reads its inputs and filters and writes its output through SRAM,
    // and every byte crossing the chip boundary is also written to or read from SRAM once.
    double on_chip = 0.0;
    for (OpId op = part.first_op; op <= part.last_op; ++op) {
      const OpStats& stats = analysis.op(op);
      on_chip += static_cast<double>(stats.input_bytes + stats.output_bytes + stats.filter_bytes);
    }
    phase.sram_bytes = on_chip + phase.dram_bytes + phase.link_bytes + phase.link_in_bytes;
    Stage stage;
    stage.label = phase.label;
    stage.phases.push_back(std::move(phase));
    stage.resident_filter_bytes = part.filter_bytes;
    stages.push_back(std::move(stage));
  }
  return stages;
}

void check_chip_budget(int stages, const Hardware& hw, std::string_view what) {
  if (stages <= hw.chips) return;
  fail("{}: the plan has {} partitions and each runs on its own chip, but hardware \"{}\" has {} chips; the smallest "
       "chip budget that works is {} (--chips {}), or give each chip more on-chip memory (--sram, now {}) so that "
       "fewer partitions are needed",
       what, stages, hw.name, hw.chips, stages, stages, format_bytes(static_cast<double>(hw.sram_bytes)));
}

MethodResult evaluate_stages(std::string method, std::vector<Stage> stages, std::vector<int> replicas,
                             const Hardware& hw, const Accounting& accounting) {
  if (stages.empty()) fail("{}: no stages to evaluate", method);
  if (replicas.empty()) replicas.assign(stages.size(), 1);
  if (replicas.size() != stages.size()) {
    fail("{}: {} stages but {} replica counts", method, stages.size(), replicas.size());
  }
  if (accounting.batch < 1 || accounting.stream < 1) {
    fail("{}: mini-batch {} and stream {} must both be at least 1 image", method, accounting.batch, accounting.stream);
  }
  MethodResult result;
  result.method = std::move(method);
  result.stages = static_cast<int>(stages.size());
  result.chips = std::accumulate(replicas.begin(), replicas.end(), 0);
  const auto batch = static_cast<double>(accounting.batch);
  const auto stream = static_cast<double>(accounting.stream);
  double dram = 0.0, link = 0.0, sram = 0.0;
  std::vector<double> times;
  for (const Stage& stage : stages) {
    const StageTime time = stage_time(stage, hw, accounting);
    result.times.push_back(time);
    times.push_back(time.time_s);
    result.latency_s += time.time_s;
    const double resident = static_cast<double>(stage.resident_filter_bytes) / stream;
    dram += resident;
    result.filter_bytes += resident;
    for (const Phase& phase : stage.phases) {
      result.macs += phase.macs;
      dram += phase.dram_bytes + phase.batch_filter_bytes / batch;
      result.filter_bytes += phase.batch_filter_bytes / batch;
      link += phase.link_bytes;
      sram += phase.sram_bytes + phase.batch_filter_bytes / batch;
    }
  }
  const double period = pipeline_period(times, replicas);
  result.throughput = period > 0.0 ? batch / period : 0.0;
  result.offchip_bytes = dram + link;
  const EnergyCosts& e = hw.energy;
  result.energy = {result.macs * e.mac_pj * 1e-12, sram * e.sram_byte_pj * 1e-12, dram * e.dram_byte_pj * 1e-12,
                   link * e.link_byte_pj * 1e-12};
  result.stage_list = std::move(stages);
  result.replicas = std::move(replicas);
  return result;
}

}  // namespace occam
