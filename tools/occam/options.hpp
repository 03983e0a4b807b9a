// Inputs every command reads the same way: the model (zoo name or .onnx), its resolution and
// batch, and the planning parameters.
#pragma once

#include "occam/analysis.hpp"
#include "occam/model.hpp"
#include "occam/plan.hpp"

#include <CLI/CLI.hpp>

#include <string>

namespace occam::cli {

struct ModelArgs {
  std::string spec;
  std::string resolution;
  int64_t batch = 1;
};
void add_model_options(CLI::App& command, ModelArgs& args, bool model_required = true);
Graph load_graph(const ModelArgs& args, bool with_weights = false);

struct PlanArgs {
  std::string sram = "1MiB";
  int bytes_per_elem = 2;
  std::string granularity = "row";
  int64_t minibatch = 1;
};
void add_plan_options(CLI::App& command, PlanArgs& args);
// Resolves --sram: a size (512KiB, 1MiB, ...) or l2 / l3 for this machine's cache (from sysfs).
int64_t resolve_capacity(const std::string& text);
AnalysisOptions analysis_options(const PlanArgs& args);
PlanOptions plan_options(const PlanArgs& args);

}  // namespace occam::cli
