// Simulation of plans on hardware: a hardware description, the mapping of a plan's partitions onto
// a pipeline of chips, STAP replication of bottleneck stages, an event-driven simulation of a
// stream of mini-batches through the replicated pipeline, and energy accounting.
//
// Every method (layer by layer, Layer Fusion, greedy, Occam) is costed by the same functions: a
// method is a set of stages, one chip each; a stage runs a sequence of phases per mini-batch, and a
// phase's time is its compute time and its transfer time, overlapped or added (Accounting::overlap).
// The assumptions that change the numbers (element size, mini-batch, stream length, overlap,
// where pipeline boundaries travel) are all in Accounting and printed with every table.
#pragma once

#include "occam/analysis.hpp"
#include "occam/baselines.hpp"
#include "occam/plan.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace occam {

// Energy per unit, in picojoules.
struct EnergyCosts {
  double mac_pj = 0.0;
  double sram_byte_pj = 0.0;
  double dram_byte_pj = 0.0;
  double link_byte_pj = 0.0;
  bool operator==(const EnergyCosts&) const = default;
};

// One kind of chip and how many of them may be used. Bandwidths are per chip: each chip has its
// own DRAM channel and its own link port.
struct Hardware {
  std::string name;
  std::string description;
  int chips = 0;             // chip budget
  int64_t sram_bytes = 0;    // on-chip memory per chip
  double macs_per_cycle = 0.0;
  double clock_ghz = 0.0;
  double dram_gb_per_s = 0.0;  // GB/s = 1e9 bytes per second
  double link_gb_per_s = 0.0;
  int bytes_per_element = 0;
  EnergyCosts energy;
  std::vector<std::pair<std::string, std::string>> sources;  // field -> where its value comes from

  double macs_per_s() const { return macs_per_cycle * clock_ghz * 1e9; }
  double dram_bytes_per_s() const { return dram_gb_per_s * 1e9; }
  double link_bytes_per_s() const { return link_gb_per_s * 1e9; }
  bool operator==(const Hardware&) const = default;
};

// Parses and validates a hardware description. `where` (a file name) prefixes every message;
// missing, mistyped, non-positive and unknown fields are errors naming the field.
Hardware hardware_from_json(const nlohmann::json& json, std::string_view where);
nlohmann::json to_json(const Hardware& hardware);
// A preset name (see hardware_presets()) or a path to a JSON file; empty: the default preset.
Hardware load_hardware(std::string_view spec);
struct HardwarePreset {
  std::string_view name;
  std::string_view json;  // the same text as data/hw/<name>.json
};
std::span<const HardwarePreset> hardware_presets();
std::string_view default_hardware_name();

// Where a tensor crossing a pipeline boundary travels.
enum class Handoff : uint8_t {
  Dram,  // the producer writes it to its DRAM, the consumer reads it back: counted twice
  Link,  // sent directly over the chip-to-chip link: counted once, at link cost
};
std::string_view to_string(Handoff handoff);
Handoff parse_handoff(std::string_view text);

// The accounting assumptions behind every number.
struct Accounting {
  int64_t batch = 1;       // mini-batch: images per pipeline token; non-resident filters re-read per batch
  int64_t stream = 1000;   // images per stream: resident filters are loaded once per stream
  bool overlap = true;     // compute and off-chip transfer overlap (phase time = max) or not (sum)
  Handoff handoff = Handoff::Dram;
  Granularity granularity = Granularity::Row;  // of the dependence closure
  int bytes_per_element = 0;  // 0: the hardware's
  int element_bytes(const Hardware& hardware) const {
    return bytes_per_element > 0 ? bytes_per_element : hardware.bytes_per_element;
  }
  // One line listing every assumption, printed with every table.
  std::string describe(const Hardware& hardware) const;
};

// Work a chip does for one image inside one stage; a stage runs its phases one after another,
// and within a phase compute and transfer overlap when Accounting::overlap is set.
struct Phase {
  std::string label;
  double macs = 0.0;        // per image, recomputation included
  double dram_bytes = 0.0;  // per image: activations and fallback traffic
  double link_bytes = 0.0;     // per image, sent: the sender counts the bytes and their energy
  double link_in_bytes = 0.0;  // per image, received: costs this chip link time only
  double sram_bytes = 0.0;     // per image: on-chip reads and writes
  double batch_filter_bytes = 0.0;  // read from DRAM once per mini-batch (filters that are not resident)
};

// One chip's share of a method: a pipeline stage (or the whole network for single-chip methods).
struct Stage {
  std::string label;
  std::vector<Phase> phases;
  int64_t resident_filter_bytes = 0;  // loaded once per stream and kept on chip
};

struct StageTime {
  double compute_s = 0.0;   // per mini-batch
  double transfer_s = 0.0;  // per mini-batch: max(DRAM time, link time); the ports are independent, links full duplex
  double time_s = 0.0;      // per mini-batch: sum over phases of max(compute, transfer) or their sum
};
StageTime stage_time(const Stage& stage, const Hardware& hardware, const Accounting& accounting);

// Occam's pipeline: one stage per partition of `plan`. Boundary tensors go through DRAM or over
// links as Accounting::handoff says; tensor sizes are looked up in `analysis` by name.
std::vector<Stage> pipeline_stages(const Analysis& analysis, const Plan& plan, const Accounting& accounting);

// Throws an Error explaining that a pipeline of `stages` stages needs at least that many chips
// when `hardware` has fewer; `what` names the plan (model and capacity) in the message.
void check_chip_budget(int stages, const Hardware& hardware, std::string_view what);

// STAP: replica counts (each >= 1) that minimise max_k stage_times[k] / replicas[k] within
// `chip_budget` chips, using the fewest chips that reach that period. Greedy on the bottleneck,
// which is optimal for this max-min problem: see docs in stap.cpp.
std::vector<int> stap_replicas(std::span<const double> stage_times, int chip_budget);
// max_k stage_times[k] / replicas[k]: the steady-state period of the replicated pipeline.
double pipeline_period(std::span<const double> stage_times, std::span<const int> replicas);

// Event-driven simulation of a stream of mini-batches through a replicated pipeline. Replica k
// of a stage with r replicas takes batches k, k+r, k+2r, ... Each replica has an output buffer of
// `buffer_batches` mini-batches; a replica whose buffer is full waits (back-pressure), so the
// source never runs ahead of the bottleneck and latency stays bounded.
struct SimOptions {
  int64_t batches = 1000;
  int buffer_batches = 2;
  bool trace = false;  // record every busy interval (for Gantt charts)
};
struct BusyInterval {
  int stage = 0, replica = 0;
  int64_t batch = 0;
  double start_s = 0.0, end_s = 0.0;
};
struct SimResult {
  double makespan_s = 0.0;
  double period_s = 0.0;  // steady state: seconds between completions, measured over the last 3/4
  double latency_mean_s = 0.0;  // per batch: first stage start to last stage end
  double latency_max_s = 0.0;
  std::vector<std::vector<double>> utilisation;  // [stage][replica]: busy time / makespan
  std::vector<BusyInterval> trace;
};
SimResult simulate_pipeline(std::span<const double> stage_times, std::span<const int> replicas,
                            const SimOptions& options);

// Energy per image, in joules.
struct EnergyBreakdown {
  double mac_j = 0.0, sram_j = 0.0, dram_j = 0.0, link_j = 0.0;
  double total_j() const { return mac_j + sram_j + dram_j + link_j; }
};

// What one method achieves on one model and hardware, per image unless said otherwise.
struct MethodResult {
  std::string method;
  int chips = 0;
  int stages = 0;
  double offchip_bytes = 0.0;  // DRAM + link bytes, filters included (amortised)
  double filter_bytes = 0.0;   // the filter part of offchip_bytes
  double macs = 0.0;           // recomputation included
  double latency_s = 0.0;      // one mini-batch through every stage, no queueing
  double throughput = 0.0;     // images per second in steady state
  EnergyBreakdown energy;
  std::vector<Stage> stage_list;
  std::vector<StageTime> times;
  std::vector<int> replicas;  // per stage
};

// Costs `stages` (one chip each, replicated as `replicas` says; empty: one each) as one method.
MethodResult evaluate_stages(std::string method, std::vector<Stage> stages, std::vector<int> replicas,
                             const Hardware& hardware, const Accounting& accounting);

// Layer by layer on one chip: one phase per op, filters re-read per mini-batch. Concat and
// Flatten are views and move nothing.
Stage base_case_stage(const Analysis& analysis);
// Layer Fusion on one chip: one phase per group, filters re-read per mini-batch.
Stage layer_fusion_stage(const Analysis& analysis, const LayerFusionPlan& plan);

// Every method on one model and hardware, under one accounting.
struct Evaluation {
  std::string model;
  Hardware hardware;  // after --chips / --sram overrides
  Accounting accounting;
  Plan occam;
  Plan greedy;
  LayerFusionPlan fusion_reuse;
  LayerFusionPlan fusion_recompute;
  // base, base xN, fusion-reuse, fusion-recompute, fusion xN, greedy, occam, occam+stap
  std::vector<MethodResult> methods;
  std::vector<std::string> notes;  // budget overruns and other caveats, one sentence each
  const MethodResult& method(std::string_view name) const;
};
PlanOptions plan_options(const Hardware& hardware, const Accounting& accounting);
Evaluation evaluate_model(const Graph& graph, const Hardware& hardware, const Accounting& accounting);

}  // namespace occam
