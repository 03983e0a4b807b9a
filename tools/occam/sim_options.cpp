#include "sim_options.hpp"

#include "occam/error.hpp"
#include "occam/units.hpp"
#include "options.hpp"

#include <unistd.h>

#include <chrono>

namespace occam::cli {

void add_model_list_options(CLI::App& command, std::vector<std::string>& models, std::string& resolution) {
  command.add_option("models", models,
                     "zoo names or .onnx files (default: alexnet vgg16 resnet18 resnet50 mobilenet_v2 googlenet)");
  command.add_option("--resolution", resolution, "input resolution HxW (default: each model's own)");
}

void add_hardware_options(CLI::App& command, HardwareArgs& args, bool several) {
  std::string presets;
  for (const HardwarePreset& preset : hardware_presets()) presets += (presets.empty() ? "" : ", ") + std::string(preset.name);
  auto* hw = command.add_option(
      "--hw", args.hardware,
      fmt::format("hardware: a preset ({}; default {}) or a JSON file{}", presets, default_hardware_name(),
                  several ? "; repeat for one table per hardware" : ""));
  if (!several) hw->expected(1);
  command.add_option("--chips", args.chips, "chip budget (default: the hardware's)")->check(CLI::PositiveNumber);
  command.add_option("--sram", args.sram, "on-chip memory per chip, e.g. 512KiB, 8MiB (default: the hardware's)");
  command.add_option("--bytes-per-elem", args.bytes_per_elem, "bytes per element (default: the hardware's)")
      ->check(CLI::IsMember({1, 2, 4}));
  command.add_option("--minibatch", args.minibatch, "images per mini-batch; non-resident filters are re-read per batch")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.add_option("--stream", args.stream, "images per stream; resident filters are loaded once per stream")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.add_option("--overlap", args.overlap, "compute and transfer overlap (max) or not (sum)")
      ->check(CLI::IsMember({"max", "sum"}))
      ->capture_default_str();
  command.add_option("--handoff", args.handoff, "pipeline boundaries through DRAM or over chip-to-chip links")
      ->check(CLI::IsMember({"dram", "link"}))
      ->capture_default_str();
  command.add_option("--granularity", args.granularity, "streaming unit of the dependence closure")
      ->check(CLI::IsMember({"row", "element"}))
      ->capture_default_str();
}

Hardware resolve_hardware(const HardwareArgs& args, const std::string& spec) {
  Hardware hw = load_hardware(spec);
  if (args.chips > 0) hw.chips = args.chips;
  if (!args.sram.empty()) hw.sram_bytes = resolve_capacity(args.sram);
  return hw;
}

Accounting resolve_accounting(const HardwareArgs& args) {
  Accounting accounting;
  accounting.batch = args.minibatch;
  accounting.stream = args.stream;
  accounting.overlap = args.overlap == "max";
  accounting.handoff = parse_handoff(args.handoff);
  accounting.granularity = parse_granularity(args.granularity);
  accounting.bytes_per_element = args.bytes_per_elem;
  return accounting;
}

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ProgressLine::ProgressLine(std::string what) : what_(std::move(what)), start_s_(now_s()), terminal_(::isatty(2) == 1) {}

ProgressLine::~ProgressLine() {
  if (shown_) fmt::print(stderr, "\n");
}

void ProgressLine::operator()(int done, int total) {
  if (!terminal_ || now_s() - start_s_ < 1.0) return;
  shown_ = true;
  fmt::print(stderr, "\r{}: {}/{} ({:.0f} s)", what_, done, total, now_s() - start_s_);
  std::fflush(stderr);
}

}  // namespace occam::cli
