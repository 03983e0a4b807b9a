#include "options.hpp"

#include "occam/error.hpp"
#include "occam/units.hpp"

#include <fstream>

namespace occam::cli {

void add_model_options(CLI::App& command, ModelArgs& args, bool model_required) {
  auto* model = command.add_option("model", args.spec, "zoo model name (see `occam models`) or path to an .onnx file");
  if (model_required) model->required();
  command.add_option("--resolution", args.resolution, "input resolution HxW (default: the model's own)");
  command.add_option("--batch", args.batch, "images per inference (N)");
}

Graph load_graph(const ModelArgs& args, bool with_weights) {
  if (args.batch < 1) fail("--batch {}: a batch must hold at least one image", args.batch);
  ModelOptions options;
  if (!args.resolution.empty()) options.resolution = parse_resolution(args.resolution);
  options.batch = args.batch;
  options.with_weights = with_weights;
  return load_model(args.spec, options);
}

void add_plan_options(CLI::App& command, PlanArgs& args) {
  command.add_option("--sram", args.sram, "on-chip capacity per chip: a size (B, KiB, MiB, GiB, KB, MB) or l2 / l3")
      ->capture_default_str();
  command.add_option("--bytes-per-elem", args.bytes_per_elem, "bytes per activation and weight element")
      ->check(CLI::IsMember({1, 2, 4}))
      ->capture_default_str();
  command.add_option("--granularity", args.granularity, "streaming unit of the dependence closure")
      ->check(CLI::IsMember({"row", "element"}))
      ->capture_default_str();
  command.add_option("--minibatch", args.minibatch, "images per mini-batch over which streamed filters amortise")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

namespace {

// Size of the data or unified cache of `level` for CPU 0, from sysfs.
int64_t cache_bytes(int level) {
  for (int index = 0; index < 8; ++index) {
    const std::string dir = fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/", index);
    std::ifstream level_file(dir + "level");
    std::ifstream type_file(dir + "type");
    std::ifstream size_file(dir + "size");
    int found = 0;
    std::string type;
    std::string size;
    if (!(level_file >> found) || !(type_file >> type) || !(size_file >> size)) continue;
    if (found == level && type != "Instruction") return parse_bytes(size + (size.back() == 'K' ? "iB" : ""), "cache size");
  }
  fail("--sram l{}: this machine reports no level-{} cache in /sys/devices/system/cpu/cpu0/cache", level, level);
}

}  // namespace

int64_t resolve_capacity(const std::string& text) {
  if (text == "l2" || text == "L2") return cache_bytes(2);
  if (text == "l3" || text == "L3") return cache_bytes(3);
  if (!text.empty() && text[0] == '-') fail("--sram \"{}\": the capacity must be positive", text);
  return parse_bytes(text, "--sram");
}

AnalysisOptions analysis_options(const PlanArgs& args) {
  AnalysisOptions options;
  options.bytes_per_elem = args.bytes_per_elem;
  options.granularity = parse_granularity(args.granularity);
  return options;
}

PlanOptions plan_options(const PlanArgs& args) {
  PlanOptions options;
  options.capacity_bytes = resolve_capacity(args.sram);
  options.batch = args.minibatch;
  options.analysis = analysis_options(args);
  return options;
}

}  // namespace occam::cli
