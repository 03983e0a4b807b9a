// Reports of evaluations: comparison tables (text, JSON, CSV), geometric means set beside the
// OCCAM paper's headline numbers, and plots drawn with gnuplot.
#pragma once

#include "occam/sim.hpp"

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace occam {

// Geometric mean over models of one method's figures relative to a reference method.
struct RelativeMeans {
  std::string method;
  std::string reference;
  double traffic_x = 0.0;     // reference bytes / method bytes (> 1: fewer transfers)
  double latency_x = 0.0;     // reference latency / method latency (> 1: faster)
  double throughput_x = 0.0;  // method throughput / reference throughput
  double energy_saving = 0.0; // 1 - geomean(method energy / reference energy)
};
// `reference` may be a method name or "fusion-best": per model, the Layer Fusion variant
// (reuse or recompute) with the lower latency.
RelativeMeans relative_means(std::span<const Evaluation> evaluations, std::string_view method,
                             std::string_view reference);

// One line naming the hardware and every figure the costs depend on.
std::string hardware_text(const Hardware& hardware);

// One table per hardware (all evaluations must share it), with the accounting printed above it
// and geometric means below.
std::string comparison_text(std::span<const Evaluation> evaluations);
// The geometric means set beside the abstract's claims.
std::string paper_comparison_text(std::span<const Evaluation> evaluations);
nlohmann::json comparison_json(std::span<const Evaluation> evaluations);
std::string comparison_csv(std::span<const Evaluation> evaluations);

// Off-chip bytes per image of the base case and of Occam for several mini-batch sizes: the
// mini-batch decides how often non-resident filters are re-read, and so most of the ratio.
struct BatchPoint {
  int64_t batch = 1;
  double base_bytes = 0.0;
  double occam_bytes = 0.0;
};
std::vector<BatchPoint> batch_sweep(const Graph& graph, const Hardware& hardware, const Accounting& accounting,
                                    std::span<const int64_t> batches);
std::string batch_sweep_text(const std::string& model, std::span<const BatchPoint> points);

// Called after each step of a long computation with (done, total).
using Progress = std::function<void(int, int)>;

struct CapacityPoint {
  std::string model;
  int64_t capacity_bytes = 0;
  std::vector<std::pair<std::string, double>> offchip_bytes;  // method -> bytes per image
};
// Off-chip traffic of every method for every model at each capacity (powers of two).
std::vector<CapacityPoint> capacity_sweep(std::span<const Graph> graphs, const Hardware& hardware,
                                          const Accounting& accounting, std::span<const int64_t> capacities,
                                          const Progress& progress);

// Plots, each as PNG and SVG, with the data files and gnuplot scripts beside them so that they
// can be redrawn. Returns the files written. Throws an Error when gnuplot cannot be run.
// traffic_vs_capacity.*: one panel per model.
std::vector<std::filesystem::path> plot_capacity_sweep(const std::filesystem::path& dir,
                                                       std::span<const CapacityPoint> points);
// pipeline_gantt_<model>.*: Gantt chart of the replicated pipeline of `evaluation`'s occam+stap method over `batches`
// mini-batches of the event simulation.
std::vector<std::filesystem::path> plot_pipeline_gantt(const std::filesystem::path& dir, const Evaluation& evaluation,
                                                       int64_t batches);
// stage_times_<model>.*: stage times of Occam's pipeline before STAP and effective stage times (t / replicas) after.
std::vector<std::filesystem::path> plot_stage_times(const std::filesystem::path& dir, const Evaluation& evaluation);

}  // namespace occam
